"""Ingest: videos -> segments with frames, embeddings, motion features, reference audio, score.

Also what the run says about its sources before any of them is read: which score conditions a
folder without scores cannot have, and what the segments' motion tempi can mean.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any

from synthesis.conditions import SegmentInput, get_condition, needs_score
from synthesis.config import SynthesisConfig
from synthesis.encoders import EmbeddingCache, VisualEncoder
from synthesis.features import (
    MAX_BPM,
    MIN_BPM,
    intensity_scale,
    measurable_tempo_range,
    motion_energy,
    segment_features,
)
from synthesis.pipeline.summary import Log, RunSummary
from synthesis.progress import Progress
from synthesis.score import ScoreError, load_score, slice_score
from synthesis.video import (
    VideoError,
    VideoSource,
    file_sha256,
    read_audio,
    sample_video,
    write_muted_copy,
)


@dataclass
class IngestedSource:
    entry: dict[str, Any]  # the manifest's sources[] item
    segments: list[SegmentInput]
    segment_entries: list[dict[str, Any]]


def segment_starts(duration: float, config: SynthesisConfig) -> list[float]:
    length = config.video.segment_seconds
    hop = config.video.segment_hop_seconds or length
    starts = []
    start = 0.0
    while start + length <= duration + 1e-6 and len(starts) < config.video.max_segments_per_source:
        starts.append(round(start, 3))
        start += hop
    return starts


def ingest_source(
    source: VideoSource,
    config: SynthesisConfig,
    encoder: VisualEncoder,
    cache: EmbeddingCache,
    audio_rate: int,
    set_folder: pathlib.Path | None,
    previous_video_sha256: str | None = None,
    with_score: bool | None = None,
) -> IngestedSource:
    """Frames, embeddings, motion features, reference audio and score slice of every segment.

    With a `set_folder`, also writes the muted copy of the video (kept when the set's last run
    recorded the same `previous_video_sha256`) and copies the score into it. `with_score`
    (default: when a configured condition needs one) reads the score and slices it to every
    segment. Raises VideoError for a corrupt or truncated video, a missing audio track, a
    too-short video, or a missing or unreadable score when one is needed.
    """
    video_cfg = config.video
    if with_score is None:
        with_score = needs_score(config.conditions)
    score = None
    if with_score:  # before decoding anything: a source without a score is skipped at once
        if source.score is None:
            expected = (
                "a Sco_*.mid in its URMP folder"
                if source.reference_audio is not None
                else f"{source.video.stem}.mid beside it"
            )
            raise VideoError(
                f"{source.video.name} has no score ({expected}): {_score_users(config)}"
            )
        try:
            score = load_score(source.score)
        except ScoreError as error:
            raise VideoError(str(error)) from error
    sampled = sample_video(
        source.video, video_cfg.frame_rate, video_cfg.frame_size, video_cfg.motion_rate
    )
    reference = read_audio(
        source.reference_audio or source.video, audio_rate, config.audio.channels
    )
    duration = min(sampled.duration, reference.shape[1] / audio_rate)
    if duration < video_cfg.segment_seconds:
        raise VideoError(
            f"{source.video.name} is {duration:.2f} s long, shorter than one "
            f"{video_cfg.segment_seconds:g} s segment"
        )
    video_sha = file_sha256(source.video)
    energy = motion_energy(sampled.motion_frames)
    scale = intensity_scale(energy)
    segments, entries = [], []
    for index, start in enumerate(segment_starts(duration, config)):
        segment_id = f"{source.id}.s{index:03d}"
        first = int(round(start * video_cfg.frame_rate))
        frames = sampled.frames[
            first : first + int(round(video_cfg.segment_seconds * video_cfg.frame_rate))
        ]
        settings = {
            "frame_rate": video_cfg.frame_rate,
            "frame_size": video_cfg.frame_size,
            "start": start,
            "duration": video_cfg.segment_seconds,
        }
        embeddings = cache.get_or_compute(video_sha, encoder, settings, frames)
        features = segment_features(
            energy, video_cfg.motion_rate, start, video_cfg.segment_seconds, scale
        )
        first_sample = int(round(start * audio_rate))
        samples = int(round(video_cfg.segment_seconds * audio_rate))
        segments.append(
            SegmentInput(
                id=segment_id,
                source_id=source.id,
                index=index,
                start=start,
                duration=video_cfg.segment_seconds,
                embeddings=embeddings,
                frames=frames,
                features=features,
                reference_audio=reference[:, first_sample : first_sample + samples],
                reference_rate=audio_rate,
                score=(
                    slice_score(score, start, video_cfg.segment_seconds)
                    if score is not None
                    else None
                ),
            )
        )
        entries.append(
            {
                "id": segment_id,
                "source": source.id,
                "start": start,
                "duration": video_cfg.segment_seconds,
                "features": features,
            }
        )
    entry: dict[str, Any] = {"id": source.id, "video": f"videos/{source.id}.mp4"}
    metadata = {
        **source.metadata,
        "original_video": source.video.name,
        "original_video_sha256": video_sha,
    }
    if source.reference_audio is not None:  # URMP's mix: the reference clips come from it
        metadata["reference_audio"] = source.reference_audio.name
        metadata["reference_audio_sha256"] = file_sha256(source.reference_audio)
    if source.score is not None:  # a new score remakes the clips made from it
        metadata["score_sha256"] = file_sha256(source.score)
    if set_folder is not None:
        muted = set_folder / entry["video"]
        # A video replaced under the same name must replace its muted copy too.
        if not muted.exists() or previous_video_sha256 != video_sha:
            write_muted_copy(source.video, muted)
        entry["video_sha256"] = file_sha256(muted)
        if source.score is not None:
            copied = set_folder / "scores" / source.score.name
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.score, copied)
            entry["score"] = f"scores/{source.score.name}"
    entry["metadata"] = metadata
    return IngestedSource(entry, segments, entries)


def _score_users(config: SynthesisConfig) -> str:
    users = ", ".join(name for name in config.conditions if get_condition(name).needs_score)
    return f"a score is needed by {users}"


def ingest_all(
    sources: list[VideoSource],
    config: SynthesisConfig,
    encoder: VisualEncoder,
    cache: EmbeddingCache,
    audio_rate: int,
    set_folder: pathlib.Path | None,
    summary: RunSummary,
    log: Log,
    previous_video_sha256: dict[str, str] | None = None,
    with_score: bool | None = None,
) -> list[IngestedSource]:
    ingested = []
    progress = Progress(len(sources), "videos", "video")
    for source in sources:
        try:
            ingested.append(
                ingest_source(
                    source,
                    config,
                    encoder,
                    cache,
                    audio_rate,
                    set_folder,
                    (previous_video_sha256 or {}).get(source.id),
                    with_score,
                )
            )
            summary.sources_used.append(source.id)
        except VideoError as error:
            summary.sources_skipped.append((source.id, str(error)))
            log(f"skipping {source.id}: {error}")
        progress.update()
    progress.close()
    return ingested


def tempo_notes(config: SynthesisConfig) -> list[str]:
    """What the set's motion tempo features can and cannot say, given the segment length."""
    video = config.video
    tempo_range = measurable_tempo_range(video.segment_seconds, video.motion_rate)
    wanted = f"{int(MIN_BPM)}-{int(MAX_BPM)} BPM"
    if tempo_range is None:
        return [
            f"segments of {video.segment_seconds:g} s at {video.motion_rate:g} Hz are too short "
            "for any motion tempo: segments[].features.tempo_bpm is always null"
        ]
    low, high = tempo_range
    if low > MIN_BPM + 0.5 or high < MAX_BPM - 0.5:
        return [
            f"segments of {video.segment_seconds:g} s at {video.motion_rate:g} Hz can only show "
            f"motion tempi of {low:.0f}-{high:.0f} BPM (a pulse must repeat within half a "
            f"segment), not {wanted}: segments[].features.tempo_bpm (and text_bridge's 'around N "
            "BPM') is not meaningful; use segments of at least "
            f"{2 * 60 / MIN_BPM:g} s for tempo"
        ]
    return []


def without_unusable_score_conditions(
    config: SynthesisConfig, sources: list[VideoSource]
) -> tuple[SynthesisConfig, str | None]:
    """The config without its score conditions when no source brings a score, and a note.

    A folder of plain videos (a newcomer's own recordings) has no MIDI: rather than skip every
    source for want of a score, the run makes the conditions that need none and says so. When
    some sources have scores, the conditions stay and the sources without one are skipped and
    reported (every segment of a set has a clip of every condition).
    """
    score_conditions = [name for name in config.conditions if needs_score([name])]
    if not score_conditions or any(source.score is not None for source in sources):
        return config, None
    kept = [name for name in config.conditions if name not in score_conditions]
    note = (
        f"no source has a MIDI score (URMP's Sco_*.mid or <video>.mid beside a video), so the "
        f"score conditions were left out of this run: {', '.join(score_conditions)}"
    )
    return dataclasses.replace(config, conditions=kept), note
