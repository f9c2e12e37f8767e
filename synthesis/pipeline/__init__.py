"""The pipeline: videos -> segments -> conditions -> loudness-matched clips + manifest.

`generate_set` (here) reads as its stages, one module each after the first: load the run's
shared models and each condition's own (here: checkpoints are checked before any video is read),
`ingest` (decode, embed, motion features, score slices), `plan` (drop segments a condition
cannot use, reuse finished clips, ask each condition for its clip), `render` (MusicGen's
batches), then `write` (one finishing chain for every clip, the manifest rewritten after every
batch); `summary` is what the run reports. It is resumable: a clip already in the manifest
whose file still matches its sha256 is not made again. A source that cannot be used (corrupt, no
audio, shorter than a segment, no score when a condition needs one) is reported and skipped; the
others proceed. What is particular to a condition lives in its module under
synthesis/conditions/; training is in synthesis/training/.
"""

from __future__ import annotations

import pathlib
import time

import torch

from synthesis import audio as audio_ops
from synthesis.conditions import RunSetup, load_conditions
from synthesis.config import SynthesisConfig, portable_config
from synthesis.encoders import EmbeddingCache, load_visual_encoder
from synthesis.manifest import code_version, read_manifest, schema_problems
from synthesis.models import check_segment_fits, load_musicgen
from synthesis.pipeline.ingest import (
    ingest_all,
    tempo_notes,
    without_unusable_score_conditions,
)
from synthesis.pipeline.plan import (
    changed_sources,
    drop_unusable_segments,
    plan_clips,
    reusable_clips,
)
from synthesis.pipeline.render import render_with_musicgen
from synthesis.pipeline.summary import Log, RunSummary
from synthesis.pipeline.write import SetWriter, new_manifest, remove_unlisted_files
from synthesis.progress import Progress
from synthesis.video import discover_sources


def load_run_models(config: SynthesisConfig, device: str) -> RunSetup:
    """The run's shared models: MusicGen (its codec's rate is the set's) and the visual encoder.

    Missing weights stop the run here, before anything is read or written.
    """
    torch_device = torch.device(device)
    musicgen = load_musicgen(config.musicgen, torch_device)
    encoder = load_visual_encoder(config.encoder, torch_device)
    check_segment_fits(musicgen, config.video.segment_seconds)
    return RunSetup(config, torch_device, musicgen, encoder, code_version())


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
    changed = changed_sources(previous, ingested)
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
    manifest = new_manifest(out, config, run, made_with, ingested, summary)
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
        summary.files_removed = remove_unlisted_files(out, manifest)
    summary.seconds = time.perf_counter() - started
    return summary


__all__ = ["RunSummary", "generate_set", "load_run_models"]
