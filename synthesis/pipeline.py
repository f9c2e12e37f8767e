"""The pipeline: videos -> segments -> conditions -> loudness-matched clips + manifest.

`generate_set` is resumable: the manifest is rewritten after every batch, and a clip already in
it whose file still matches its sha256 is not made again. A source that cannot be used (corrupt,
no audio, shorter than a segment) is reported and skipped; the others proceed.
"""

from __future__ import annotations

import datetime
import hashlib
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
from synthesis.adapter import (
    AdapterShape,
    TrainingExample,
    VisualAdapter,
    load_adapter,
    train_adapter,
)
from synthesis.conditions import (
    ClipPlan,
    ConditionSkipped,
    RunContext,
    SegmentInput,
    get_condition,
    mismatch_partner,
)
from synthesis.config import ConfigError, SynthesisConfig
from synthesis.decoding import DecodingSettings, StaticCacheDecoder
from synthesis.encoders import (
    EmbeddingCache,
    VisualEncoder,
    load_clip_labeller,
    load_visual_encoder,
)
from synthesis.features import (
    MAX_BPM,
    MIN_BPM,
    intensity_scale,
    measurable_tempo_range,
    motion_energy,
    segment_features,
)
from synthesis.gan import (
    GanSynthesizer,
    check_generator_fits,
    codec_weights_sha256,
    freeze,
    gan_shape,
    load_generator,
    prepare_examples,
    train_gan,
    untrained_generator,
)
from synthesis.manifest import code_version, read_manifest, schema_problems, write_manifest
from synthesis.models import (
    Conditioning,
    LoadedMusicgen,
    decode_audio_batch,
    encode_audio_codes,
    load_musicgen,
    state_dict_sha256,
)
from synthesis.progress import Progress
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


def clip_seed(base_seed: int, clip_id: str) -> int:
    """Each clip's own seed, so its audio does not depend on batching or on resuming."""
    digest = hashlib.sha256(f"{base_seed}:{clip_id}".encode()).hexdigest()
    return int(digest[:8], 16)


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
) -> IngestedSource:
    """Frames, embeddings, motion features and reference audio of every segment of a source.

    With a `set_folder`, also writes the muted copy of the video (kept when the set's last run
    recorded the same `previous_video_sha256`) and copies the score into it. Raises VideoError
    for a corrupt or truncated video, a missing audio track or a too-short video.
    """
    video_cfg = config.video
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
    if set_folder is not None:
        muted = set_folder / entry["video"]
        # A video replaced under the same name must replace its muted copy too.
        if not muted.exists() or previous_video_sha256 != video_sha:
            write_muted_copy(source.video, muted)
        entry["video_sha256"] = file_sha256(muted)
        if source.score is not None:
            score = set_folder / "scores" / source.score.name
            score.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.score, score)
            entry["score"] = f"scores/{source.score.name}"
    entry["metadata"] = metadata
    return IngestedSource(entry, segments, entries)


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
                )
            )
            summary.sources_used.append(source.id)
        except VideoError as error:
            summary.sources_skipped.append((source.id, str(error)))
            log(f"skipping {source.id}: {error}")
        progress.update()
    progress.close()
    return ingested


# --------------------------------------------------------------------------------------------


def _load_adapter_for_run(
    config: SynthesisConfig, encoder: VisualEncoder, musicgen: LoadedMusicgen
) -> tuple[VisualAdapter | None, str | None, str]:
    """(adapter, provenance label, why absent)."""
    if config.adapter.checkpoint:
        path = pathlib.Path(config.adapter.checkpoint)
        if not path.is_file() or not path.with_suffix(".json").is_file():
            raise ConfigError(
                f"adapter checkpoint {path} (or its .json sidecar) does not exist: train one with "
                "`python -m synthesis train-adapter` and point adapter.checkpoint at "
                "its adapter.safetensors"
            )
        adapter, sidecar = load_adapter(path)
        shape = adapter.shape
        if (
            shape.embedding_size != encoder.embedding_size
            or shape.decoder_width != musicgen.decoder_width
        ):
            raise ConfigError(
                f"adapter {path} expects embeddings of {shape.embedding_size} and a decoder of "
                f"{shape.decoder_width}; this config has {encoder.embedding_size} and "
                f"{musicgen.decoder_width}"
            )
        label = f"{path.name} sha256:{file_sha256(path)}"
        return adapter.to(musicgen.device, musicgen.dtype), label, ""
    if config.adapter.allow_untrained:
        torch.manual_seed(config.generation.seed)
        shape = AdapterShape(
            encoder.embedding_size,
            musicgen.decoder_width,
            config.adapter.num_tokens,
            config.adapter.hidden_size,
        )
        adapter = VisualAdapter(shape).eval().to(musicgen.device, musicgen.dtype)
        return (
            adapter,
            f"untrained random init (seed {config.generation.seed}), smoke test only",
            "",
        )
    return None, None, "no adapter checkpoint configured (adapter.checkpoint)"


def _load_gan_for_run(
    config: SynthesisConfig,
    encoder: VisualEncoder,
    musicgen: LoadedMusicgen,
    version: str,
) -> tuple[GanSynthesizer | None, str]:
    """(the gan condition's generator with the frozen codec, why absent).

    A configured checkpoint that is missing or was made for another encoder or codec stops the
    run with a GanCheckpointError (a ConfigError) naming what is wrong.
    """
    expected = gan_shape(encoder.embedding_size, musicgen, config.gan)
    codec_sha = codec_weights_sha256(musicgen)
    freeze(musicgen.model)
    provenance: dict[str, Any] = {
        "model": musicgen.name,
        "model_family": musicgen.family,
        "weights_sha256": musicgen.weights_sha256,
        "codec": f"EnCodec of {musicgen.name} (frozen decoder, continuous latents)",
        "codec_weights_sha256": codec_sha,
        "encoder": encoder.name,
        "encoder_weights_sha256": encoder.weights_sha256,
        "guidance": None,
        "prompt": None,
        "adapter": None,
        "code_version": version,
        "decoder": "frozen EnCodec decoder on generated continuous latents (synthesis.gan)",
    }
    if config.gan.checkpoint:
        path = pathlib.Path(config.gan.checkpoint)
        generator, sidecar = load_generator(path)
        check_generator_fits(generator.shape, expected, sidecar, codec_sha, str(path))
        checkpoint_sha = file_sha256(path)
        label = f"{path.name} sha256:{checkpoint_sha}"
        # the folder's name only: older sidecars hold the training machine's path
        trained_on = pathlib.PurePath(sidecar["videos"]).name if sidecar.get("videos") else None
        provenance["gan"] = {
            "checkpoint": path.name,
            "checkpoint_sha256": checkpoint_sha,
            "steps": sidecar.get("steps"),
            "seed": sidecar.get("seed"),
            "training_set": {
                "videos": trained_on,
                "segments": len(sidecar.get("training_segments", [])),
                "segments_sha256": sidecar.get("training_set_sha256"),
            },
        }
    elif config.gan.allow_untrained:
        generator = untrained_generator(expected, config.generation.seed)
        label = f"untrained random init (seed {config.generation.seed}), smoke test only"
        provenance["gan"] = {
            "checkpoint": None,
            "checkpoint_sha256": None,
            "steps": 0,
            "seed": config.generation.seed,
            "training_set": None,
            "untrained": label,
        }
    else:
        return None, "no GAN checkpoint configured (gan.checkpoint)"
    provenance["gan"]["generator_weights_sha256"] = state_dict_sha256(generator)
    generator = generator.to(musicgen.device)

    def seed_for(clip_id: str) -> int:
        return clip_seed(config.generation.seed, clip_id)

    return GanSynthesizer(generator, musicgen, label, provenance, seed_for), ""


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
    for section in ("adapter", "gan"):
        if data[section].get("checkpoint"):
            data[section]["checkpoint"] = pathlib.PurePath(data[section]["checkpoint"]).name
    for section in ("encoder", "musicgen", "clip"):
        path = data[section].get("path")
        if path and (pathlib.Path(path).is_absolute() or pathlib.Path(path).exists()):
            data[section]["path"] = pathlib.PurePath(path).name
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
            )
            if old.get(key) != new.get(key)
        ]
        if what:
            changed[source.entry["id"]] = " and ".join(what) + " replaced by other content"
    return changed


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
    torch_device = torch.device(device)
    musicgen = load_musicgen(config.musicgen, torch_device)  # missing weights stop us here
    encoder = load_visual_encoder(config.encoder, torch_device)
    decoder_config = musicgen.model.config.decoder
    positions_needed = (
        musicgen.frames_for(config.video.segment_seconds) + decoder_config.num_codebooks
    )
    if positions_needed > decoder_config.max_position_embeddings:
        raise ConfigError(
            f"{config.video.segment_seconds:g} s segments need {positions_needed} decoder "
            f"positions; {musicgen.name} has {decoder_config.max_position_embeddings} (about 30 s "
            "for the released MusicGen models): use shorter segments"
        )
    version = code_version()
    # Checkpoints before the videos: a wrong path must stop the run before an hour of ingest.
    adapter, adapter_label, adapter_missing = None, None, ""
    if {"vit_adapter", "mismatched"} & set(config.conditions):
        adapter, adapter_label, adapter_missing = _load_adapter_for_run(config, encoder, musicgen)
    gan, gan_missing = None, ""
    if "gan" in config.conditions:
        gan, gan_missing = _load_gan_for_run(config, encoder, musicgen, version)
    labeller = (
        load_clip_labeller(config.clip, torch_device)
        if "text_bridge" in config.conditions
        else None
    )
    out.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(out / ".cache" / "embeddings")
    clip_rate = musicgen.sampling_rate
    summary.notes = tempo_notes(config)
    for note in summary.notes:
        log(f"note: {note}")

    previous = read_manifest(out) or {}
    previous_video_sha256 = {
        source["id"]: source.get("metadata", {}).get("original_video_sha256")
        for source in previous.get("sources", [])
    }
    ingested = ingest_all(
        discover_sources(videos),
        config,
        encoder,
        cache,
        clip_rate,
        out,
        summary,
        log,
        previous_video_sha256,
    )
    all_segments = [segment for source in ingested for segment in source.segments]
    changed = _changed_sources(previous, ingested)
    summary.sources_changed = sorted(changed.items())
    for source_id, what in summary.sources_changed:
        log(f"{source_id}: {what} since the last run; its clips are remade")

    context = RunContext(
        musicgen,
        encoder.name,
        encoder.weights_sha256,
        adapter,
        adapter_label,
        labeller,
        config.labels,
        all_segments,
        gan=gan,
        gan_missing=gan_missing,
    )

    # What the clips were made with: the config and the models' and checkpoints' contents.
    made_with = {
        "config": portable_config(config),
        "musicgen_weights_sha256": musicgen.weights_sha256,
        "encoder_weights_sha256": encoder.weights_sha256,
        "checkpoints": {"adapter": adapter_label, "gan": gan.label if gan else None},
    }
    previous_generator = previous.get("generator", {})
    previous_made_with = {
        "config": previous_generator.get("config"),
        "musicgen_weights_sha256": previous_generator.get("musicgen", {}).get("weights_sha256"),
        "encoder_weights_sha256": previous_generator.get("encoder", {}).get("weights_sha256"),
        "checkpoints": previous_generator.get("checkpoints"),
    }
    finished_clips = {}
    if previous and previous_made_with != made_with:
        # Mixing clips made under two configs would break the set's comparability.
        log("the set was made with another config, model or checkpoint: remaking every clip")
        previous = {}
    segments_by_id = {segment.id: segment for segment in all_segments}
    changed_segments = {segment.id for segment in all_segments if segment.source_id in changed}
    for clip in previous.get("clips", []):
        clip_path = out / clip["path"]
        segment = segments_by_id.get(clip["segment"])
        partner = (clip.get("provenance") or {}).get("mismatched_with")
        if segment is None or clip["segment"] in changed_segments or partner in changed_segments:
            continue  # its source (or, for mismatched, its partner's source) has new content
        if partner is not None:
            try:
                if mismatch_partner(segment, all_segments).id != partner:
                    continue  # sources were added or removed: another partner now
            except ConditionSkipped:
                continue
        if clip_path.exists() and file_sha256(clip_path) == clip["sha256"]:
            finished_clips[clip["id"]] = clip

    threads = torch.get_num_threads()
    manifest: dict[str, Any] = {
        "schema_version": "1.0",
        "name": safe_id(out.name)[:64],
        "description": config.description or f"made by sightsound synthesis, config {config.name}",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loudness_target_lufs": config.audio.loudness_lufs,
        "fit_for_studies": config.fit_for_studies,
        "generator": {
            "tool": "sightsound synthesis",
            "code_version": version,
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
            "device": str(torch_device),
            "torch_threads": threads,
            "torch_version": torch.__version__,
            "notes": summary.notes,
            "skipped_sources": [],
        },
        "sources": [source.entry for source in ingested],
        "segments": [entry for source in ingested for entry in source.segment_entries],
        "clips": [],
    }
    clip_format_for = {
        segment.id: audio_ops.ClipFormat(
            clip_rate,
            config.audio.channels,
            segment.duration,
            config.audio.loudness_lufs,
            config.audio.fade_ms,
        )
        for segment in all_segments
    }
    clips_by_id: dict[str, dict[str, Any]] = {}

    def save() -> None:
        manifest["clips"] = [clips_by_id[key] for key in sorted(clips_by_id)]
        manifest["generator"]["skipped_sources"] = [
            {"source": source, "reason": reason} for source, reason in summary.sources_skipped
        ]
        manifest["generator"]["failed_clips"] = [
            {"clip": clip, "reason": reason} for clip, reason in summary.clips_failed
        ]
        if manifest["clips"]:  # the schema wants at least one clip
            write_manifest(out, manifest)

    def finish_and_write(
        item_id: str,
        segment: SegmentInput,
        condition: str,
        audio: np.ndarray,
        rate: int,
        provenance: dict[str, Any] | None,
    ) -> None:
        clip_format = clip_format_for[segment.id]
        try:
            finished = audio_ops.finish_clip(audio, rate, clip_format)
        except audio_ops.LoudnessError as error:
            summary.clips_failed.append((item_id, str(error)))
            return
        relative = f"audio/{item_id}.wav"
        audio_ops.write_wav(out / relative, finished, clip_format.sample_rate)
        clips_by_id[item_id] = _clip_entry(
            item_id,
            segment,
            condition,
            relative,
            file_sha256(out / relative),
            finished,
            clip_format,
            provenance,
        )
        summary.clips_written += 1

    pending: list[PendingClip] = []
    total = len(all_segments) * len(config.conditions)
    progress = Progress(total, "clips", "clip")
    for segment in all_segments:
        for name in config.conditions:
            clip_id = f"{segment.id}.{name}"
            if clip_id in finished_clips:
                clips_by_id[clip_id] = finished_clips[clip_id]
                summary.clips_reused += 1
                progress.update()
                continue
            condition = get_condition(name)
            if condition.generates and adapter is None and name in ("vit_adapter", "mismatched"):
                summary.clips_failed.append((clip_id, adapter_missing))
                progress.update()
                continue
            planning_started = time.perf_counter()
            try:
                plan = condition.plan(segment, context)
            except ConditionSkipped as error:
                summary.clips_failed.append((clip_id, str(error)))
                progress.update()
                continue
            if plan.audio is not None:
                # Finished audio (the reference; gan, which makes its own through the codec):
                # the same finishing chain as MusicGen's clips below.
                provenance = (plan.provenance or None) if condition.generates else None
                if condition.generates:
                    provenance = {**(provenance or {}), "torch_threads": threads}
                    summary.audio_seconds_generated += segment.duration
                    summary.generation_seconds += time.perf_counter() - planning_started
                finish_and_write(clip_id, segment, name, plan.audio, plan.audio_rate, provenance)
                progress.update()
                continue
            pending.append(
                PendingClip(
                    clip_id,
                    segment,
                    name,
                    plan,
                    musicgen.frames_for(segment.duration),
                    clip_seed(config.generation.seed, clip_id),
                )
            )
    save()

    generation = config.generation
    if pending and generation.decoder == "audiocraft":
        from synthesis.backends import require_audiocraft

        require_audiocraft()  # raises with installation advice; generation below needs transformers
    decoder = (
        StaticCacheDecoder(
            musicgen.model.decoder,
            DecodingSettings(
                generation.guidance_scale,
                generation.do_sample,
                generation.temperature,
                generation.top_k,
                generation.compile,
            ),
        )
        if pending
        else None
    )
    for batch in _batches(pending, generation.batch_size, musicgen.family):
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
        for item, waveform_tensor in zip(batch, waveforms, strict=True):
            waveform = waveform_tensor.numpy()
            provenance = {
                "model": musicgen.name,
                "model_family": musicgen.family,
                "weights_sha256": musicgen.weights_sha256,
                "seed": item.seed,
                "guidance": generation.guidance_scale,
                "code_version": version,
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
            finish_and_write(
                item.clip_id,
                item.segment,
                item.condition,
                waveform,
                musicgen.sampling_rate,
                provenance,
            )
            summary.audio_seconds_generated += item.segment.duration
            progress.update()
        summary.generation_seconds += time.perf_counter() - batch_started
        save()
    progress.close()
    save()
    summary.manifest_problems = (
        schema_problems(manifest) if manifest["clips"] else ["no clips were made"]
    )
    if manifest["clips"]:  # only once the new manifest is on disk
        summary.files_removed = _remove_unlisted_files(out, manifest)
    summary.seconds = time.perf_counter() - started
    return summary


# --------------------------------------------------------------------------------------------


def load_training_pairs(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    log: Log = print,
) -> tuple[LoadedMusicgen, VisualEncoder, list[IngestedSource]]:
    """MusicGen, the visual encoder and the (video, reference audio) segments of `videos`.

    Segments are cut as `generate` cuts them; embeddings are cached in `out/.cache/embeddings`.
    Nothing is written into a stimulus set. Shared by `train-adapter` and `train-gan`.
    """
    torch_device = torch.device(device)
    musicgen = load_musicgen(config.musicgen, torch_device)
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
    )
    return musicgen, encoder, ingested


def train_adapter_on_videos(
    videos: pathlib.Path,
    out: pathlib.Path,
    config: SynthesisConfig,
    device: str = "cpu",
    epochs: int | None = None,
    log: Log = print,
) -> list[float]:
    """Trains the vit_adapter on (video, reference audio) segments; checkpoints go to `out`."""
    musicgen, encoder, ingested = load_training_pairs(videos, out, config, device, log)
    examples = []
    for segment in (segment for source in ingested for segment in source.segments):
        waveform = torch.from_numpy(segment.reference_audio)[None]
        if musicgen.audio_channels == 1 and waveform.shape[1] != 1:
            waveform = waveform.mean(dim=1, keepdim=True)
        codes = encode_audio_codes(musicgen, waveform)[0].cpu()
        examples.append(TrainingExample(segment.id, segment.embeddings, codes))
    log(f"training on {len(examples)} segments from {len(ingested)} videos")
    shape = AdapterShape(
        encoder.embedding_size,
        musicgen.decoder_width,
        config.adapter.num_tokens,
        config.adapter.hidden_size,
    )
    torch.manual_seed(config.train.seed)
    adapter = VisualAdapter(shape)
    metadata = {
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
