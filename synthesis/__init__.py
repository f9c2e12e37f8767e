"""SightSound synthesis: performance videos -> loudness-matched stimulus sets.

Entry points: `python -m synthesis generate|train-adapter` (see docs/synthesis.md),
`synthesis.pipeline.generate_set` and `synthesis.pipeline.train_adapter_on_videos`.
"""

__version__ = "0.1.0"
