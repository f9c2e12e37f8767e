"""Owns `python -m demo_set OUT_DIR ...`: build the demo stimulus set from the command line."""

import sys

from demo_set import main

sys.exit(main())
