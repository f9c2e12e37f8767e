"""The gan condition: training (losses, resuming, frozen codec), generation, comparison, errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
import struct

import numpy as np
import pytest
import torch

from study_app.stimulus_set import load_stimulus_set
from synthesis.__main__ import main
from synthesis.audio import integrated_loudness, read_wav
from synthesis.conditions import SegmentInput
from synthesis.conditions.gan import gan_shape
from synthesis.config import load_config
from synthesis.gan import GanCheckpointError, GanSynthesizer, LatentGenerator, save_generator
from synthesis.models import ByteTokenizer, LoadedMusicgen, build_tiny_musicgen
from synthesis.pipeline import generate_set
from synthesis.training.gan import prepare_examples, train_gan, training_throughput
from synthesis.video import file_sha256

# Every test here builds or runs a model: left out of `make test-fast`.
pytestmark = pytest.mark.model

EMBEDDING_SIZE = 32  # the tiny ViT's width
LOSS_FIELDS = ("generator", "discriminator", "adversarial", "feature_matching", "reconstruction")


def quiet(_message: str) -> None:
    pass


def tiny_musicgen() -> LoadedMusicgen:
    model = build_tiny_musicgen("musicgen")
    return LoadedMusicgen(model, "musicgen", "tiny", ByteTokenizer(), "0" * 64, True)


def toy_segments(musicgen: LoadedMusicgen, count: int = 4) -> list[SegmentInput]:
    """One-second tones of different pitch, each with its own random 'video' embeddings."""
    rate = musicgen.sampling_rate
    time = np.arange(rate) / rate
    rng = np.random.default_rng(0)
    segments = []
    for index in range(count):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 150 * index) * time)
        segments.append(
            SegmentInput(
                id=f"toy{index}",
                source_id=f"source{index}",
                index=0,
                start=0.0,
                duration=1.0,
                embeddings=rng.standard_normal((4, EMBEDDING_SIZE)).astype(np.float32),
                frames=np.zeros((4, 32, 32, 3), dtype=np.uint8),
                features={},
                reference_audio=tone.astype(np.float32)[None],
                reference_rate=rate,
            )
        )
    return segments


def tiny_gan(**changes):
    return dataclasses.replace(load_config("tiny").gan, **changes)


def losses_only(records: list[dict]) -> list[dict]:
    return [{key: record[key] for key in ("step", *LOSS_FIELDS)} for record in records]


@pytest.mark.slow  # a model run (training, or the pipeline three times)
def test_training_reduces_reconstruction_loss_and_leaves_the_codec_frozen(tmp_path):
    musicgen = tiny_musicgen()
    examples = prepare_examples(musicgen, toy_segments(musicgen))
    before = {name: p.detach().clone() for name, p in musicgen.model.named_parameters()}
    records = train_gan(
        musicgen,
        examples,
        tmp_path,
        tiny_gan(),
        EMBEDDING_SIZE,
        {},
        steps=30,
        show_progress_bar=False,
    )
    reconstruction = [record["reconstruction"] for record in records]
    first, last = np.mean(reconstruction[:5]), np.mean(reconstruction[-5:])
    assert last < 0.7 * first, reconstruction
    for record in records:  # every loss, every step, in the log and finite
        assert all(math.isfinite(record[name]) for name in LOSS_FIELDS), record
    logged = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged] == list(range(1, 31))
    assert losses_only(logged) == losses_only(records)
    # the codec (and the rest of MusicGen) is frozen: no gradients, identical weights
    codec = musicgen.model.audio_encoder
    assert not any(parameter.requires_grad for parameter in codec.parameters())
    for name, parameter in musicgen.model.named_parameters():
        assert parameter.grad is None, name
        assert torch.equal(parameter, before[name]), f"{name} changed: the codec must stay frozen"
    assert (tmp_path / "gan-generator.safetensors").exists()
    assert (tmp_path / "gan-generator-step000020.safetensors").exists()  # checkpoint_every 20


class Interrupted(Exception):
    pass


@pytest.mark.slow  # a model run (training, or the pipeline three times)
def test_same_seed_same_losses_and_resuming_continues_exactly(tmp_path):
    musicgen = tiny_musicgen()
    examples = prepare_examples(musicgen, toy_segments(musicgen))
    settings = tiny_gan(checkpoint_every=3)

    def run(folder: pathlib.Path, gan=settings, steps: int = 6, progress=None) -> list[dict]:
        return train_gan(
            musicgen,
            examples,
            folder,
            gan,
            EMBEDDING_SIZE,
            {},
            steps=steps,
            progress=progress,
            show_progress_bar=False,
        )

    uninterrupted = run(tmp_path / "whole")
    assert losses_only(run(tmp_path / "again")) == losses_only(uninterrupted)
    other_seed = run(tmp_path / "other", dataclasses.replace(settings, seed=1))
    assert losses_only(other_seed) != losses_only(uninterrupted)

    def stop_after_step_5(step) -> None:
        if step.step == 5:
            raise Interrupted  # after the checkpoint of step 3: steps 4 and 5 are lost

    resumed_folder = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run(resumed_folder, progress=stop_after_step_5)
    assert len((resumed_folder / "loss_log.jsonl").read_text().splitlines()) == 5
    resumed = run(resumed_folder)
    assert losses_only(resumed) == losses_only(uninterrupted)
    logged = [
        json.loads(line) for line in (resumed_folder / "loss_log.jsonl").read_text().splitlines()
    ]
    assert [record["step"] for record in logged] == [1, 2, 3, 4, 5, 6]
    whole = torch.load(tmp_path / "whole" / "gan-state.pt", weights_only=True)
    again = torch.load(resumed_folder / "gan-state.pt", weights_only=True)
    for name, tensor in whole["generator"].items():
        assert torch.equal(tensor, again["generator"][name]), name
    # a folder trained on other segments is not silently continued
    with pytest.raises(GanCheckpointError, match="another set of segments"):
        train_gan(musicgen, examples[:3], resumed_folder, settings, EMBEDDING_SIZE, {}, steps=8)


def test_output_length_follows_the_codec_frame_rate_and_the_duration():
    musicgen = tiny_musicgen()
    shape = gan_shape(EMBEDDING_SIZE, musicgen, tiny_gan())
    assert shape.latent_frame_rate == 50 and shape.latent_size == 16
    torch.manual_seed(0)
    generator = LatentGenerator(shape).eval()
    synthesizer = GanSynthesizer(generator, musicgen, "test", {}, lambda clip_id: 0)
    for seconds, visual_frames in ((1.0, 4), (2.5, 10), (0.6, 1)):
        embeddings = np.random.default_rng(1).standard_normal((visual_frames, EMBEDDING_SIZE))
        noise = torch.zeros(1, shape.noise_size, generator.frames_for(seconds))
        latents = generator(torch.from_numpy(embeddings).float()[None], noise)
        assert latents.shape == (1, 16, round(50 * seconds))
        audio = synthesizer.synthesize(embeddings.astype(np.float32), seconds, seed=3)
        assert audio.shape == (1, round(seconds * musicgen.sampling_rate))
        again = synthesizer.synthesize(embeddings.astype(np.float32), seconds, seed=3)
        assert np.array_equal(audio, again)  # the clip's seed fixes its noise


# --------------------------------------------------------------------------------------------
# Through the command line and the pipeline


def gan_config(checkpoint: pathlib.Path | None, conditions: list[str]):
    config = load_config("tiny")
    config.conditions = conditions
    config.gan = dataclasses.replace(
        config.gan,
        checkpoint=None if checkpoint is None else str(checkpoint),
        allow_untrained=False,
    )
    return config


@pytest.fixture(scope="module")
def trained_set(video_folder, tmp_path_factory):
    """train-gan on the two test videos (4 steps), then a set with reference, vit_adapter, gan."""
    import synthesis.training.common

    folder = tmp_path_factory.mktemp("gan")
    encoders = []
    original = synthesis.training.common.load_visual_encoder

    def recording_loader(*args, **kwargs):
        encoder = original(*args, **kwargs)
        before = {name: p.detach().clone() for name, p in encoder.model.named_parameters()}
        encoders.append((encoder, before))
        return encoder

    arguments = ["train-gan", "--pairs", str(video_folder), "--out", str(folder / "checkpoints")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthesis.training.common, "load_visual_encoder", recording_loader)
        code = main([*arguments, "--config", "tiny", "--steps", "4", "--device", "cpu"])
    assert code == 0
    checkpoint = folder / "checkpoints" / "gan-generator.safetensors"
    config = gan_config(checkpoint, ["reference", "vit_adapter", "gan"])
    summary = generate_set(video_folder, folder / "set", config, "cpu", log=quiet)
    return folder, checkpoint, summary, encoders


def test_train_gan_cli_logs_losses_and_keeps_the_encoder_frozen(trained_set):
    folder, checkpoint, _, encoders = trained_set
    logged = [json.loads(line) for line in (folder / "checkpoints" / "loss_log.jsonl").open()]
    assert [record["step"] for record in logged] == [1, 2, 3, 4]
    assert all(set(LOSS_FIELDS) <= set(record) for record in logged)
    assert all(record["segments"] >= 1 and record["seconds"] > 0 for record in logged)
    throughput = training_throughput(logged)
    assert throughput == pytest.approx(
        sum(r["segments"] for r in logged) / sum(r["seconds"] for r in logged)
    )
    sidecar = json.loads(checkpoint.with_suffix(".json").read_text())
    assert sidecar["steps"] == 4 and sidecar["seed"] == 0
    assert len(sidecar["training_segments"]) == 4  # two 1 s segments from each 3 s video
    assert len(encoders) == 1
    encoder, before = encoders[0]
    for name, parameter in encoder.model.named_parameters():
        assert not parameter.requires_grad, name
        assert torch.equal(parameter, before[name]), name


def wav_chunks(path: pathlib.Path) -> list[bytes]:
    data = path.read_bytes()
    chunks, offset = [], 12
    while offset < len(data):
        size = struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        chunks.append(data[offset : offset + 4])
        offset += 8 + size + (size & 1)
    return chunks


def test_gan_clips_match_every_other_condition_and_the_set_imports(trained_set):
    folder, _, summary, _ = trained_set
    out = folder / "set"
    assert summary.clips_failed == [] and summary.manifest_problems == []
    manifest = json.loads((out / "manifest.json").read_text())
    target = manifest["loudness_target_lufs"]
    for segment in manifest["segments"]:
        clips = [clip for clip in manifest["clips"] if clip["segment"] == segment["id"]]
        assert {clip["condition"] for clip in clips} == {"reference", "vit_adapter", "gan"}
        formats = set()
        for clip in clips:
            path = out / clip["path"]
            assert file_sha256(path) == clip["sha256"]
            assert wav_chunks(path) == [b"fmt ", b"data"]
            audio, rate = read_wav(path)
            formats.add((rate, audio.shape, clip["sample_rate"], clip["channels"]))
            assert abs(integrated_loudness(audio, rate) - target) <= 0.5, clip["id"]
            assert abs(clip["loudness_lufs"] - target) <= 0.5
            assert clip["duration"] == segment["duration"]
        assert len(formats) == 1  # same rate, channels and length as the reference
    load_stimulus_set(out)  # the study app's own checks accept the set


def test_gan_clips_record_their_provenance(trained_set):
    folder, checkpoint, _, _ = trained_set
    manifest = json.loads((folder / "set" / "manifest.json").read_text())
    gan_clips = [clip for clip in manifest["clips"] if clip["condition"] == "gan"]
    assert len(gan_clips) == 4
    seeds = set()
    for clip in gan_clips:
        provenance = clip["provenance"]
        for key in ("model", "encoder", "weights_sha256", "seed", "code_version"):
            assert provenance[key] is not None, key
        assert len(provenance["codec_weights_sha256"]) == 64
        gan = provenance["gan"]
        assert gan["checkpoint_sha256"] == file_sha256(checkpoint)
        assert gan["steps"] == 4 and gan["seed"] == 0
        assert gan["training_set"]["segments"] == 4
        assert len(gan["training_set"]["segments_sha256"]) == 64
        seeds.add(provenance["seed"])
    assert len(seeds) == 4  # each clip its own noise


def test_compare_writes_both_conditions_with_finite_metrics(trained_set, capsys):
    folder, _, _, _ = trained_set
    out = folder / "comparison"
    arguments = ["compare", "--set", str(folder / "set"), "--out", str(out)]
    assert main([*arguments, "--conditions", "vit_adapter", "gan"]) == 0
    assert "gan (4 clips)" in capsys.readouterr().out
    with open(out / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["condition"] for row in rows] == ["vit_adapter", "gan"]
    metrics = ("tempo_error_mean", "chroma_similarity_mean", "logmel_distance_mean")
    for row in rows:
        assert row["clips"] == "4"
        for metric in (*metrics, "frechet_distance"):
            assert math.isfinite(float(row[metric])), (row["condition"], metric)
    table = json.loads((out / "comparison.json").read_text())
    assert [entry["condition"] for entry in table["summary"]] == ["vit_adapter", "gan"]
    assert len(table["clips"]) == 8
    for clip in table["clips"]:
        for metric in ("tempo_error", "chroma_similarity", "logmel_distance"):
            assert math.isfinite(clip[metric]), (clip["clip"], metric)
    # a condition the set does not have is named in the error
    assert main([*arguments, "--conditions", "text_bridge"]) == 2
    assert "no clips of ['text_bridge']" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Bad input


def one_segment_config(checkpoint: pathlib.Path | None, allow_untrained: bool = False):
    config = gan_config(checkpoint, ["reference", "gan"])
    config.video = dataclasses.replace(config.video, max_segments_per_source=1)
    config.gan = dataclasses.replace(config.gan, allow_untrained=allow_untrained)
    return config


def test_bad_gan_checkpoints_are_refused_with_clear_errors(video_folder, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "gan-generator.safetensors"
    with pytest.raises(GanCheckpointError, match="does not exist.*train-gan"):
        generate_set(video_folder, tmp_path / "a", one_segment_config(missing), "cpu", quiet)

    musicgen = tiny_musicgen()
    right = gan_shape(EMBEDDING_SIZE, musicgen, tiny_gan())
    wrong_shapes = {
        "embedding_size 48 (this run: 32)": dataclasses.replace(right, embedding_size=48),
        "latent_size 128 (this run: 16)": dataclasses.replace(right, latent_size=128),
        "sampling_rate 32000 (this run: 16000)": dataclasses.replace(right, sampling_rate=32000),
    }
    for index, (message, shape) in enumerate(wrong_shapes.items()):
        path = save_generator(LatentGenerator(shape), tmp_path / f"wrong{index}.safetensors", {})
        with pytest.raises(
            GanCheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")
        ):
            generate_set(video_folder, tmp_path / "b", one_segment_config(path), "cpu", quiet)
    # same sizes, latents of another codec (its weights' hash differs)
    other_codec = save_generator(
        LatentGenerator(right), tmp_path / "other.safetensors", {"codec_weights_sha256": "f" * 64}
    )
    with pytest.raises(GanCheckpointError, match="another codec"):
        generate_set(video_folder, tmp_path / "c", one_segment_config(other_codec), "cpu", quiet)

    # the command line turns these into a message and exit code 2, not a traceback
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(one_segment_config(missing).to_dict()))
    arguments = ["generate", "--videos", str(video_folder), "--out", str(tmp_path / "d")]
    assert main([*arguments, "--config", str(config_path), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_without_a_checkpoint_gan_clips_fail_unless_untrained_is_allowed(video_folder, tmp_path):
    summary = generate_set(video_folder, tmp_path / "a", one_segment_config(None), "cpu", quiet)
    assert {reason for _, reason in summary.clips_failed} == {
        "no GAN checkpoint configured (gan.checkpoint)"
    }
    smoke = one_segment_config(None, allow_untrained=True)
    summary = generate_set(video_folder, tmp_path / "b", smoke, "cpu", quiet)
    assert summary.clips_failed == [] and summary.manifest_problems == []
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    gan_clips = [clip for clip in manifest["clips"] if clip["condition"] == "gan"]
    assert len(gan_clips) == 2
    assert all(clip["provenance"]["gan"]["untrained"].startswith("untrained") for clip in gan_clips)
    load_stimulus_set(tmp_path / "b")


# --------------------------------------------------------------------------------------------
# A set must be movable to another machine


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.items() for part in item for text in strings_in(part)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


def test_no_path_of_this_machine_in_the_manifest(trained_set, video_folder, tmp_path, monkeypatch):
    from synthesis.adapter import AdapterShape, VisualAdapter, save_adapter

    _, gan_checkpoint, _, _ = trained_set
    videos = tmp_path / "inputs" / "videos"
    videos.mkdir(parents=True)
    for video in video_folder.glob("*.mp4"):
        (videos / video.name).write_bytes(video.read_bytes())
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    # a config file beside its adapter checkpoint (relative path) and an absolute GAN path
    project = tmp_path / "project"
    adapter = VisualAdapter(AdapterShape(EMBEDDING_SIZE, tiny_musicgen().decoder_width, 4, 32))
    save_adapter(adapter, project / "checkpoints" / "adapter.safetensors", {"note": "untrained"})
    config = gan_config(gan_checkpoint, ["reference", "vit_adapter", "mismatched", "gan"])
    data = config.to_dict()
    data["adapter"].update(checkpoint="checkpoints/adapter.safetensors", allow_untrained=False)
    (project / "config.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sets" / "portable"
    code = main(
        ["generate", "--videos", str(videos), "--out", str(out), "--config"]
        + [str(project / "config.json"), "--device", "cpu", "--threads", "1"]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [entry["source"] for entry in manifest["generator"]["skipped_sources"]] == ["corrupt"]
    assert manifest["generator"]["torch_threads"] == 1
    machine = {str(tmp_path), str(pathlib.Path.home()), str(pathlib.Path.cwd())}
    machine |= {str(path) for path in (video_folder, gan_checkpoint.parent)}
    for text in strings_in(manifest):
        assert not text.startswith(("/", "\\")) and ":\\" not in text, text
        assert not any(root in text for root in machine), text
    # the files are named, and identified by their content
    checkpoints = manifest["generator"]["checkpoints"]
    assert checkpoints["gan"] == f"gan-generator.safetensors sha256:{file_sha256(gan_checkpoint)}"
    assert checkpoints["adapter"].startswith("adapter.safetensors sha256:")
    assert manifest["generator"]["config"]["gan"]["checkpoint"] == "gan-generator.safetensors"
    gan_clip = next(clip for clip in manifest["clips"] if clip["condition"] == "gan")
    assert gan_clip["provenance"]["gan"]["training_set"]["videos"] == video_folder.name
    load_stimulus_set(out)
