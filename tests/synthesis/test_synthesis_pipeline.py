"""End to end: generated videos -> tiny models -> a stimulus set that the study app accepts."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import struct

import av
import numpy as np
import pytest

from study_app.stimulus_set import load_stimulus_set
from synthesis.audio import integrated_loudness, read_wav
from synthesis.config import load_config
from synthesis.manifest import schema_problems
from synthesis.pipeline import generate_set
from synthesis.video import file_sha256

# Every test here builds or runs a model: left out of `make test-fast`.
pytestmark = pytest.mark.model

MUSICGEN_CONDITIONS = ("vit_adapter", "text_bridge", "mismatched", "vit_score")
SCORE_CONDITIONS = ("score_render", "score_diffusion")  # the tiny config's other conditions


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_set(video_folder, tmp_path_factory):
    from synthesis.config import load_config

    out = tmp_path_factory.mktemp("sets") / "tiny-set"
    summary = generate_set(video_folder, out, load_config("tiny"), "cpu", log=quiet)
    return out, summary


def wav_chunks(path: pathlib.Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    chunks, offset = [], 12
    while offset < len(data):
        name, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        chunks.append(name)
        offset += 8 + size + (size & 1)
    return chunks


def test_set_is_complete_and_valid(tiny_set):
    out, summary = tiny_set
    assert summary.sources_skipped == []
    assert summary.clips_failed == []
    assert summary.manifest_problems == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert schema_problems(manifest) == []
    assert manifest["fit_for_studies"] is False
    assert len(manifest["sources"]) == 2
    assert len(manifest["segments"]) == 4  # two 1 s segments from each 3 s video
    conditions = {clip["condition"] for clip in manifest["clips"]}
    assert conditions == {"reference", *MUSICGEN_CONDITIONS, *SCORE_CONDITIONS}
    assert len(manifest["clips"]) == 28  # 4 segments x 7 conditions
    # the lead's loader (hashes, paths inside the set, per-segment format) accepts it
    load_stimulus_set(out)


def test_clips_of_a_segment_share_format_and_loudness(tiny_set):
    out, _ = tiny_set
    manifest = json.loads((out / "manifest.json").read_text())
    target = manifest["loudness_target_lufs"]
    segment_ids = {segment["id"] for segment in manifest["segments"]}
    for segment_id in segment_ids:
        clips = [clip for clip in manifest["clips"] if clip["segment"] == segment_id]
        assert len(clips) == 7
        shapes = set()
        for clip in clips:
            path = out / clip["path"]
            assert file_sha256(path) == clip["sha256"]
            assert wav_chunks(path) == [b"fmt ", b"data"]
            audio, rate = read_wav(path)
            shapes.add((rate, audio.shape))
            measured = integrated_loudness(audio, rate)
            assert abs(measured - target) <= 0.5, (clip["id"], measured)
            assert abs(clip["loudness_lufs"] - target) <= 0.5
            assert np.abs(audio).max() < 1.0
        assert len(shapes) == 1  # same rate, channels and sample count


def test_manifest_records_provenance_and_features(tiny_set):
    out, _ = tiny_set
    manifest = json.loads((out / "manifest.json").read_text())
    for clip in manifest["clips"]:
        if clip["condition"] == "reference":
            continue
        provenance = clip["provenance"]
        for key in ("model", "weights_sha256", "code_version"):
            assert provenance[key] is not None, (clip["id"], key)
        assert len(provenance["weights_sha256"]) == 64
        if clip["condition"] in SCORE_CONDITIONS:  # from the score alone: no video, no guidance
            assert provenance["encoder"] is None and provenance["guidance"] is None
            assert len(provenance["score_sha256"]) == 64
            assert provenance["score_window"]["end"] - provenance["score_window"]["start"] == 1
            continue
        for key in ("encoder", "seed", "guidance"):
            assert provenance[key] is not None, (clip["id"], key)
        if clip["condition"] == "vit_score":
            assert provenance["melody"].startswith("score chroma")
            assert len(provenance["score_sha256"]) == 64
        if clip["condition"] == "text_bridge":
            assert provenance["prompt"].endswith(("tempo", "BPM"))
        else:
            assert provenance["adapter"].startswith("untrained")
        if clip["condition"] == "mismatched":
            partner = provenance["mismatched_with"]
            assert partner.split(".")[0] != clip["segment"].split(".")[0]
    for segment in manifest["segments"]:
        features = segment["features"]
        assert features["feature_rate_hz"] == 10.0
        assert len(features["onset_envelope"]) == len(features["intensity"]) == 10
    for source in manifest["sources"]:
        video = out / source["video"]
        assert file_sha256(video) == source["video_sha256"]
        import av

        with av.open(str(video)) as container:
            assert len(container.streams.audio) == 0  # the copy in the set is muted
            assert len(container.streams.video) == 1


def test_resume_skips_finished_clips(tiny_set, video_folder):
    from synthesis.config import load_config

    out, _ = tiny_set
    before = {path.name: path.stat().st_mtime_ns for path in (out / "audio").iterdir()}
    removed = out / "audio" / "perf_b.s001.vit_adapter.wav"
    removed.unlink()
    summary = generate_set(video_folder, out, load_config("tiny"), "cpu", log=quiet)
    assert summary.clips_reused == 27
    assert summary.clips_written == 1
    after = {path.name: path.stat().st_mtime_ns for path in (out / "audio").iterdir()}
    unchanged = [name for name in before if name != removed.name]
    assert all(before[name] == after[name] for name in unchanged)
    load_stimulus_set(out)


def small_config(seed: int = 0):
    from synthesis.config import load_config

    config = load_config("tiny")
    config.conditions = ["reference", "vit_adapter"]
    config.video = dataclasses.replace(config.video, max_segments_per_source=1)
    config.generation = dataclasses.replace(config.generation, seed=seed)
    return config


def generated_hashes(out: pathlib.Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {c["id"]: c["sha256"] for c in manifest["clips"] if c["condition"] != "reference"}


def test_same_seed_gives_identical_clips(video_folder, tmp_path):
    first = generate_set(video_folder, tmp_path / "one", small_config(), "cpu", log=quiet)
    second = generate_set(video_folder, tmp_path / "two", small_config(), "cpu", log=quiet)
    other = generate_set(video_folder, tmp_path / "three", small_config(seed=5), "cpu", log=quiet)
    assert first.clips_written == second.clips_written == other.clips_written == 4
    hashes = generated_hashes(tmp_path / "one")
    assert len(hashes) == 2
    assert hashes == generated_hashes(tmp_path / "two")
    assert set(hashes.values()).isdisjoint(generated_hashes(tmp_path / "three").values())
    # resuming with the same config reuses everything; another config remakes everything
    same = generate_set(video_folder, tmp_path / "two", small_config(), "cpu", log=quiet)
    assert (same.clips_reused, same.clips_written) == (4, 0)
    changed = generate_set(video_folder, tmp_path / "one", small_config(seed=5), "cpu", log=quiet)
    assert (changed.clips_reused, changed.clips_written) == (0, 4)
    assert generated_hashes(tmp_path / "one") == generated_hashes(tmp_path / "three")


def test_bad_videos_are_reported_and_skipped(tmp_path, video_maker):
    videos = tmp_path / "videos"
    video_maker(videos / "good.mp4", seconds=2.5)
    video_maker(videos / "silent.mp4", seconds=2.5, audio=False)
    video_maker(videos / "short.mp4", seconds=0.6)
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    config = small_config()
    config.conditions = ["reference"]
    summary = generate_set(videos, tmp_path / "set", config, "cpu", log=quiet)
    skipped = dict(summary.sources_skipped)
    assert summary.sources_used == ["good"]
    assert set(skipped) == {"corrupt", "silent", "short"}
    assert "no audio" in skipped["silent"]
    assert "shorter than one" in skipped["short"]
    assert "corrupt" in skipped and skipped["corrupt"]
    assert summary.manifest_problems == []
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert [source["id"] for source in manifest["sources"]] == ["good"]
    assert {entry["source"] for entry in manifest["generator"]["skipped_sources"]} == set(skipped)
    load_stimulus_set(tmp_path / "set")


def test_urmp_layout_uses_the_mix_and_keeps_the_score(tmp_path, video_maker, tone_wav_maker):
    piece = tmp_path / "urmp" / "01_Jupiter_vn_vc"
    video_maker(piece / "Vid_01_Jupiter_vn_vc.mp4", seconds=2.5, audio=False)
    # URMP's mix is a WAV next to the (silent) video; write one with a distinctive tone
    mix = piece / "AuMix_01_Jupiter_vn_vc.wav"
    tone_wav_maker(mix, seconds=2.5, hz=440.0)
    shutil.copyfile(mix, piece / "AuSep_1_vn_01_Jupiter.wav")
    (piece / "Sco_01_Jupiter_vn_vc.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00`")
    config = small_config()
    config.conditions = ["reference"]
    out = tmp_path / "set"
    summary = generate_set(tmp_path / "urmp", out, config, "cpu", log=quiet)
    assert summary.sources_used == ["01_Jupiter_vn_vc"]
    manifest = json.loads((out / "manifest.json").read_text())
    source = manifest["sources"][0]
    assert source["score"] == "scores/Sco_01_Jupiter_vn_vc.mid"
    assert (out / source["score"]).read_bytes() == (piece / "Sco_01_Jupiter_vn_vc.mid").read_bytes()
    assert source["metadata"]["piece"] == "Jupiter"
    assert source["metadata"]["instrument"] == "violin, cello"
    assert source["metadata"]["tracks"] == ["AuSep_1_vn_01_Jupiter.wav"]
    # the reference is the mix (440 Hz), although the video itself has no audio
    audio, clip_rate = read_wav(out / manifest["clips"][0]["path"])
    spectrum = np.abs(np.fft.rfft(audio[0]))
    assert abs(np.argmax(spectrum) * clip_rate / len(audio[0]) - 440) < 5
    load_stimulus_set(out)


def test_cli_generate_with_a_yaml_config(video_folder, tmp_path, capsys):
    import yaml

    from synthesis.__main__ import main

    config = small_config().to_dict()
    config["conditions"] = ["reference", "text_bridge"]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "cli-set"
    code = main(
        [
            "generate",
            "--videos",
            str(video_folder),
            "--out",
            str(out),
            "--config",
            str(config_path),
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "clips written: 4" in printed and "manifest: valid" in printed
    load_stimulus_set(out)
    assert (
        main(
            ["generate", "--videos", str(tmp_path / "none"), "--out", str(out), "--config", "tiny"]
        )
        == 2
    )


# --------------------------------------------------------------------------------------------
# Issue 17: synthesis faults


def copy_videos(source: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir(parents=True)
    for video in sorted(source.glob("*.mp4")):
        shutil.copyfile(video, folder / video.name)
    return folder


def manifest_of(out: pathlib.Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_a_replaced_video_is_redone_with_its_clips(video_folder, tmp_path, video_maker):
    videos = copy_videos(video_folder, tmp_path / "videos")
    config = small_config()
    config.conditions = ["reference", "vit_adapter", "mismatched"]
    out = tmp_path / "set"
    generate_set(videos, out, config, "cpu", log=quiet)
    before = manifest_of(out)
    clips_before = {clip["id"]: clip["sha256"] for clip in before["clips"]}
    written_before = {path.name: path.stat().st_mtime_ns for path in (out / "audio").iterdir()}
    muted_before = {source["id"]: source["video_sha256"] for source in before["sources"]}
    # the same name, another performance
    video_maker(videos / "perf_b.mp4", seconds=3.0, pulse_hz=3.0, seed=7)
    summary = generate_set(videos, out, config, "cpu", log=quiet)
    assert [source for source, _ in summary.sources_changed] == ["perf_b"]
    assert "video perf_b.mp4 replaced" in summary.sources_changed[0][1]
    assert "changed since the last run, its clips remade: perf_b" in summary.text()
    # perf_b's three clips, and perf_a's mismatched clip, which was made from perf_b's video
    assert summary.clips_written == 4 and summary.clips_reused == 2
    after = manifest_of(out)
    written_after = {path.name: path.stat().st_mtime_ns for path in (out / "audio").iterdir()}
    remade = {name for name in written_after if written_after[name] != written_before[name]}
    assert remade == {
        "perf_b.s000.reference.wav",
        "perf_b.s000.vit_adapter.wav",
        "perf_b.s000.mismatched.wav",
        "perf_a.s000.mismatched.wav",
    }
    clips_after = {clip["id"]: clip["sha256"] for clip in after["clips"]}
    assert clips_after["perf_b.s000.reference"] != clips_before["perf_b.s000.reference"]
    sources = {source["id"]: source for source in after["sources"]}
    new_sha = file_sha256(videos / "perf_b.mp4")
    assert sources["perf_b"]["metadata"]["original_video_sha256"] == new_sha
    assert sources["perf_b"]["video_sha256"] != muted_before["perf_b"]  # a new muted copy
    assert file_sha256(out / sources["perf_b"]["video"]) == sources["perf_b"]["video_sha256"]
    assert sources["perf_a"]["video_sha256"] == muted_before["perf_a"]
    # the reference clip is the new video's audio: same as a fresh set's
    fresh = tmp_path / "fresh"
    generate_set(videos, fresh, config, "cpu", log=quiet)
    assert manifest_of(fresh)["clips"] == after["clips"]
    load_stimulus_set(out)


def test_truncated_videos_are_skipped_and_never_copied(tmp_path, video_maker, truncated_copy_maker):
    videos = tmp_path / "videos"
    video_maker(videos / "good.mp4", seconds=2.5)
    whole = video_maker(tmp_path / "whole.mp4", seconds=12.0, fps=25)
    truncated_copy_maker(whole, videos / "cut.mp4", keep=0.45)
    # URMP: the video cut short, its mix (a separate file) whole
    piece = videos / "02_Air_fl"
    piece.mkdir()
    truncated_copy_maker(whole, piece / "Vid_02_Air_fl.mp4", keep=0.45)
    with av.open(str(whole)) as reader, av.open(str(piece / "AuMix_02_Air_fl.wav"), "w") as mix:
        stream = mix.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        for frame in reader.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                mix.mux(packet)
        for packet in stream.encode():
            mix.mux(packet)
    config = small_config()
    config.conditions = ["reference"]
    summary = generate_set(videos, tmp_path / "set", config, "cpu", log=quiet)
    skipped = dict(summary.sources_skipped)
    assert summary.sources_used == ["good"]
    assert set(skipped) == {"cut", "02_Air_fl"}
    assert skipped["02_Air_fl"].startswith(
        "Vid_02_Air_fl.mp4 is truncated or damaged: the file says 12.00 s of video but only"
    )
    assert "cut.mp4 is truncated" in skipped["cut"]
    assert sorted(path.name for path in (tmp_path / "set" / "videos").iterdir()) == ["good.mp4"]
    load_stimulus_set(tmp_path / "set")


@pytest.mark.slow  # a model run (training, or the pipeline three times)
def test_clip_bytes_do_not_depend_on_batch_size_or_threads(video_folder, tmp_path):
    import torch

    hashes = []
    threads_before = torch.get_num_threads()
    try:
        for batch_size, threads in ((1, 1), (4, 2), (3, 1)):
            torch.set_num_threads(threads)
            config = load_config("tiny")
            config.generation = dataclasses.replace(config.generation, batch_size=batch_size)
            out = tmp_path / f"batch{batch_size}-threads{threads}"
            generate_set(video_folder, out, config, "cpu", log=quiet)
            hashes.append(generated_hashes(out))
            for clip in manifest_of(out)["clips"]:
                if clip["condition"] in MUSICGEN_CONDITIONS:
                    assert clip["provenance"]["batch_size"] == batch_size
                    assert clip["provenance"]["torch_threads"] == threads
            assert manifest_of(out)["generator"]["torch_threads"] == threads
    finally:
        torch.set_num_threads(threads_before)
    assert len(hashes[0]) == 24  # 4 segments x 6 generated conditions
    assert hashes[0] == hashes[1] == hashes[2]


def test_a_rerun_with_fewer_conditions_removes_their_clips(video_folder, tmp_path):
    out = tmp_path / "set"
    generate_set(video_folder, out, small_config(), "cpu", log=quiet)
    assert len(list((out / "audio").glob("*.wav"))) == 4
    config = small_config()
    config.conditions = ["reference"]
    summary = generate_set(video_folder, out, config, "cpu", log=quiet)
    assert sorted(summary.files_removed) == [
        "audio/perf_a.s000.vit_adapter.wav",
        "audio/perf_b.s000.vit_adapter.wav",
    ]
    assert "removed 2 files no longer in the manifest" in summary.text()
    listed = {clip["path"] for clip in manifest_of(out)["clips"]}
    on_disk = {path.relative_to(out).as_posix() for path in (out / "audio").iterdir()}
    assert on_disk == listed
    load_stimulus_set(out)


def test_a_bad_checkpoint_stops_the_run_before_any_video_is_read(
    video_folder, tmp_path, monkeypatch
):
    import synthesis.pipeline.ingest
    from synthesis.config import ConfigError

    def no_ingest(*args, **kwargs):
        raise AssertionError("videos were read before the checkpoints were checked")

    monkeypatch.setattr(synthesis.pipeline.ingest, "ingest_source", no_ingest)
    for section in ("adapter", "gan"):
        config = small_config()
        config.conditions = ["reference", "vit_adapter" if section == "adapter" else "gan"]
        setattr(
            config,
            section,
            dataclasses.replace(
                getattr(config, section),
                checkpoint=str(tmp_path / "missing.safetensors"),
                allow_untrained=False,
            ),
        )
        with pytest.raises(ConfigError, match="does not exist"):
            generate_set(video_folder, tmp_path / section, config, "cpu", log=quiet)
        assert not (tmp_path / section / "videos").exists()


def test_tiny_sets_say_their_tempo_features_mean_nothing(tiny_set):
    out, summary = tiny_set
    assert len(summary.notes) == 1 and "not meaningful" in summary.notes[0]
    assert f"note: {summary.notes[0]}" in summary.text()
    assert manifest_of(out)["generator"]["notes"] == summary.notes


def test_progress_shows_in_a_log_file(video_folder, tmp_path, capsys, monkeypatch):
    from synthesis import progress

    monkeypatch.setattr(progress, "PLAIN_LINE_SECONDS", 0.0)
    generate_set(video_folder, tmp_path / "set", small_config(), "cpu", log=quiet)
    lines = capsys.readouterr().err.splitlines()  # pytest's stderr is not a terminal
    assert "videos: 1/2 videos (50%)" in lines[0]
    assert lines[-1].startswith("clips: 4/4 clips (100%)")


def test_plain_videos_without_scores_still_make_a_set_with_the_tiny_config(
    tmp_path, video_maker, tiny_config
):
    """A newcomer's own videos bring no MIDI: the shipped `tiny` config (which lists the score
    conditions) makes every condition that needs no score and says why the others are absent,
    instead of skipping every source."""
    videos = tmp_path / "videos"
    video_maker(videos / "mine.mp4", seconds=2.5)
    tiny_config.conditions = ["reference", "vit_adapter", "score_render", "vit_score"]
    notes: list[str] = []
    summary = generate_set(videos, tmp_path / "set", tiny_config, "cpu", log=notes.append)
    assert summary.sources_used == ["mine"] and summary.sources_skipped == []
    assert any(
        "no source has a MIDI score" in note and "score_render, vit_score" in note
        for note in summary.notes
    )
    assert any("no source has a MIDI score" in line for line in notes)
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert {clip["condition"] for clip in manifest["clips"]} == {"reference", "vit_adapter"}
    load_stimulus_set(tmp_path / "set")
