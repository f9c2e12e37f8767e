"""Loading MusicGen (offline), building tiny random-weight stand-ins, and MusicGen's inputs.

Weights are never downloaded: a model comes from a local folder or from a copy already in the
Hugging Face cache (`local_files_only=True`). The `tiny` models are built from small configs with
random weights; their output is noise and a set made with them is marked unfit for studies.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from synthesis.sections import ConfigError, ModelSpec


class ModelNotFoundError(RuntimeError):
    """Weights that are neither in a local folder nor in the Hugging Face cache."""


def hf_cache_dir() -> pathlib.Path:
    if os.environ.get("HF_HUB_CACHE"):
        return pathlib.Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME", str(pathlib.Path.home() / ".cache" / "huggingface"))
    return pathlib.Path(home) / "hub"


def from_pretrained_offline(model_class: Any, path: str, **kwargs: Any) -> Any:
    """`model_class.from_pretrained(path)` offline; a clear error when the weights are absent."""
    try:
        return model_class.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError as error:
        raise missing_weights(model_class.__name__, path, error) from error


def missing_weights(what: str, path: str, error: BaseException) -> ModelNotFoundError:
    """The error for weights that are neither a local folder nor in the Hugging Face cache."""
    return ModelNotFoundError(
        f"cannot load {what} weights {path!r} offline. Looked for a local "
        f"folder {pathlib.Path(path).resolve()} and for a cached copy under {hf_cache_dir()} "
        f"(set HF_HOME or HF_HUB_CACHE to move it). Download the weights on a machine with "
        f"network access (`hf download {path}`) and copy them there, or point the config's "
        f"`path` at a local folder. Original error: {error}"
    )


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    if spec.dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            spec.dtype
        ]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in the state dict, in name order.

    Defined on the loaded tensors rather than on files, so random-weight models get a hash too.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _quiet_transformers() -> None:
    # The tiny configs put pad/bos at vocab_size, as MusicGen does; transformers warns about it.
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


# --------------------------------------------------------------------------------------------
# Tiny random-weight models


TINY_MUSICGEN_DEFAULTS: dict[str, Any] = {
    "text_hidden": 24,  # differs from the decoder width so enc_to_dec_proj is exercised
    "decoder_hidden": 32,
    "decoder_layers": 2,
    "decoder_heads": 2,
    "decoder_ffn": 64,
    "vocab_size": 64,
    "num_codebooks": 4,
    "sampling_rate": 16000,
    "max_position_embeddings": 1600,
    "seed": 0,
}


def build_tiny_musicgen(family: str = "musicgen", **overrides: Any) -> nn.Module:
    """A random-weight MusicGen (or MusicGen-melody) with EnCodec at 50 frames per second."""
    _quiet_transformers()
    from transformers import EncodecConfig, T5Config

    settings = {**TINY_MUSICGEN_DEFAULTS, **overrides}
    text_config = T5Config(
        vocab_size=259,  # our byte tokenizer: 256 bytes + pad + eos + unk
        d_model=settings["text_hidden"],
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=3,
    )
    codec_config = EncodecConfig(
        sampling_rate=settings["sampling_rate"],
        upsampling_ratios=[8, 5, 4, 2],  # hop 320: 50 frames per second at 16 kHz
        num_filters=4,
        hidden_size=16,
        codebook_size=settings["vocab_size"],
        codebook_dim=16,
        num_residual_layers=1,
        num_lstm_layers=1,
        target_bandwidths=[2.0],  # 4 quantizers at 50 Hz
        chunk_length_s=None,
        overlap=None,
    )
    vocab = settings["vocab_size"]
    decoder_kwargs = dict(
        vocab_size=vocab,
        hidden_size=settings["decoder_hidden"],
        num_hidden_layers=settings["decoder_layers"],
        num_attention_heads=settings["decoder_heads"],
        ffn_dim=settings["decoder_ffn"],
        num_codebooks=settings["num_codebooks"],
        max_position_embeddings=settings["max_position_embeddings"],
        pad_token_id=vocab,
        bos_token_id=vocab,
        decoder_start_token_id=vocab,
        audio_channels=1,
    )
    torch.manual_seed(settings["seed"])
    if family == "musicgen":
        from transformers import (
            MusicgenConfig,
            MusicgenDecoderConfig,
            MusicgenForConditionalGeneration,
        )

        config = MusicgenConfig(
            text_encoder=text_config.to_dict(),
            audio_encoder=codec_config.to_dict(),
            decoder=MusicgenDecoderConfig(**decoder_kwargs).to_dict(),
        )
        model = MusicgenForConditionalGeneration(config)
    elif family == "melody":
        from transformers import (
            MusicgenMelodyConfig,
            MusicgenMelodyDecoderConfig,
            MusicgenMelodyForConditionalGeneration,
        )

        config = MusicgenMelodyConfig(
            text_encoder=text_config.to_dict(),
            audio_encoder=codec_config.to_dict(),
            decoder=MusicgenMelodyDecoderConfig(**decoder_kwargs).to_dict(),
            num_chroma=12,
            chroma_length=20,
        )
        model = MusicgenMelodyForConditionalGeneration(config)
    else:
        raise ValueError(f"unknown MusicGen family {family!r}")
    # EnCodec's codebooks are buffers learned by k-means/EMA and start at zero, which would make
    # a random codec ignore its codes (every clip the same sound). Give them random vectors.
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
    model.generation_config.pad_token_id = vocab
    model.generation_config.decoder_start_token_id = vocab
    model.generation_config.bos_token_id = vocab
    return model.eval()


class ByteTokenizer:
    """UTF-8 bytes as token ids: the tiny models' tokenizer (there is no vocabulary offline)."""

    pad_id = 256
    eos_id = 257

    def __call__(self, texts: list[str], max_length: int = 64) -> dict[str, torch.Tensor]:
        rows = [list(text.encode("utf-8"))[: max_length - 1] + [self.eos_id] for text in texts]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row)
            mask[index, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------------------------
# Loaded MusicGen with what the pipeline needs to know about it


@dataclass
class LoadedMusicgen:
    model: nn.Module  # MusicgenForConditionalGeneration or MusicgenMelodyForConditionalGeneration
    family: str
    name: str
    tokenizer: Any
    weights_sha256: str
    is_tiny: bool

    @property
    def sampling_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> int:
        return int(self.model.config.audio_encoder.frame_rate)

    @property
    def audio_channels(self) -> int:
        return int(self.model.config.decoder.audio_channels)

    @property
    def decoder_width(self) -> int:
        return int(self.model.config.decoder.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.decoder.parameters()).dtype

    def frames_for(self, seconds: float) -> int:
        return int(round(seconds * self.frame_rate))


def load_musicgen(spec: ModelSpec, device: torch.device | str = "cpu") -> LoadedMusicgen:
    device = torch.device(device)
    if spec.is_tiny:
        model = build_tiny_musicgen(spec.family, **(spec.tiny or {}))
        tokenizer: Any = ByteTokenizer()
        name = f"tiny-random-{spec.family}"
    else:
        if not spec.path:
            raise ModelNotFoundError("musicgen.path is empty: name a local folder or a hub id")
        _quiet_transformers()
        from transformers import (
            AutoTokenizer,
            MusicgenForConditionalGeneration,
            MusicgenMelodyForConditionalGeneration,
        )

        model_class = (
            MusicgenMelodyForConditionalGeneration
            if spec.family == "melody"
            else MusicgenForConditionalGeneration
        )
        model = from_pretrained_offline(model_class, spec.path)
        tokenizer = from_pretrained_offline(AutoTokenizer, spec.path)
        name = spec.path
    weights_hash = state_dict_sha256(model)
    dtype = resolve_dtype(spec, device)
    # The codec stays in float32: its decoder is cheap and half precision audibly degrades it.
    model.to(device)
    model.decoder.to(dtype)
    model.text_encoder.to(dtype)
    for projection in ("enc_to_dec_proj", "audio_enc_to_dec_proj"):
        if hasattr(model, projection):
            getattr(model, projection).to(dtype)
    model.eval()
    return LoadedMusicgen(model, spec.family, name, tokenizer, weights_hash, spec.is_tiny)


def check_segment_fits(musicgen: LoadedMusicgen, seconds: float) -> None:
    """A ConfigError when segments of `seconds` need more decoder positions than the model has."""
    decoder_config = musicgen.model.config.decoder
    positions_needed = musicgen.frames_for(seconds) + decoder_config.num_codebooks
    if positions_needed > decoder_config.max_position_embeddings:
        raise ConfigError(
            f"{seconds:g} s segments need {positions_needed} decoder positions; {musicgen.name} "
            f"has {decoder_config.max_position_embeddings} (about 30 s for the released MusicGen "
            "models): use shorter segments"
        )


# --------------------------------------------------------------------------------------------
# Conditioning in the decoder's space


@dataclass
class Conditioning:
    """MusicGen conditioning in the decoder's width, with the null condition used for guidance."""

    states: torch.Tensor  # (B, S, decoder width)
    mask: torch.Tensor  # (B, S)
    null_states: torch.Tensor
    null_mask: torch.Tensor


def null_conditioning(family: str, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional rows for classifier-free guidance, shaped like `states`.

    musicgen: zero states with a zero mask. melody: zero states, every position visible, because
    melody's decoder reads its conditioning as a prefix and transformers never masks that prefix.
    """
    mask_value = 1 if family == "melody" else 0
    mask = torch.full(states.shape[:2], mask_value, dtype=torch.long, device=states.device)
    return torch.zeros_like(states), mask


@torch.no_grad()
def text_conditioning(musicgen: LoadedMusicgen, prompts: list[str]) -> Conditioning:
    """Text prompts -> conditioning in the decoder's width, as transformers computes it.

    musicgen: T5 states through enc_to_dec_proj, multiplied by the mask (cross-attention keys).
    melody: the same, with the default one-hot chroma prepended (the model's prefix); the null
    condition is that chroma's null (also one-hot) followed by zeros, as in melody's generate.
    """
    model = musicgen.model
    if isinstance(musicgen.tokenizer, ByteTokenizer):
        batch = musicgen.tokenizer(prompts)
    else:
        batch = dict(musicgen.tokenizer(prompts, padding=True, return_tensors="pt"))
    input_ids = batch["input_ids"].to(musicgen.device)
    mask = batch["attention_mask"].to(musicgen.device)
    states = model.text_encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    if model.text_encoder.config.hidden_size != model.decoder.config.hidden_size:
        states = model.enc_to_dec_proj(states)
    states = states * mask[..., None].to(states.dtype)
    if musicgen.family != "melody":
        return Conditioning(states, mask, *null_conditioning("musicgen", states))
    config = model.config
    chroma = torch.zeros((len(prompts), 1, config.num_chroma), device=musicgen.device)
    chroma[:, :, 0] = 1  # no melody: transformers' default (and null) chroma
    chroma = chroma.to(states.dtype)
    if config.num_chroma != model.decoder.config.hidden_size:
        chroma = model.audio_enc_to_dec_proj(chroma)
    chroma = chroma.repeat(1, config.chroma_length, 1)
    visible = torch.ones((len(prompts), chroma.shape[1] + states.shape[1]), dtype=torch.long)
    visible = visible.to(musicgen.device)
    return Conditioning(
        torch.cat([chroma, states], dim=1),
        visible,
        torch.cat([chroma, torch.zeros_like(states)], dim=1),
        visible.clone(),
    )


@torch.no_grad()
def encode_audio_codes(musicgen: LoadedMusicgen, audio: torch.Tensor) -> torch.Tensor:
    """Audio (B, channels, samples) at the codec's rate -> codes (B, num_codebooks, frames)."""
    codec = musicgen.model.audio_encoder
    num_codebooks = musicgen.model.decoder.config.num_codebooks
    bandwidth = None
    for candidate in codec.config.target_bandwidths:
        if int(1000 * candidate // (codec.config.frame_rate * 10)) >= num_codebooks:
            bandwidth = candidate
            break
    encoded = codec.encode(audio.to(musicgen.device, torch.float32), bandwidth=bandwidth)
    codes = encoded.audio_codes[0]  # one chunk: (B, quantizers, frames)
    return codes[:, :num_codebooks]


@torch.no_grad()
def decode_audio_codes(musicgen: LoadedMusicgen, codes: torch.Tensor) -> torch.Tensor:
    """Codes (num_codebooks, frames) of one clip -> audio (channels, samples), float32 on CPU."""
    codec = musicgen.model.audio_encoder
    codes = codes.to(musicgen.device)
    if musicgen.audio_channels == 1:
        audio = codec.decode(codes[None, None], [None]).audio_values[0]
    else:
        left = codec.decode(codes[None, None, ::2], [None]).audio_values[0]
        right = codec.decode(codes[None, None, 1::2], [None]).audio_values[0]
        audio = torch.cat([left, right], dim=0)
    return audio.float().cpu()


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Runs the block on one intra-op thread when `device` is the CPU.

    The codec's convolutions split their sums by thread count on the CPU, so the same codes
    decoded with 1 and 2 threads differed by 1 LSB in about 60 of 16,000 samples. One thread
    fixes the order of every sum; the codec is a small part of a clip's time.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def decode_audio_batch(musicgen: LoadedMusicgen, codes: list[torch.Tensor]) -> list[torch.Tensor]:
    """decode_audio_codes for many clips, each alone and (on the CPU) on one thread.

    Decoding clips together made a clip's samples depend on its batch (1 LSB in 33-60 of 16,000
    samples between batch sizes 1 and 4): a clip's audio must not depend on batching or on the
    thread count, so each is decoded by itself in a fixed reduction order.
    """
    with one_cpu_thread(musicgen.device):
        return [decode_audio_codes(musicgen, clip_codes) for clip_codes in codes]
