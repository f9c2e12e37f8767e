"""Render: the clips that MusicGen generates, in batches per model, each written as it comes."""

from __future__ import annotations

import time

import torch

from synthesis.conditions import RunSetup
from synthesis.decoding import DecodingSettings, StaticCacheDecoder
from synthesis.models import LoadedMusicgen, decode_audio_batch
from synthesis.pipeline.plan import PendingClip
from synthesis.pipeline.write import SetWriter
from synthesis.progress import Progress


def _pad_and_stack(
    parts: list[torch.Tensor], masks: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cross-attention ignores masked keys exactly, so padding rows to one length changes nothing.
    length = max(part.shape[1] for part in parts)
    states = torch.cat([torch.nn.functional.pad(p, (0, 0, 0, length - p.shape[1])) for p in parts])
    mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])
    return states, mask


def _batches(pending: list[PendingClip], batch_size: int, family: str) -> list[list[PendingClip]]:
    """Longest first, batched; melody's prefix cannot be padded, so it batches by prefix length."""

    def group(item: PendingClip) -> int:
        return item.plan.conditioning.states.shape[1] if family == "melody" else 0

    ordered = sorted(pending, key=lambda item: (group(item), -item.frames, item.clip_id))
    batches: list[list[PendingClip]] = []
    for item in ordered:
        if batches and len(batches[-1]) < batch_size and group(batches[-1][0]) == group(item):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


def render_with_musicgen(
    pending: list[PendingClip], run: RunSetup, writer: SetWriter, progress: Progress
) -> None:
    """Generates the pending clips in batches, per MusicGen model, and writes each one."""
    generation = run.config.generation
    if pending and generation.decoder == "audiocraft":
        from synthesis.backends import require_audiocraft

        require_audiocraft()  # raises with installation advice; generation below needs transformers
    threads = torch.get_num_threads()
    summary = writer.summary
    models: dict[int, LoadedMusicgen] = {}
    for item in pending:
        musicgen = item.plan.musicgen or run.musicgen
        models.setdefault(id(musicgen), musicgen)
    for key, musicgen in models.items():
        mine = [item for item in pending if id(item.plan.musicgen or run.musicgen) == key]
        decoder = StaticCacheDecoder(
            musicgen.model.decoder,
            DecodingSettings(
                generation.guidance_scale,
                generation.do_sample,
                generation.temperature,
                generation.top_k,
                generation.compile,
            ),
        )
        for batch in _batches(mine, generation.batch_size, musicgen.family):
            batch_started = time.perf_counter()
            states, mask = _pad_and_stack(
                [item.plan.conditioning.states for item in batch],
                [item.plan.conditioning.mask for item in batch],
            )
            null_states, null_mask = _pad_and_stack(
                [item.plan.conditioning.null_states for item in batch],
                [item.plan.conditioning.null_mask for item in batch],
            )
            generators = [
                torch.Generator(device=musicgen.device).manual_seed(item.seed) for item in batch
            ]
            codes = decoder.generate_codes(
                states,
                mask,
                [item.frames for item in batch],
                generators,
                unconditional=(null_states, null_mask),
            )
            waveforms = decode_audio_batch(musicgen, codes)
            for item, waveform in zip(batch, waveforms, strict=True):
                provenance = {
                    "model": musicgen.name,
                    "model_family": musicgen.family,
                    "weights_sha256": musicgen.weights_sha256,
                    "seed": item.seed,
                    "guidance": generation.guidance_scale,
                    "code_version": run.code_version,
                    "decoder": "static-cache loop (synthesis.decoding)",
                    "sampling": {
                        "do_sample": generation.do_sample,
                        "temperature": generation.temperature,
                        "top_k": generation.top_k,
                    },
                    # with the seed, what the clip's bytes depend on (docs: "Reproducibility")
                    "batch_size": generation.batch_size,
                    "torch_threads": threads,
                    **item.plan.provenance,
                }
                writer.write(
                    item.clip_id,
                    item.segment,
                    item.condition,
                    waveform.numpy(),
                    musicgen.sampling_rate,
                    provenance,
                )
                summary.audio_seconds_generated += item.segment.duration
                progress.update()
            summary.generation_seconds += time.perf_counter() - batch_started
            writer.save()
