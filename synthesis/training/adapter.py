"""Adapter training: teacher forcing with MusicGen frozen, and `train-adapter`'s entry point.

Training is teacher forcing on the codec tokens of each segment's reference audio: cross-entropy
of the frozen decoder's predictions given the adapter's conditioning (synthesis.adapter), with
MusicGen's delay pattern and its pads ignored. vit_score's adapter is trained after the score's
chroma prefix, as it generates.
"""

from __future__ import annotations

import json
import pathlib
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from synthesis.adapter import AdapterShape, VisualAdapter, save_adapter
from synthesis.conditions.vit_score import chroma_prefix, score_chroma
from synthesis.config import SynthesisConfig
from synthesis.models import LoadedMusicgen, encode_audio_codes
from synthesis.sections import ConfigError
from synthesis.training.common import Log, TrainingPairs, train_on_videos


def delayed_inputs_and_targets(
    codes: torch.Tensor, start_id: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (B, K, F) -> decoder inputs and targets (B, K, F + K - 1) in MusicGen's delay pattern.

    Codebook k is shifted right by k steps and padded; inputs are the targets shifted right by one
    with the start token in front, as in generation.
    """
    batch, codebooks, frames = codes.shape
    length = frames + codebooks - 1
    targets = torch.full((batch, codebooks, length), pad_id, dtype=torch.long, device=codes.device)
    for k in range(codebooks):
        targets[:, k, k : k + frames] = codes[:, k]
    start = torch.full((batch, codebooks, 1), start_id, dtype=torch.long, device=codes.device)
    inputs = torch.cat([start, targets[:, :, :-1]], dim=2)
    return inputs, targets


def teacher_forcing_loss(
    musicgen: LoadedMusicgen, conditioning: torch.Tensor, codes: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of the decoder's next-token predictions over the non-pad targets."""
    decoder = musicgen.model.decoder  # the causal LM: takes states in its own width
    config = decoder.config
    start_id = config.decoder_start_token_id
    start_id = config.bos_token_id if start_id is None else start_id
    inputs, targets = delayed_inputs_and_targets(codes, start_id, config.pad_token_id)
    batch, codebooks, length = inputs.shape
    mask = torch.ones(conditioning.shape[:2], dtype=torch.long, device=conditioning.device)
    output = decoder(
        input_ids=inputs.reshape(batch * codebooks, length),
        encoder_hidden_states=conditioning.to(musicgen.dtype),
        encoder_attention_mask=mask,
    )
    # melody prepends the conditioning: its logits cover the prefix too, keep the last `length`
    logits = output.logits[:, -length:].reshape(batch, codebooks, length, -1).float()
    targets = targets.masked_fill(targets == config.pad_token_id, -100)
    return functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@dataclass
class TrainingExample:
    segment_id: str
    embeddings: np.ndarray  # (T, E)
    codes: torch.Tensor  # (K, F)
    # fixed conditioning before the adapter's tokens (vit_score: the score's chroma states)
    prefix: torch.Tensor | None = None  # (P, decoder width)


def train_adapter(
    musicgen: LoadedMusicgen,
    adapter: VisualAdapter,
    examples: list[TrainingExample],
    out_dir: pathlib.Path,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    metadata: dict[str, Any],
    progress: Any = None,
) -> list[float]:
    """Trains `adapter` in place; writes a checkpoint per epoch and `loss_log.jsonl`.

    Returns the mean training loss of each epoch. MusicGen's parameters are frozen.
    """
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(seed)
    shuffler = random.Random(seed)
    device = musicgen.device
    musicgen.model.eval()  # frozen, and no dropout: the adapter sees a deterministic decoder
    for parameter in musicgen.model.parameters():
        parameter.requires_grad_(False)
    adapter.to(device).train()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=learning_rate)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "loss_log.jsonl"
    losses = []
    order = list(range(len(examples)))
    for epoch in range(1, epochs + 1):
        shuffler.shuffle(order)
        epoch_losses = []
        started = time.perf_counter()
        for first in range(0, len(order), batch_size):
            chosen = [examples[index] for index in order[first : first + batch_size]]
            # equal-length segments batch directly; otherwise trim to the shortest
            frames = min(example.codes.shape[1] for example in chosen)
            steps = min(example.embeddings.shape[0] for example in chosen)
            codes = torch.stack([example.codes[:, :frames] for example in chosen]).to(device)
            embeddings = torch.stack(
                [torch.from_numpy(example.embeddings[:steps]) for example in chosen]
            ).to(device)
            conditioning = adapter(embeddings)
            if chosen[0].prefix is not None:  # vit_score: the chroma prefix, then the tokens
                prefix = torch.stack([example.prefix for example in chosen]).to(device)
                conditioning = torch.cat([prefix.to(conditioning.dtype), conditioning], dim=1)
            loss = teacher_forcing_loss(musicgen, conditioning, codes)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(float(loss.detach()))
        mean_loss = float(np.mean(epoch_losses))
        losses.append(mean_loss)
        checkpoint = out_dir / f"adapter-epoch{epoch:03d}.safetensors"
        save_adapter(adapter, checkpoint, {**metadata, "epoch": epoch, "train_loss": mean_loss})
        record = {
            "epoch": epoch,
            "train_loss": mean_loss,
            "examples": len(examples),
            "seconds": round(time.perf_counter() - started, 3),
            "checkpoint": checkpoint.name,
        }
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if progress is not None:
            progress(record)
    final = save_adapter(adapter, out_dir / "adapter.safetensors", {**metadata, "epoch": epochs})
    adapter.eval()
    if progress is not None:
        progress({"final": str(final)})
    return losses


ADAPTER_CONDITIONS = ("vit_adapter", "vit_score")


def train_adapter_on_videos(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    epochs: int | None = None,
    log: Log = print,
    condition: str = "vit_adapter",
) -> list[float]:
    """Trains a condition's adapter on (video, reference audio) segments; checkpoints to `out`.

    `vit_adapter` (and `mismatched`, which uses it): the config's MusicGen and `adapter`
    settings. `vit_score`: `vit_score.musicgen` (melody) and `vit_score.adapter`, each segment's
    score chroma before the adapter's tokens, as at generation; sources without a score and
    segments whose score window has no notes are left out.
    """
    if condition not in ADAPTER_CONDITIONS:
        raise ConfigError(f"train-adapter trains {ADAPTER_CONDITIONS}, not {condition!r}")
    with_score = condition == "vit_score"
    settings = config.vit_score.adapter if with_score else config.adapter

    def examples_of(pairs: TrainingPairs) -> list[TrainingExample]:
        musicgen = pairs.musicgen
        examples = []
        for segment in pairs.segments:
            prefix = None
            if with_score:
                if segment.score is None or segment.score.note_count == 0:
                    log(f"leaving out {segment.id}: no notes in its score window")
                    continue
                prefix = chroma_prefix(musicgen, score_chroma(segment.score, musicgen))[0].cpu()
            waveform = torch.from_numpy(segment.reference_audio)[None]
            if musicgen.audio_channels == 1 and waveform.shape[1] != 1:
                waveform = waveform.mean(dim=1, keepdim=True)
            codes = encode_audio_codes(musicgen, waveform)[0].cpu()
            examples.append(TrainingExample(segment.id, segment.embeddings, codes, prefix))
        return examples

    def train(pairs: TrainingPairs, examples: list[TrainingExample]) -> list[float]:
        shape = AdapterShape(
            pairs.encoder.embedding_size,
            pairs.musicgen.decoder_width,
            settings.num_tokens,
            settings.hidden_size,
        )
        torch.manual_seed(config.train.seed)
        adapter = VisualAdapter(shape)
        metadata = {
            "condition": condition,
            **pairs.provenance(config),
            "segments": [example.segment_id for example in examples],
        }

        def report(record: dict[str, Any]) -> None:
            if "epoch" in record:
                log(f"epoch {record['epoch']}: loss {record['train_loss']:.4f}")

        return train_adapter(
            pairs.musicgen,
            adapter,
            examples,
            out,
            epochs or config.train.epochs,
            config.train.learning_rate,
            config.train.batch_size,
            config.train.seed,
            metadata,
            report,
        )

    return train_on_videos(
        videos,
        out,
        config,
        device,
        log,
        f"the {condition} adapter",
        examples_of,
        train,
        with_score=with_score,
        musicgen_spec=config.vit_score.musicgen if with_score else None,
    )
