"""The vit_adapter's network: visual embeddings -> MusicGen conditioning tokens, and its files.

The adapter pools the embedding sequence to a fixed number of tokens and maps each through an
MLP into the decoder's width, so its output goes straight into the decoder (cross-attention keys
for musicgen, the prefix for melody), bypassing the T5 projection. It is trained with MusicGen
frozen by synthesis.training.adapter.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional


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
