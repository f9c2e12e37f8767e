"""Learned audio embeddings for the Frechet distance, loaded offline from a local folder.

Neither maintained FAD package can be installed here: ``fadtk`` 1.1.0 pins numpy < 2, pandas
< 3 and transformers < 5 and needs torchaudio (whose wheels pin another torch, a CUDA 2.14
build), and imports torchaudio at import time; ``frechet-audio-distance`` 0.3.4 pins numpy < 2
on Python < 3.13, needs torchaudio, laion_clap and encodec, and loads VGGish and PANN through
``torch.hub`` (GitHub, Zenodo) when constructed. The project therefore computes the Frechet
distance itself (``analysis.objective.frechet_summary``, with the small-sample caveat and a
bootstrap interval) on embeddings from ``transformers`` models in a local folder
(``from_pretrained(path, local_files_only=True)``: nothing is downloaded):

* :class:`EncodecEmbedding`: EnCodec's encoder output before quantisation, one row per frame
  (as fadtk's ``encodec-emb``); e.g. a folder holding ``facebook/encodec_24khz``;
* :class:`ClapEmbedding`: CLAP's pooled audio embedding, one row per clip; e.g. a folder holding
  ``laion/larger_clap_music``.

VGGish has no maintained PyPI implementation that loads without ``torch.hub``; pass any
``module:function`` embedding to use one from a local file. ``torch`` and ``transformers`` come
with the ``synthesis`` extra; they are imported only when one of these classes is built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _local_folder(path: str | Path, kind: str) -> Path:
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"{kind} embedding: {folder} is not a local model folder (no "
                           "config.json); models are never downloaded")
    return folder


class EncodecEmbedding:
    """EnCodec encoder latents (frames x dimensions) of a clip, resampled to the model's rate.

    Reference: Defossez et al. (2023), "High fidelity neural audio compression", TMLR; its use
    for FAD: Gui et al. (2024), "Adapting Frechet Audio Distance for generative music
    evaluation", ICASSP.
    """

    name = "encodec"

    def __init__(self, path: str | Path):
        import torch  # noqa: F401  (a clear ImportError before transformers' longer one)
        from transformers import EncodecModel

        self.path = _local_folder(path, "EnCodec")
        self.model = EncodecModel.from_pretrained(str(self.path), local_files_only=True).eval()
        self.rate = int(self.model.config.sampling_rate)
        self.channels = int(self.model.config.audio_channels)

    def __call__(self, audio: np.ndarray, rate: int) -> np.ndarray:
        import librosa
        import torch

        audio = np.asarray(audio, dtype=np.float32)
        if rate != self.rate:
            audio = librosa.resample(audio, orig_sr=rate, target_sr=self.rate)
        batch = torch.from_numpy(np.tile(audio, (self.channels, 1)))[None]
        with torch.no_grad():
            latents = self.model.encoder(batch)  # (1, dimensions, frames)
        return latents[0].T.numpy().astype(float)


class ClapEmbedding:
    """CLAP's projected audio embedding (one vector per clip), at the model's 48 kHz.

    Reference: Wu et al. (2023), "Large-scale contrastive language-audio pretraining with
    feature fusion and keyword-to-caption augmentation", ICASSP.
    """

    name = "clap"

    def __init__(self, path: str | Path):
        import torch  # noqa: F401
        from transformers import ClapFeatureExtractor, ClapModel

        self.path = _local_folder(path, "CLAP")
        self.model = ClapModel.from_pretrained(str(self.path), local_files_only=True).eval()
        self.features = ClapFeatureExtractor.from_pretrained(str(self.path),
                                                             local_files_only=True)
        self.rate = int(self.features.sampling_rate)

    def __call__(self, audio: np.ndarray, rate: int) -> np.ndarray:
        import librosa
        import torch

        audio = np.asarray(audio, dtype=np.float32)
        if rate != self.rate:
            audio = librosa.resample(audio, orig_sr=rate, target_sr=self.rate)
        inputs = self.features(audio, sampling_rate=self.rate, return_tensors="pt")
        with torch.no_grad():
            vector = self.model.get_audio_features(**inputs)
        vector = getattr(vector, "pooler_output", vector)
        return np.asarray(vector[0].numpy(), dtype=float)


LEARNED = {"encodec": EncodecEmbedding, "clap": ClapEmbedding}
