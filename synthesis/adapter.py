"""The vit_adapter: visual embeddings -> MusicGen conditioning, trained with MusicGen frozen.

The adapter pools the embedding sequence to a fixed number of tokens and maps each through an
MLP into the decoder's width, so its output goes straight into the decoder (cross-attention keys
for musicgen, the prefix for melody), bypassing the T5 projection. Training is teacher forcing on
the codec tokens of each segment's reference audio: cross-entropy of the frozen decoder's
predictions given the adapter's conditioning, with MusicGen's delay pattern and its pads ignored.
"""

from __future__ import annotations

import json
import pathlib
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional

from synthesis.models import LoadedMusicgen


@dataclass
class AdapterShape:
    embedding_size: int
    decoder_width: int
    num_tokens: int
    hidden_size: int


class VisualAdapter(nn.Module):
    def __init__(self, shape: AdapterShape) -> None:
        super().__init__()
        self.shape = shape
        self.input_norm = nn.LayerNorm(shape.embedding_size)
        self.mlp = nn.Sequential(
            nn.Linear(shape.embedding_size, shape.hidden_size),
            nn.GELU(),
            nn.Linear(shape.hidden_size, shape.decoder_width),
        )
        self.token_positions = nn.Parameter(torch.zeros(shape.num_tokens, shape.decoder_width))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, T, E) embedding sequences -> (B, num_tokens, decoder width) conditioning."""
        # Pool over time to a fixed count, so any segment length and frame rate fits.
        pooled = functional.adaptive_avg_pool1d(
            embeddings.transpose(1, 2), self.shape.num_tokens
        ).transpose(1, 2)
        return self.mlp(self.input_norm(pooled)) + self.token_positions


def save_adapter(
    adapter: VisualAdapter, path: pathlib.Path, metadata: dict[str, Any]
) -> pathlib.Path:
    """Weights as safetensors, with a JSON sidecar holding the shape and provenance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}, path)
    sidecar = {"shape": asdict(adapter.shape), **metadata}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    return path


def load_adapter(path: pathlib.Path) -> tuple[VisualAdapter, dict[str, Any]]:
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    adapter = VisualAdapter(AdapterShape(**sidecar["shape"]))
    adapter.load_state_dict(load_file(path))
    return adapter.eval(), sidecar


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
