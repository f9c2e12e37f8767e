"""SightSound synthesis: performance videos -> loudness-matched stimulus sets.

Entry points: `python -m synthesis generate|train-adapter|train-gan|compare` (see
docs/synthesis.md), `synthesis.pipeline.generate_set`, `synthesis.training.train_adapter_on_videos`,
`synthesis.training.train_gan_on_videos` and `synthesis.compare.compare_conditions`.
"""

__version__ = "0.1.0"
