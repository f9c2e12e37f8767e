"""Write: every clip through one finishing chain (synthesis.audio), and the manifest on disk.

The manifest is rewritten after every batch, so an interrupted run resumes from its clips; files
of the set's folders that the final manifest omits are removed.
"""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

import numpy as np
import torch

from synthesis import audio as audio_ops
from synthesis.conditions import RunSetup, SegmentInput
from synthesis.config import SynthesisConfig
from synthesis.manifest import write_manifest
from synthesis.pipeline.ingest import IngestedSource
from synthesis.pipeline.summary import RunSummary
from synthesis.video import file_sha256, safe_id


def _clip_entry(
    clip_id: str,
    segment: SegmentInput,
    condition: str,
    path: str,
    sha: str,
    finished: np.ndarray,
    clip_format: audio_ops.ClipFormat,
    provenance: dict[str, Any] | None,
) -> dict[str, Any]:
    written = audio_ops.to_pcm16(finished).astype(np.float32) / 32767.0
    entry: dict[str, Any] = {
        "id": clip_id,
        "segment": segment.id,
        "condition": condition,
        "path": path,
        "sha256": sha,
        "sample_rate": clip_format.sample_rate,
        "channels": clip_format.channels,
        "duration": round(finished.shape[1] / clip_format.sample_rate, 6),
        "loudness_lufs": round(audio_ops.integrated_loudness(written, clip_format.sample_rate), 3),
    }
    if provenance is not None:
        entry["provenance"] = provenance
    return entry


class SetWriter:
    """Finishes clips (the same chain for every condition) and keeps the manifest on disk."""

    def __init__(
        self,
        out: pathlib.Path,
        manifest: dict[str, Any],
        clip_format: audio_ops.ClipFormat,
        summary: RunSummary,
    ) -> None:
        self.out = out
        self.manifest = manifest
        self.clip_format = clip_format
        self.summary = summary
        self.clips: dict[str, dict[str, Any]] = {}

    def keep(self, clip: dict[str, Any]) -> None:
        self.clips[clip["id"]] = clip
        self.summary.clips_reused += 1

    def write(
        self,
        clip_id: str,
        segment: SegmentInput,
        condition: str,
        audio: np.ndarray,
        rate: int,
        provenance: dict[str, Any] | None,
    ) -> None:
        clip_format = audio_ops.ClipFormat(
            self.clip_format.sample_rate,
            self.clip_format.channels,
            segment.duration,
            self.clip_format.loudness_lufs,
            self.clip_format.fade_ms,
        )
        try:
            finished = audio_ops.finish_clip(audio, rate, clip_format)
        except audio_ops.LoudnessError as error:
            self.summary.clips_failed.append((clip_id, str(error)))
            return
        relative = f"audio/{clip_id}.wav"
        audio_ops.write_wav(self.out / relative, finished, clip_format.sample_rate)
        self.clips[clip_id] = _clip_entry(
            clip_id,
            segment,
            condition,
            relative,
            file_sha256(self.out / relative),
            finished,
            clip_format,
            provenance,
        )
        self.summary.clips_written += 1

    def save(self) -> None:
        self.manifest["clips"] = [self.clips[key] for key in sorted(self.clips)]
        generator = self.manifest["generator"]
        generator["skipped_sources"] = [
            {"source": source, "reason": reason} for source, reason in self.summary.sources_skipped
        ]
        generator["skipped_segments"] = [
            {"segment": segment, "reason": reason}
            for segment, reason in self.summary.segments_skipped
        ]
        generator["failed_clips"] = [
            {"clip": clip, "reason": reason} for clip, reason in self.summary.clips_failed
        ]
        if self.manifest["clips"]:  # the schema wants at least one clip
            write_manifest(self.out, self.manifest)


def new_manifest(
    out: pathlib.Path,
    config: SynthesisConfig,
    run: RunSetup,
    made_with: dict[str, Any],
    ingested: list[IngestedSource],
    summary: RunSummary,
) -> dict[str, Any]:
    musicgen, encoder = run.musicgen, run.encoder
    return {
        "schema_version": "1.0",
        "name": safe_id(out.name)[:64],
        "description": config.description or f"made by sightsound synthesis, config {config.name}",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loudness_target_lufs": config.audio.loudness_lufs,
        "fit_for_studies": config.fit_for_studies,
        "generator": {
            "tool": "sightsound synthesis",
            "code_version": run.code_version,
            "config": made_with["config"],
            "checkpoints": made_with["checkpoints"],
            "musicgen": {
                "name": musicgen.name,
                "family": musicgen.family,
                "weights_sha256": musicgen.weights_sha256,
            },
            "encoder": {
                "name": encoder.name,
                "family": encoder.family,
                "weights_sha256": encoder.weights_sha256,
            },
            # A clip's bytes are reproducible for the same seed, device, torch_threads and
            # library versions (docs/synthesis.md, "Reproducibility").
            "device": str(run.device),
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "notes": summary.notes,
            "skipped_sources": [],
            "skipped_segments": [],
        },
        "sources": [source.entry for source in ingested],
        "segments": [entry for source in ingested for entry in source.segment_entries],
        "clips": [],
    }


def remove_unlisted_files(out: pathlib.Path, manifest: dict[str, Any]) -> list[str]:
    """Deletes clips, muted videos and scores of the set's folders that the manifest omits.

    A rerun with another config (other conditions, fewer segments) or without a source would
    otherwise leave its old files beside the new set, where they look like part of it.
    """
    listed = {clip["path"] for clip in manifest["clips"]}
    listed |= {source["video"] for source in manifest["sources"]}
    listed |= {source["score"] for source in manifest["sources"] if source.get("score")}
    removed = []
    for folder, pattern in (("audio", "*.wav"), ("videos", "*.mp4"), ("scores", "*")):
        for path in sorted((out / folder).glob(pattern)):
            relative = path.relative_to(out).as_posix()
            if path.is_file() and relative not in listed:
                path.unlink()
                removed.append(relative)
    return removed
