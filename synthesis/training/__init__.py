"""Training: the adapters' (`train-adapter`) and the GAN's (`train-gan`) entry points and loops.

`common` gathers the (video, reference audio) pairs both train on; `adapter` and `gan` hold each
one's training loop. The networks they train are in synthesis.adapter and synthesis.gan.
"""

from synthesis.training.adapter import train_adapter_on_videos
from synthesis.training.gan import train_gan_on_videos

__all__ = ["train_adapter_on_videos", "train_gan_on_videos"]
