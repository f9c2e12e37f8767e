"""The pipeline: videos -> segments -> conditions -> loudness-matched clips + manifest.

`generate_set` reads as its stages: load the run's shared models and each condition's own
(checkpoints are checked before any video is read), ingest (decode, embed, motion features,
score slices), plan (drop segments a condition cannot use, reuse finished clips, ask each
condition for its clip), render (MusicGen's batches), then match and write (one finishing chain
for every clip, the manifest rewritten after every batch). It is resumable: a clip already in
the manifest whose file still matches its sha256 is not made again. A source that cannot be
used (corrupt, no audio, shorter than a segment, no score when a condition needs one) is
reported and skipped; the others proceed. What is particular to a condition lives in its module
under synthesis/conditions/.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from synthesis import audio as audio_ops
from synthesis.adapter import AdapterShape, TrainingExample, VisualAdapter, train_adapter
from synthesis.conditions import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    get_condition,
    load_conditions,
    needs_score,
)
from synthesis.config import ConfigError, ModelSpec, SynthesisConfig
from synthesis.decoding import DecodingSettings, StaticCacheDecoder
from synthesis.encoders import EmbeddingCache, VisualEncoder, load_visual_encoder
from synthesis.features import (
    MAX_BPM,
    MIN_BPM,
    intensity_scale,
    measurable_tempo_range,
    motion_energy,
    segment_features,
)
from synthesis.gan import freeze, prepare_examples, train_gan
from synthesis.manifest import code_version, read_manifest, schema_problems, write_manifest
from synthesis.models import (
    Conditioning,
    LoadedMusicgen,
    check_segment_fits,
    decode_audio_batch,
    encode_audio_codes,
    load_musicgen,
)
from synthesis.progress import Progress
from synthesis.score import ScoreError, load_score, slice_score
from synthesis.video import (
    VideoError,
    VideoSource,
    discover_sources,
    file_sha256,
    read_audio,
    safe_id,
    sample_video,
    write_muted_copy,
)

Log = Callable[[str], None]


@dataclass
class IngestedSource:
    entry: dict[str, Any]  # the manifest's sources[] item
    segments: list[SegmentInput]
    segment_entries: list[dict[str, Any]]


@dataclass
class RunSummary:
    set_folder: pathlib.Path
    sources_used: list[str] = field(default_factory=list)
    sources_skipped: list[tuple[str, str]] = field(default_factory=list)
    sources_changed: list[tuple[str, str]] = field(default_factory=list)  # (source, what)
    segments_skipped: list[tuple[str, str]] = field(default_factory=list)  # (segment, why)
    clips_written: int = 0
    clips_reused: int = 0
    clips_failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds_generated: float = 0.0
    generation_seconds: float = 0.0
    seconds: float = 0.0
    manifest_problems: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)  # set-relative paths
    notes: list[str] = field(default_factory=list)  # warnings about the set's features

    def text(self) -> str:
        lines = [
            f"stimulus set: {self.set_folder}",
            f"sources used: {len(self.sources_used)}; skipped: {len(self.sources_skipped)}",
        ]
        lines += [f"  skipped {source}: {reason}" for source, reason in self.sources_skipped]
        lines += [
            f"  changed since the last run, its clips remade: {source} ({what})"
            for source, what in self.sources_changed
        ]
        if self.segments_skipped:
            lines.append(f"segments skipped: {len(self.segments_skipped)}")
            lines += [
                f"  skipped segment {segment}: {reason}"
                for segment, reason in self.segments_skipped
            ]
        lines.append(
            f"clips written: {self.clips_written}; already done: {self.clips_reused}; "
            f"failed: {len(self.clips_failed)}"
        )
        lines += [f"  failed {clip}: {reason}" for clip, reason in self.clips_failed]
        if self.generation_seconds > 0:
            speed = self.audio_seconds_generated / self.generation_seconds
            lines.append(
                f"generated {self.audio_seconds_generated:.1f} s of audio in "
                f"{self.generation_seconds:.1f} s ({speed:.2f} audio-s/s)"
            )
        if self.files_removed:
            lines.append(
                f"removed {len(self.files_removed)} files no longer in the manifest: "
                + ", ".join(self.files_removed[:5])
                + (", ..." if len(self.files_removed) > 5 else "")
            )
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"total time: {self.seconds:.1f} s")
        if self.manifest_problems:
            lines.append("manifest problems:")
            lines += [f"  {problem}" for problem in self.manifest_problems]
        else:
            lines.append("manifest: valid against the JSON Schema")
        return "\n".join(lines)


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


def _pad_and_stack(
    parts: list[torch.Tensor], masks: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cross-attention ignores masked keys exactly, so padding rows to one length changes nothing.
    length = max(part.shape[1] for part in parts)
    states = torch.cat([torch.nn.functional.pad(p, (0, 0, 0, length - p.shape[1])) for p in parts])
    mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])
    return states, mask


@dataclass
class PendingClip:
    clip_id: str
    segment: SegmentInput
    condition: str
    plan: ClipPlan
    frames: int
    seed: int


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


def portable_config(config: SynthesisConfig) -> dict[str, Any]:
    """The config as the manifest records it: no path of this machine in it.

    Checkpoints keep their file name (the manifest's `generator.checkpoints` and each clip's
    provenance identify them by sha256); a model given as a local folder keeps the folder's
    name (its weights are identified by `weights_sha256`); hub ids stay as they are.
    """
    data = json.loads(json.dumps(config.to_dict()))
    for section in (data["adapter"], data["gan"], data["vit_score"]["adapter"]):
        if section.get("checkpoint"):
            section["checkpoint"] = pathlib.PurePath(section["checkpoint"]).name
    # the soundfont is identified by its sha256 in generator.checkpoints
    data["score_render"]["soundfont"] = pathlib.PurePath(data["score_render"]["soundfont"]).name
    for section in (
        data["encoder"],
        data["musicgen"],
        data["clip"],
        data["vit_score"]["musicgen"],
        data["score_diffusion"],
    ):
        path = section.get("path")
        if path and (pathlib.Path(path).is_absolute() or pathlib.Path(path).exists()):
            section["path"] = pathlib.PurePath(path).name
    return data


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


def _remove_unlisted_files(out: pathlib.Path, manifest: dict[str, Any]) -> list[str]:
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


def _changed_sources(previous: dict[str, Any], ingested: list[IngestedSource]) -> dict[str, str]:
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


def load_run_models(config: SynthesisConfig, device: str) -> RunSetup:
    """The run's shared models: MusicGen (its codec's rate is the set's) and the visual encoder.

    Missing weights stop the run here, before anything is read or written.
    """
    torch_device = torch.device(device)
    musicgen = load_musicgen(config.musicgen, torch_device)
    encoder = load_visual_encoder(config.encoder, torch_device)
    check_segment_fits(musicgen, config.video.segment_seconds)
    return RunSetup(config, torch_device, musicgen, encoder, code_version())


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


def generate_set(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    log: Log = print,
) -> RunSummary:
    """Makes (or completes) the stimulus set in `out` from the videos in `videos`."""
    started = time.perf_counter()
    summary = RunSummary(out)
    sources = discover_sources(videos)
    config, score_note = without_unusable_score_conditions(config, sources)
    run = load_run_models(config, device)  # missing weights stop us here
    # Each condition loads its own models and checks its checkpoints before the videos: a wrong
    # path must stop the run before an hour of ingest.
    conditions = load_conditions(config.conditions, run)
    musicgen, encoder = run.musicgen, run.encoder
    out.mkdir(parents=True, exist_ok=True)
    summary.notes = tempo_notes(config) + ([score_note] if score_note else [])
    for note in summary.notes:
        log(f"note: {note}")

    # Ingest and embed.
    previous = read_manifest(out) or {}
    previous_video_sha256 = {
        source["id"]: source.get("metadata", {}).get("original_video_sha256")
        for source in previous.get("sources", [])
    }
    ingested = ingest_all(
        sources,
        config,
        encoder,
        EmbeddingCache(out / ".cache" / "embeddings"),
        musicgen.sampling_rate,
        out,
        summary,
        log,
        previous_video_sha256,
    )

    # Plan: the segments every condition can use, the clips already made, the rest to make.
    ingested = drop_unusable_segments(ingested, conditions, summary, log)
    segments = [segment for source in ingested for segment in source.segments]
    changed = _changed_sources(previous, ingested)
    summary.sources_changed = sorted(changed.items())
    for source_id, what in summary.sources_changed:
        log(f"{source_id}: {what} since the last run; its clips are remade")
    checkpoints: dict[str, str | None] = {"adapter": None, "gan": None}
    for condition in conditions.values():
        checkpoints.update(condition.checkpoints())
    # What the clips were made with: the config and the models' and checkpoints' contents.
    made_with = {
        "config": portable_config(config),
        "musicgen_weights_sha256": musicgen.weights_sha256,
        "encoder_weights_sha256": encoder.weights_sha256,
        "checkpoints": checkpoints,
    }
    finished = reusable_clips(previous, made_with, segments, set(changed), conditions, out, log)
    manifest = _new_manifest(out, config, run, made_with, ingested, summary)
    writer = SetWriter(
        out,
        manifest,
        audio_ops.ClipFormat(
            musicgen.sampling_rate,
            config.audio.channels,
            config.video.segment_seconds,
            config.audio.loudness_lufs,
            config.audio.fade_ms,
        ),
        summary,
    )
    progress = Progress(len(segments) * len(conditions), "clips", "clip")
    pending = plan_clips(segments, conditions, finished, run, writer, progress)
    writer.save()

    # Render what MusicGen generates; match and write (in the writer, clip by clip).
    render_with_musicgen(pending, run, writer, progress)
    progress.close()
    writer.save()
    summary.manifest_problems = (
        schema_problems(manifest) if manifest["clips"] else ["no clips were made"]
    )
    if manifest["clips"]:  # only once the new manifest is on disk
        summary.files_removed = _remove_unlisted_files(out, manifest)
    summary.seconds = time.perf_counter() - started
    return summary


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


def _new_manifest(
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


# --------------------------------------------------------------------------------------------


def load_training_pairs(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    log: Log = print,
    with_score: bool = False,
    musicgen_spec: ModelSpec | None = None,
) -> tuple[LoadedMusicgen, VisualEncoder, list[IngestedSource]]:
    """MusicGen, the visual encoder and the (video, reference audio) segments of `videos`.

    Segments are cut as `generate` cuts them; embeddings are cached in `out/.cache/embeddings`.
    Nothing is written into a stimulus set. Shared by `train-adapter` and `train-gan`.
    `with_score`: slice each source's score to its segments (sources without one are skipped).
    `musicgen_spec`: another MusicGen than the config's (vit_score's melody model).
    """
    torch_device = torch.device(device)
    musicgen = load_musicgen(musicgen_spec or config.musicgen, torch_device)
    encoder = load_visual_encoder(config.encoder, torch_device)
    summary = RunSummary(out)
    ingested = ingest_all(
        discover_sources(videos),
        config,
        encoder,
        EmbeddingCache(out / ".cache" / "embeddings"),
        musicgen.sampling_rate,
        None,
        summary,
        log,
        with_score=with_score,
    )
    return musicgen, encoder, ingested


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
    musicgen, encoder, ingested = load_training_pairs(
        videos,
        out,
        config,
        device,
        log,
        with_score=with_score,
        musicgen_spec=config.vit_score.musicgen if with_score else None,
    )
    examples = []
    for segment in (segment for source in ingested for segment in source.segments):
        prefix = None
        if with_score:
            from synthesis.conditions.vit_score import chroma_prefix, score_chroma

            if segment.score is None or segment.score.note_count == 0:
                log(f"leaving out {segment.id}: no notes in its score window")
                continue
            prefix = chroma_prefix(musicgen, score_chroma(segment.score, musicgen))[0].cpu()
        waveform = torch.from_numpy(segment.reference_audio)[None]
        if musicgen.audio_channels == 1 and waveform.shape[1] != 1:
            waveform = waveform.mean(dim=1, keepdim=True)
        codes = encode_audio_codes(musicgen, waveform)[0].cpu()
        examples.append(TrainingExample(segment.id, segment.embeddings, codes, prefix))
    log(f"training the {condition} adapter on {len(examples)} segments from {len(ingested)} videos")
    shape = AdapterShape(
        encoder.embedding_size,
        musicgen.decoder_width,
        settings.num_tokens,
        settings.hidden_size,
    )
    torch.manual_seed(config.train.seed)
    adapter = VisualAdapter(shape)
    metadata = {
        "condition": condition,
        "musicgen": musicgen.name,
        "musicgen_weights_sha256": musicgen.weights_sha256,
        "encoder": encoder.name,
        "encoder_weights_sha256": encoder.weights_sha256,
        "config": config.name,
        "code_version": code_version(),
        "segments": [example.segment_id for example in examples],
    }
    (out / "train_config.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")

    def report(record: dict[str, Any]) -> None:
        if "epoch" in record:
            log(f"epoch {record['epoch']}: loss {record['train_loss']:.4f}")

    return train_adapter(
        musicgen,
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


def train_gan_on_videos(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    steps: int | None = None,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Trains the gan condition's generator on (video, reference audio) segments.

    The same pairs as `train-adapter` (see `load_training_pairs`). Resumes from
    `out/gan-state.pt` when present. Returns the loss log (one record per step).
    """
    musicgen, encoder, ingested = load_training_pairs(videos, out, config, device, log)
    freeze(musicgen.model)
    freeze(encoder.model)  # embeddings are precomputed; no gradient could reach it anyway
    segments = [segment for source in ingested for segment in source.segments]
    if not segments:
        raise ConfigError(f"no usable (video, reference audio) segments in {videos}")
    video_hashes = {
        source.entry["id"]: source.entry["metadata"]["original_video_sha256"] for source in ingested
    }
    content_keys = {
        segment.id: f"{video_hashes[segment.source_id]}@{segment.start:g}+{segment.duration:g}"
        for segment in segments
    }
    examples = prepare_examples(musicgen, segments, content_keys)
    log(f"training the GAN on {len(examples)} segments from {len(ingested)} videos")
    metadata = {
        "musicgen": musicgen.name,
        "musicgen_weights_sha256": musicgen.weights_sha256,
        "encoder": encoder.name,
        "encoder_weights_sha256": encoder.weights_sha256,
        "config": config.name,
        "code_version": code_version(),
        "videos": videos.resolve().name,  # a name, not this machine's path; segments identify
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    return train_gan(
        musicgen, examples, out, config.gan, encoder.embedding_size, metadata, steps=steps
    )


__all__ = [
    "Conditioning",
    "RunSummary",
    "generate_set",
    "load_training_pairs",
    "train_adapter_on_videos",
    "train_gan_on_videos",
]
