"""Visual encoders (ViT, VideoMAE, CLIP vision), their on-disk embedding cache, and CLIP labels.

An encoder turns a segment's sampled frames (T, H, W, 3 uint8) into an embedding sequence
(T', E): one CLS embedding per frame for ViT and CLIP, one patch-averaged embedding per tubelet
for VideoMAE. Frames are resized to the model's square input size and normalised with the model's
mean/std (read from its image processor when one is stored with the weights).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from synthesis.models import (
    ByteTokenizer,
    _quiet_transformers,
    from_pretrained_offline,
    resolve_dtype,
    state_dict_sha256,
)
from synthesis.sections import ModelSpec

DEFAULT_NORMALIZATION = {
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "videomae": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

TINY_VISION = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def _tiny_vision_model(family: str, overrides: dict[str, Any]) -> nn.Module:
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        VideoMAEConfig,
        VideoMAEModel,
        ViTConfig,
        ViTModel,
    )

    settings = {**TINY_VISION, **overrides}
    seed = settings.pop("seed", 0)
    torch.manual_seed(seed)
    if family == "vit":
        return ViTModel(ViTConfig(**settings), add_pooling_layer=False)
    if family == "clip":
        return CLIPVisionModel(CLIPVisionConfig(**settings))
    if family == "videomae":
        settings.setdefault("num_frames", 4)
        settings.setdefault("tubelet_size", 2)
        return VideoMAEModel(VideoMAEConfig(**settings))
    raise ValueError(f"unknown encoder family {family!r}")


def _normalization(family: str, path: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if path:
        try:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
            return tuple(processor.image_mean), tuple(processor.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # no processor stored with the weights: the family's published values
    return DEFAULT_NORMALIZATION[family]


@dataclass
class VisualEncoder:
    family: str
    name: str
    model: nn.Module
    weights_sha256: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def embedding_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, 3, S, S) normalised float."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
        size = self.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = functional.interpolate(
                pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        dtype = next(self.model.parameters()).dtype
        return ((pixels - mean) / std).to(self.device, dtype)

    @torch.no_grad()
    def embed(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """A segment's frames (T, H, W, 3 uint8) -> embedding sequence (T', E) float32."""
        if self.family == "videomae":
            return self._embed_videomae(frames)
        rows = []
        for start in range(0, len(frames), batch_size):
            pixels = self._pixels(frames[start : start + batch_size])
            output = self.model(pixel_values=pixels)
            if self.family == "clip":
                rows.append(output.pooler_output)  # CLIP's projection input: post-LN CLS
            else:
                rows.append(output.last_hidden_state[:, 0])  # ViT's CLS token
        return torch.cat(rows).float().cpu().numpy()

    def _embed_videomae(self, frames: np.ndarray) -> np.ndarray:
        config = self.model.config
        # VideoMAE sees a fixed number of frames: spread them evenly over the segment.
        picks = np.linspace(0, len(frames) - 1, config.num_frames).round().astype(int)
        pixels = self._pixels(frames[picks])[None]  # (1, T, 3, S, S)
        hidden = self.model(pixel_values=pixels).last_hidden_state[0]
        steps = config.num_frames // config.tubelet_size
        per_step = hidden.reshape(steps, -1, hidden.shape[-1]).mean(dim=1)
        return per_step.float().cpu().numpy()


def load_visual_encoder(spec: ModelSpec, device: torch.device | str = "cpu") -> VisualEncoder:
    _quiet_transformers()
    device = torch.device(device)
    if spec.is_tiny:
        model = _tiny_vision_model(spec.family, dict(spec.tiny or {}))
        name = f"tiny-random-{spec.family}"
    else:
        from transformers import CLIPVisionModel, VideoMAEModel, ViTModel

        model_class = {"vit": ViTModel, "clip": CLIPVisionModel, "videomae": VideoMAEModel}[
            spec.family
        ]
        if not spec.path:
            raise ValueError("encoder.path is empty: name a local folder or a hub id")
        model = from_pretrained_offline(model_class, spec.path)
        name = spec.path
    mean, std = _normalization(spec.family, None if spec.is_tiny else spec.path)
    weights = state_dict_sha256(model)
    model.to(device, resolve_dtype(spec, device)).eval()
    return VisualEncoder(spec.family, name, model, weights, mean, std)


class EmbeddingCache:
    """Embeddings on disk, keyed by the video's hash, the encoder and the sampling settings."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder

    @staticmethod
    def key(video_sha256: str, encoder: VisualEncoder, settings: dict[str, Any]) -> str:
        description = {
            "video": video_sha256,
            "encoder": encoder.name,
            "family": encoder.family,
            "weights": encoder.weights_sha256,
            **settings,
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()

    def get_or_compute(
        self,
        video_sha256: str,
        encoder: VisualEncoder,
        settings: dict[str, Any],
        frames: np.ndarray,
    ) -> np.ndarray:
        path = self.folder / f"{self.key(video_sha256, encoder, settings)}.npy"
        if path.exists():
            return np.load(path)
        embeddings = encoder.embed(frames)
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npy")
        np.save(temporary, embeddings)
        temporary.replace(path)  # atomic: an interrupted run never leaves half a file
        return embeddings


# --------------------------------------------------------------------------------------------
# CLIP zero-shot labels for the text_bridge condition


@dataclass
class ClipLabeller:
    name: str
    model: nn.Module  # CLIPModel
    tokenizer: Any
    weights_sha256: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @torch.no_grad()
    def label(self, frames: np.ndarray, vocabularies: dict[str, list[str]]) -> dict[str, str]:
        """The best word of each vocabulary for these frames (mean image embedding)."""
        vision = VisualEncoder("clip", self.name, self.model.vision_model, "", self.mean, self.std)
        pixels = vision._pixels(frames)
        image = self.model.get_image_features(pixel_values=pixels)
        image = getattr(image, "pooler_output", image)
        image = functional.normalize(image.float().mean(0, keepdim=True), dim=-1)
        chosen = {}
        for category, words in vocabularies.items():
            prompts = [f"a video of a musician playing {word} music" for word in words]
            if category == "instrument":
                prompts = [f"a video of a musician playing the {word}" for word in words]
            if isinstance(self.tokenizer, ByteTokenizer):
                batch = self.tokenizer(prompts)
            else:
                batch = dict(self.tokenizer(prompts, padding=True, return_tensors="pt"))
            text = self.model.get_text_features(
                input_ids=batch["input_ids"].to(pixels.device),
                attention_mask=batch["attention_mask"].to(pixels.device),
            )
            text = getattr(text, "pooler_output", text)
            text = functional.normalize(text.float(), dim=-1)
            chosen[category] = words[int((text @ image.T).squeeze(-1).argmax())]
        return chosen


def load_clip_labeller(spec: ModelSpec, device: torch.device | str = "cpu") -> ClipLabeller:
    _quiet_transformers()
    from transformers import CLIPConfig, CLIPModel

    device = torch.device(device)
    if spec.is_tiny:
        settings = dict(spec.tiny or {})
        torch.manual_seed(settings.pop("seed", 0))
        text = {
            "vocab_size": 259,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "pad_token_id": ByteTokenizer.pad_id,
            "eos_token_id": ByteTokenizer.eos_id,
        }
        config = CLIPConfig(text_config=text, vision_config=dict(TINY_VISION), projection_dim=16)
        model = CLIPModel(config)
        tokenizer: Any = ByteTokenizer()
        name = "tiny-random-clip"
    else:
        from transformers import AutoTokenizer

        if not spec.path:
            raise ValueError("clip.path is empty: name a local folder or a hub id")
        model = from_pretrained_offline(CLIPModel, spec.path)
        tokenizer = from_pretrained_offline(AutoTokenizer, spec.path)
        name = spec.path
    mean, std = _normalization("clip", None if spec.is_tiny else spec.path)
    weights = state_dict_sha256(model)
    model.to(device, resolve_dtype(spec, device)).eval()
    return ClipLabeller(name, model, tokenizer, weights, mean, std)
