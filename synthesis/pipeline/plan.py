"""Plan: the segments every condition can use, the clips kept from the last run, the rest asked
of each condition (finished audio is written at once; MusicGen conditioning waits for render).
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from synthesis.conditions import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
)
from synthesis.pipeline.ingest import IngestedSource
from synthesis.pipeline.summary import Log, RunSummary
from synthesis.pipeline.write import SetWriter
from synthesis.progress import Progress
from synthesis.video import file_sha256


def changed_sources(previous: dict[str, Any], ingested: list[IngestedSource]) -> dict[str, str]:
    """Sources of the last run whose video or reference audio now has other content."""
    before = {source["id"]: source.get("metadata", {}) for source in previous.get("sources", [])}
    changed = {}
    for source in ingested:
        if source.entry["id"] not in before:
            continue
        old, new = before[source.entry["id"]], source.entry["metadata"]
        what = [
            label
            for key, label in (
                ("original_video_sha256", f"video {new['original_video']}"),
                ("reference_audio_sha256", f"reference audio {new.get('reference_audio')}"),
                ("score_sha256", f"score {pathlib.PurePath(source.entry.get('score', '')).name}"),
            )
            if old.get(key) != new.get(key)
        ]
        if what:
            changed[source.entry["id"]] = " and ".join(what) + " replaced by other content"
    return changed


def drop_unusable_segments(
    ingested: list[IngestedSource],
    conditions: dict[str, Condition],
    summary: RunSummary,
    log: Log,
) -> list[IngestedSource]:
    """Removes every segment that some condition cannot make a clip for (e.g. no notes in its
    score's window), and a source left without segments.

    The whole segment goes, not only that condition's clip: every segment of a set has one clip
    per condition, which the study designs rely on.
    """
    kept_sources = []
    for source in ingested:
        kept, kept_entries = [], []
        for segment, entry in zip(source.segments, source.segment_entries, strict=True):
            problems = [
                problem
                for condition in conditions.values()
                if (problem := condition.segment_problem(segment)) is not None
            ]
            if problems:
                summary.segments_skipped.append((segment.id, problems[0]))
                log(f"skipping segment {segment.id}: {problems[0]}")
            else:
                kept.append(segment)
                kept_entries.append(entry)
        source_id = source.entry["id"]
        if not kept:
            summary.sources_used.remove(source_id)
            summary.sources_skipped.append(
                (source_id, "every segment was skipped (see the skipped segments)")
            )
            continue
        kept_sources.append(IngestedSource(source.entry, kept, kept_entries))
    return kept_sources


def reusable_clips(
    previous: dict[str, Any],
    made_with: dict[str, Any],
    segments: list[SegmentInput],
    changed_sources: set[str],
    conditions: dict[str, Condition],
    out: pathlib.Path,
    log: Log,
) -> dict[str, dict[str, Any]]:
    """Clips of the last run that are kept: same config, models and checkpoints; their source
    unchanged; their condition's own check passed; their file still matching its sha256."""
    previous_generator = previous.get("generator", {})
    previous_made_with = {
        "config": previous_generator.get("config"),
        "musicgen_weights_sha256": previous_generator.get("musicgen", {}).get("weights_sha256"),
        "encoder_weights_sha256": previous_generator.get("encoder", {}).get("weights_sha256"),
        "checkpoints": previous_generator.get("checkpoints"),
    }
    if previous and previous_made_with != made_with:
        # Mixing clips made under two configs would break the set's comparability.
        log("the set was made with another config, model or checkpoint: remaking every clip")
        return {}
    segments_by_id = {segment.id: segment for segment in segments}
    changed_segments = {segment.id for segment in segments if segment.source_id in changed_sources}
    finished = {}
    for clip in previous.get("clips", []):
        segment = segments_by_id.get(clip["segment"])
        condition = conditions.get(clip["condition"])
        if segment is None or condition is None or segment.id in changed_segments:
            continue
        if not condition.still_valid(clip, segment, segments, changed_segments):
            continue
        clip_path = out / clip["path"]
        if clip_path.exists() and file_sha256(clip_path) == clip["sha256"]:
            finished[clip["id"]] = clip
    return finished


@dataclass
class PendingClip:
    clip_id: str
    segment: SegmentInput
    condition: str
    plan: ClipPlan
    frames: int
    seed: int


def plan_clips(
    segments: list[SegmentInput],
    conditions: dict[str, Condition],
    finished: dict[str, dict[str, Any]],
    run: RunSetup,
    writer: SetWriter,
    progress: Progress,
) -> list[PendingClip]:
    """Asks each condition for each segment's clip: finished audio is written at once, MusicGen
    conditioning is returned for the render stage."""
    summary = writer.summary
    threads = torch.get_num_threads()
    pending = []
    for segment in segments:
        for name, condition in conditions.items():
            clip_id = f"{segment.id}.{name}"
            if clip_id in finished:
                writer.keep(finished[clip_id])
                progress.update()
                continue
            planning_started = time.perf_counter()
            try:
                plan = condition.plan(segment, segments)
            except ConditionSkipped as error:
                summary.clips_failed.append((clip_id, str(error)))
                progress.update()
                continue
            if plan.audio is None:
                musicgen = plan.musicgen or run.musicgen
                pending.append(
                    PendingClip(
                        clip_id,
                        segment,
                        name,
                        plan,
                        musicgen.frames_for(segment.duration),
                        run.clip_seed(clip_id),
                    )
                )
                continue
            # Finished audio (reference; conditions that make their own): the same finishing
            # chain as MusicGen's clips.
            provenance = None
            if condition.generates:
                provenance = {
                    "code_version": run.code_version,
                    **plan.provenance,
                    "torch_threads": threads,
                }
                summary.audio_seconds_generated += segment.duration
                summary.generation_seconds += time.perf_counter() - planning_started
            writer.write(clip_id, segment, name, plan.audio, plan.audio_rate, provenance)
            progress.update()
    return pending
