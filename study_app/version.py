"""Owns the app's version string (written into every export's study.json).

Its own module so that the exporter can read it without importing the package's __init__,
which imports the CLI, which imports the exporter: a cycle.
"""

__version__ = "0.1.0"
