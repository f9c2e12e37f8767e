"""`vit_score`: MusicGen-melody given the score's chroma as its melody and the video as its words.

Melody reads its conditioning as a decoder prefix: the melody's chroma (12 bins per frame,
projected into the decoder's width and repeated to `chroma_length`), then the text's states.
Here the chroma comes from the segment's score slice (the notes, not audio), one-hot per frame
as melody's feature extractor makes it from audio, and the visual adapter's tokens stand where
the text's states would. Its adapter is trained for this prefix by `python -m synthesis
train-adapter --condition vit_score` (sidecars say which condition an adapter was trained for).
The melody model is its own (`vit_score.musicgen`), generated in its own batches; both are in
its config section, VitScoreConfig.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from synthesis.conditions.base import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    register,
)
from synthesis.conditions.vit_adapter import AdapterConfig, adapter_states, load_adapter_for_run
from synthesis.models import Conditioning, LoadedMusicgen, check_segment_fits, load_musicgen
from synthesis.score import ScoreSlice, one_hot_chroma, pitch_class_energy
from synthesis.sections import ConfigError, ModelSpec, Section

# MusicgenMelodyFeatureExtractor's hop (at the codec's 32 kHz: 7.8 chroma frames per second).
CHROMA_HOP = 4096


@dataclass
class VitScoreConfig(Section):
    """The `vit_score` section: its melody model and its adapter (`train-adapter --condition`)."""

    musicgen: ModelSpec = field(
        default_factory=lambda: ModelSpec("melody", path="facebook/musicgen-melody")
    )
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def check(self, where: str) -> None:
        if self.musicgen.family != "melody":
            raise ConfigError(f"{where}.musicgen.family must be melody (its chroma is the score's)")


def chroma_frames(musicgen: LoadedMusicgen, seconds: float) -> int:
    """Frames the feature extractor would make of `seconds` of audio (a centred STFT)."""
    return int(round(seconds * musicgen.sampling_rate)) // CHROMA_HOP + 1


def score_chroma(score: ScoreSlice, musicgen: LoadedMusicgen) -> np.ndarray:
    """(frames, 12) one-hot chroma of the slice's notes at melody's chroma frame rate.

    A slice without pitched notes (drums only) has no melody: it gets `no_melody`, on purpose
    rather than as the argmax of nothing.
    """
    frames = chroma_frames(musicgen, score.duration)
    if score.is_unpitched():
        return no_melody(musicgen, frames)
    energy = pitch_class_energy(score, musicgen.sampling_rate / CHROMA_HOP, frames)
    return one_hot_chroma(energy)


def describe_melody(score: ScoreSlice, chroma: np.ndarray, musicgen: LoadedMusicgen) -> str:
    """The provenance's `melody`: what the chroma prefix was made from."""
    rate = f"{len(chroma)} frames at {musicgen.sampling_rate / CHROMA_HOP:.4g} Hz"
    if score.is_unpitched():
        return f"null melody (no pitched notes in the window): one-hot on bin 0, {rate}"
    return f"score chroma: one-hot per frame, {rate}"


@torch.no_grad()
def chroma_prefix(musicgen: LoadedMusicgen, chroma: np.ndarray) -> torch.Tensor:
    """(1, chroma_length, decoder width): the chroma as melody's `generate` turns it into states.

    Projected by `audio_enc_to_dec_proj` when its width differs, then repeated and truncated to
    `chroma_length`, as transformers does with the chroma of a short melody.
    """
    model = musicgen.model
    states = torch.from_numpy(np.asarray(chroma, dtype=np.float32))[None]
    states = states.to(musicgen.device, musicgen.dtype)
    if model.config.num_chroma != model.decoder.config.hidden_size:
        states = model.audio_enc_to_dec_proj(states)
    length = model.config.chroma_length
    if states.shape[1] < length:
        states = states.repeat(1, math.ceil(length / states.shape[1]), 1)
    return states[:, :length]


def no_melody(musicgen: LoadedMusicgen, frames: int) -> np.ndarray:
    """MusicGen-melody's "no melody": every frame one-hot on the first bin (C).

    What both of its implementations feed the model for no melody at inference: audiocraft's
    `MusicGen.generate` gives a zero waveform, whose chroma's per-frame argmax (of all zeros) is
    bin 0 (`get_pretrained` turns the conditioner's length mask off, so it is not zeroed), and
    transformers' `generate` writes this one-hot when no melody is given and as guidance's
    unconditional melody. All-zero chroma would not mean "none": through `audio_enc_to_dec_proj`
    it is the projection's bias alone, a prefix neither implementation makes.
    """
    chroma = np.zeros((frames, musicgen.model.config.num_chroma), dtype=np.float32)
    chroma[:, 0] = 1.0
    return chroma


def melody_conditioning(
    musicgen: LoadedMusicgen, chroma: np.ndarray, tokens: torch.Tensor
) -> Conditioning:
    """[score chroma prefix; adapter tokens], and the null rows melody's `generate` would use:
    the null melody's prefix followed by zeros, every position visible (melody never masks its
    prefix)."""
    prefix = chroma_prefix(musicgen, chroma)
    null_prefix = chroma_prefix(musicgen, no_melody(musicgen, len(chroma)))
    states = torch.cat([prefix, tokens], dim=1)
    visible = torch.ones(states.shape[:2], dtype=torch.long, device=musicgen.device)
    return Conditioning(
        states, visible, torch.cat([null_prefix, torch.zeros_like(tokens)], dim=1), visible.clone()
    )


@register
class VitScore(Condition):
    name = "vit_score"
    needs_score = True
    sections = {"vit_score": VitScoreConfig}

    def __init__(self, setup: RunSetup) -> None:
        super().__init__(setup)
        settings = setup.config.vit_score
        if settings.musicgen.family != "melody":
            raise ConfigError("vit_score.musicgen must be a melody model (family melody)")
        self.musicgen = setup.share(
            "vit_score.musicgen", lambda: load_musicgen(settings.musicgen, setup.device)
        )
        check_segment_fits(self.musicgen, setup.config.video.segment_seconds)
        self.adapter, self.label, self.missing = load_adapter_for_run(
            settings.adapter,
            setup.encoder.embedding_size,
            self.musicgen,
            setup.config.generation.seed,
            condition=self.name,
        )

    def checkpoints(self) -> dict[str, str | None]:
        return {
            "vit_score_adapter": self.label,
            "vit_score_musicgen": f"{self.musicgen.name} sha256:{self.musicgen.weights_sha256}",
        }

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        if self.adapter is None:
            raise ConditionSkipped(self.missing.replace("adapter.", "vit_score.adapter."))
        if segment.score is None:  # segment_problem drops these; kept for direct calls
            raise ConditionSkipped(f"{segment.id} has no score")
        tokens = adapter_states(self.adapter, self.musicgen, segment.embeddings)
        chroma = score_chroma(segment.score, self.musicgen)
        return ClipPlan(
            conditioning=melody_conditioning(self.musicgen, chroma, tokens),
            musicgen=self.musicgen,
            provenance={
                "encoder": self.setup.encoder.name,
                "encoder_weights_sha256": self.setup.encoder.weights_sha256,
                "adapter": self.label,
                "prompt": None,
                "melody": describe_melody(segment.score, chroma, self.musicgen),
                **segment.score.provenance(),
            },
        )
