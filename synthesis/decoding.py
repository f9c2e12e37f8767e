"""Our own autoregressive decoding loop around a transformers MusicGen decoder.

Why not `model.generate`: stock decoding spends most of each step in Python (logits processors,
mask building, a growing dynamic cache), which dominates on CPU and on a GPU at small batch sizes.
This loop runs the decoder's own weights with:

- a static KV cache sized to the longest clip of the batch (fixed shapes, no reallocation);
- classifier-free guidance in one batched pass (conditional rows, then unconditional rows);
- per-row clip lengths, so a batch sorted by length holds clips of different lengths and each row
  is exactly what a run at its own length would produce;
- on a GPU, the per-step function compiled with `torch.compile(mode="reduce-overhead")`, which
  captures it in a CUDA graph (fixed shapes and a tensor position make that possible).

It supports both MusicGen families: `musicgen` (conditioning through cross-attention) and
`melody` (conditioning prepended to the decoder's input as a prefix). With greedy decoding it
reproduces `generate` token for token (tests/synthesis/test_synthesis_decoding.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional


@dataclass
class DecodingSettings:
    guidance_scale: float = 3.0
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 250
    compile: bool | None = None  # None: compile on CUDA only


def _additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A large finite negative rather than -inf: a row with every key masked (the unconditional
    # rows of classifier-free guidance) then averages zero values instead of producing NaN,
    # which is what transformers' eager attention does too.
    zeros = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zeros, torch.finfo(dtype).min)


class StaticCacheDecoder:
    """Generates MusicGen codes with a static KV cache. One instance per loaded model."""

    def __init__(self, causal_lm: nn.Module, settings: DecodingSettings | None = None) -> None:
        self.lm = causal_lm  # MusicgenForCausalLM or MusicgenMelodyForCausalLM
        self.decoder = causal_lm.model.decoder
        config = causal_lm.config
        self.num_codebooks = config.num_codebooks
        self.start_id = (
            config.decoder_start_token_id
            if getattr(config, "decoder_start_token_id", None) is not None
            else config.bos_token_id
        )
        self.pad_id = config.pad_token_id
        self.uses_prefix = not hasattr(self.decoder.layers[0], "encoder_attn")
        self.settings = settings or DecodingSettings()
        first = self.decoder.layers[0].self_attn
        self.num_heads = (
            first.num_heads if hasattr(first, "num_heads") else config.num_attention_heads
        )
        self.head_dim = first.head_dim
        self._step = self._decode_position
        self.compiled = False
        device = next(causal_lm.parameters()).device
        use_compile = self.settings.compile
        if use_compile is None:
            use_compile = device.type == "cuda"
        if use_compile:
            # reduce-overhead = CUDA graphs on GPU. The tests check the uncompiled loop token for
            # token against generate on CPU; the compiled path has not been run yet (no GPU was
            # available): check it the same way on a GPU first (an early compiled audiocraft LM
            # produced garbled audio).
            self._step = torch.compile(self._decode_position, mode="reduce-overhead", dynamic=False)
            self.compiled = True

    # ----------------------------------------------------------------------------------------
    # one transformer pass over `hidden` at absolute positions [first, first + length)

    def _attend(
        self,
        attention: nn.Module,
        hidden: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape
        query = attention.q_proj(hidden).view(batch, length, self.num_heads, self.head_dim)
        output = functional.scaled_dot_product_attention(
            query.transpose(1, 2), keys, values, attn_mask=mask, scale=attention.scaling
        )
        return attention.out_proj(output.transpose(1, 2).reshape(batch, length, -1))

    def _project_kv(self, attention: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch, length, _ = states.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        keys = attention.k_proj(states).view(shape).transpose(1, 2)
        values = attention.v_proj(states).view(shape).transpose(1, 2)
        return keys, values

    def _forward(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        self_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Runs all layers, writing keys/values at `positions` into the static cache."""
        for index, layer in enumerate(self.decoder.layers):
            residual = hidden
            normed = layer.self_attn_layer_norm(hidden)
            keys, values = self._project_kv(layer.self_attn, normed)
            self.cache_keys[index].index_copy_(2, positions, keys)
            self.cache_values[index].index_copy_(2, positions, values)
            hidden = residual + self._attend(
                layer.self_attn, normed, self.cache_keys[index], self.cache_values[index], self_mask
            )
            if not self.uses_prefix:
                residual = hidden
                normed = layer.encoder_attn_layer_norm(hidden)
                hidden = residual + self._attend(
                    layer.encoder_attn,
                    normed,
                    self.cross_keys[index],
                    self.cross_values[index],
                    self.cross_mask,
                )
            residual = hidden
            normed = layer.final_layer_norm(hidden)
            hidden = residual + layer.fc2(layer.activation_fn(layer.fc1(normed)))
        return self.decoder.layer_norm(hidden)

    def _decode_position(self, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """tokens (N, K) at absolute `position` (0-dim tensor) -> logits (N, K, vocab)."""
        embeds = sum(
            self.decoder.embed_tokens[k](tokens[:, k : k + 1]) for k in range(self.num_codebooks)
        )
        positions = position.view(1)
        hidden = embeds + self.decoder.embed_positions.weights.index_select(0, positions).to(
            embeds.dtype
        )
        causal = self.key_positions <= position  # (cache_len,)
        mask = _additive_mask(self.key_valid & causal, hidden.dtype)[:, None, None, :]
        hidden = self._forward(hidden, positions, mask)
        return torch.stack([head(hidden[:, -1]) for head in self.lm.lm_heads], dim=1)

    # ----------------------------------------------------------------------------------------

    def _prepare(self, conditioning: torch.Tensor, conditioning_mask: torch.Tensor, total: int):
        rows = conditioning.shape[0]
        dtype = next(self.decoder.parameters()).dtype
        device = conditioning.device
        conditioning = conditioning.to(dtype)
        prefix = conditioning.shape[1] if self.uses_prefix else 0
        cache_len = prefix + total
        shape = (rows, self.num_heads, cache_len, self.head_dim)
        layers = len(self.decoder.layers)
        cached = getattr(self, "cache_keys", None)
        if cached and cached[0].shape == shape and cached[0].dtype == dtype:
            # Same shape as the previous batch: reuse the buffers in place, so a captured CUDA
            # graph keeps pointing at valid memory and nothing is re-captured.
            for tensor in (*self.cache_keys, *self.cache_values):
                tensor.zero_()
            self.key_valid.fill_(True)
        else:
            self.cache_keys = [
                torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)
            ]
            self.cache_values = [
                torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)
            ]
            self.key_positions = torch.arange(cache_len, device=device)
            self.key_valid = torch.ones((rows, cache_len), dtype=torch.bool, device=device)
            if self.compiled:
                for tensor in (*self.cache_keys, *self.cache_values, self.key_valid):
                    torch._dynamo.mark_static_address(tensor)
        if self.uses_prefix:
            self.key_valid[:, :prefix] = conditioning_mask.bool()
            positions = torch.arange(prefix, device=device)
            hidden = conditioning + self.decoder.embed_positions.weights[:prefix].to(dtype)
            causal = self.key_positions[None, :] <= positions[:, None]  # (prefix, cache_len)
            mask = _additive_mask(self.key_valid[:, None, :] & causal[None], dtype)[:, None]
            self._forward(hidden, positions, mask)
        else:
            keys_values = [
                self._project_kv(layer.encoder_attn, conditioning) for layer in self.decoder.layers
            ]
            mask = _additive_mask(conditioning_mask.bool(), dtype)[:, None, None, :]
            previous = getattr(self, "cross_keys", None)
            if previous and previous[0].shape == keys_values[0][0].shape:
                for index, (keys, values) in enumerate(keys_values):  # in place, as above
                    self.cross_keys[index].copy_(keys)
                    self.cross_values[index].copy_(values)
                self.cross_mask.copy_(mask)
            else:
                self.cross_keys = [keys for keys, _ in keys_values]
                self.cross_values = [values for _, values in keys_values]
                self.cross_mask = mask
                if self.compiled:
                    for tensor in (*self.cross_keys, *self.cross_values, self.cross_mask):
                        torch._dynamo.mark_static_address(tensor)
        return prefix

    @torch.no_grad()
    def generate_codes(
        self,
        conditioning: torch.Tensor,
        conditioning_mask: torch.Tensor,
        num_frames: list[int],
        generators: list[torch.Generator] | None = None,
        settings: DecodingSettings | None = None,
        unconditional: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Codes for each row: a list of (num_codebooks, num_frames[i]) tensors.

        conditioning: (B, S, decoder width), already projected (see models.text_conditioning and
        adapter.VisualAdapter); conditioning_mask: (B, S), 1 for real positions.
        generators: one per row when sampling. Each row draws all its uniforms from its own
        generator up front, so a clip's tokens depend on its seed and not on which other clips
        share its batch, and sampling stays one batched operation per step.
        unconditional: the null condition's (states, mask) for guidance, same shapes; by default
        zero states with a zero mask (MusicGen's null condition for cross-attention).
        """
        settings = settings or self.settings
        batch = conditioning.shape[0]
        device = conditioning.device
        guided = settings.guidance_scale is not None and settings.guidance_scale > 1
        if guided:
            if unconditional is None:
                unconditional = (
                    torch.zeros_like(conditioning),
                    torch.zeros_like(conditioning_mask),
                )
            null_states, null_mask = unconditional
            conditioning = torch.cat([conditioning, null_states.to(conditioning.dtype)])
            conditioning_mask = torch.cat(
                [conditioning_mask, null_mask.to(conditioning_mask.dtype)]
            )
        frames = torch.tensor(num_frames, device=device)
        codebooks = self.num_codebooks
        # positions 0 .. total-1: the start token, then frames + (K - 1) delayed steps
        total = int(frames.max()) + codebooks
        prefix = self._prepare(conditioning, conditioning_mask, total)
        sequence = torch.full(
            (batch, codebooks, total), self.pad_id, dtype=torch.long, device=device
        )
        sequence[:, :, 0] = self.start_id
        codebook_index = torch.arange(codebooks, device=device)[None, :]
        uniforms = None
        if settings.do_sample and generators is not None:
            uniforms = torch.stack(
                [
                    torch.rand((total - 1, codebooks), generator=generator, device=device)
                    for generator in generators
                ]
            )  # (B, steps, K)
        for step in range(total - 1):
            tokens = sequence[:, :, step]
            if guided:
                tokens = tokens.repeat(2, 1)
            position = torch.tensor(prefix + step, device=device)
            logits = self._step(tokens, position).float()
            if guided:
                conditional, unconditional = logits.split(batch)
                logits = unconditional + (conditional - unconditional) * settings.guidance_scale
            chosen = self._choose(logits, settings, None if uniforms is None else uniforms[:, step])
            target = step + 1
            # MusicGen's delay pattern: codebook k holds frame (target - 1 - k) at this position
            valid = (target >= codebook_index + 1) & (target <= frames[:, None] + codebook_index)
            sequence[:, :, target] = torch.where(valid, chosen, self.pad_id)
        return [
            torch.stack(
                [sequence[row, k, k + 1 : k + 1 + num_frames[row]] for k in range(codebooks)]
            )
            for row in range(batch)
        ]

    @staticmethod
    def _choose(
        logits: torch.Tensor,
        settings: DecodingSettings,
        uniforms: torch.Tensor | None,
    ) -> torch.Tensor:
        """Greedy, or top-k sampling by inverse CDF with one uniform per (row, codebook)."""
        if not settings.do_sample:
            return logits.argmax(-1)
        logits = logits / max(settings.temperature, 1e-5)
        if settings.top_k and settings.top_k < logits.shape[-1]:
            threshold = logits.topk(settings.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < threshold, -math.inf)
        cumulative = logits.softmax(-1).cumsum(-1)  # (B, K, vocab)
        if uniforms is None:
            uniforms = torch.rand(cumulative.shape[:-1], device=cumulative.device)
        targets = (uniforms * cumulative[..., -1]).unsqueeze(-1).contiguous()
        chosen = torch.searchsorted(cumulative.contiguous(), targets).squeeze(-1)
        return chosen.clamp_(max=cumulative.shape[-1] - 1)
