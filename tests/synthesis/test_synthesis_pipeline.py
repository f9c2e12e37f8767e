"""End to end: generated videos -> tiny models -> a stimulus set that the study app accepts."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import struct

import numpy as np
import pytest

from study_app.stimulus_set import load_stimulus_set
from synthesis.audio import integrated_loudness, read_wav
from synthesis.manifest import schema_problems
from synthesis.pipeline import generate_set
from synthesis.video import file_sha256


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
    assert conditions == {"reference", "vit_adapter", "text_bridge", "mismatched"}
    assert len(manifest["clips"]) == 16
    # the lead's loader (hashes, paths inside the set, per-segment format) accepts it
    load_stimulus_set(out)


def test_clips_of_a_segment_share_format_and_loudness(tiny_set):
    out, _ = tiny_set
    manifest = json.loads((out / "manifest.json").read_text())
    target = manifest["loudness_target_lufs"]
    segment_ids = {segment["id"] for segment in manifest["segments"]}
    for segment_id in segment_ids:
        clips = [clip for clip in manifest["clips"] if clip["segment"] == segment_id]
        assert len(clips) == 4
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
        for key in ("model", "encoder", "weights_sha256", "seed", "guidance", "code_version"):
            assert provenance[key] is not None, (clip["id"], key)
        assert len(provenance["weights_sha256"]) == 64
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
    assert summary.clips_reused == 15
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


def test_urmp_layout_uses_the_mix_and_keeps_the_score(tmp_path, video_maker):
    import av

    piece = tmp_path / "urmp" / "01_Jupiter_vn_vc"
    video_maker(piece / "Vid_01_Jupiter_vn_vc.mp4", seconds=2.5, audio=False)
    # URMP's mix is a WAV next to the (silent) video; write one with a distinctive tone
    mix = piece / "AuMix_01_Jupiter_vn_vc.wav"
    rate = 48000
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(2.5 * rate)) / rate)).astype(np.float32)
    with av.open(str(mix), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
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
