"""The synthetic demo set is a valid, deterministic set whose conditions really differ."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest

from demo_set import CONDITIONS, build_demo_set, main
from study_app.audio import read_wav_info, read_wav_samples
from study_app.stimulus_set import StimulusSet, load_stimulus_set

DURATION = 1.0


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    manifest = build_demo_set(out, n_sources=2, duration=DURATION, seed=0)
    assert manifest == out / "manifest.json"
    return out


@pytest.fixture(scope="module")
def demo(demo_dir: Path) -> StimulusSet:
    return load_stimulus_set(demo_dir)


def mono(path: Path) -> np.ndarray:
    samples, rate = read_wav_samples(path)
    assert rate == 44100
    return samples[:, 0].astype(np.float64)


def test_loads_cleanly(demo: StimulusSet) -> None:
    assert demo.conditions() == ["reference", "mismatched", "shuffled_notes", "sine_resynthesis"]
    assert len(demo.sources) == 2 and len(demo.segments) == 2 and len(demo.clips) == 8
    assert demo.manifest["fit_for_studies"] is False
    assert demo.manifest["loudness_target_lufs"] == -23
    assert "synthetic" in demo.manifest["description"].lower()
    for segment in demo.segments:
        assert segment.start == 0 and segment.duration == DURATION
        assert set(demo.clips_for_segment(segment.id)) == set(CONDITIONS)


def test_sources_carry_distinct_designs(demo: StimulusSet) -> None:
    emotions = [s.metadata["emotion"] for s in demo.sources]
    assert len({e["label"] for e in emotions}) == len(emotions)
    for source in demo.sources:
        assert source.metadata["performer"] == "generated"
        assert "synthetic" in source.metadata["instrument"]
        assert 1 <= source.metadata["emotion"]["valence"] <= 9
        assert 1 <= source.metadata["emotion"]["arousal"] <= 9
    assert len({s.features["tempo_bpm"] for s in demo.segments}) == len(demo.segments)


def test_format_frames_and_loudness(demo: StimulusSet) -> None:
    meter = pyloudnorm.Meter(44100)
    frames = set()
    for clip in demo.clips:
        info = read_wav_info(clip.path)
        assert (info.sample_rate, info.channels, info.sample_width) == (44100, 1, 2)
        frames.add(info.frames)
        x = mono(clip.path)
        loudness = meter.integrated_loudness(x)
        assert loudness == pytest.approx(-23.0, abs=0.1), clip.id
        assert clip.loudness_lufs == pytest.approx(loudness, abs=0.01)
        assert abs(x[0]) < 1e-3 and abs(x[-1]) < 1e-3  # 10 ms fades
        assert np.max(np.abs(x)) < 1.0
    assert frames == {44100}


def centroid_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float((spectrum * np.fft.rfftfreq(len(x), 1 / 44100)).sum() / spectrum.sum())


def test_conditions_differ(demo: StimulusSet) -> None:
    for segment in demo.segments:
        clips = demo.clips_for_segment(segment.id)
        reference = mono(clips["reference"].path)
        for condition in ("sine_resynthesis", "shuffled_notes", "mismatched"):
            other = mono(clips[condition].path)
            waveform_r = np.corrcoef(reference, other)[0, 1]
            assert abs(waveform_r) < 0.5, (segment.id, condition, waveform_r)
            assert clips[condition].sha256 != clips["reference"].sha256
        # Pure sines lack the plucked string's harmonics: a much darker spectrum.
        sine = mono(clips["sine_resynthesis"].path)
        assert centroid_hz(sine) < 0.6 * centroid_hz(reference)


def test_mismatched_is_the_next_sources_reference(demo: StimulusSet) -> None:
    segments = [s.id for s in demo.segments]
    for i, segment_id in enumerate(segments):
        mismatched = demo.clips_for_segment(segment_id)["mismatched"]
        following = demo.clips_for_segment(segments[(i + 1) % len(segments)])["reference"]
        assert mismatched.sha256 == following.sha256
        assert mismatched.provenance["model"] == "demo_set.mismatched"


def test_provenance(demo: StimulusSet) -> None:
    for clip in demo.clips:
        if clip.condition == "reference":
            continue
        p = clip.provenance
        assert p["model"] == f"demo_set.{clip.condition}"
        for key in ("encoder", "weights_sha256", "guidance", "prompt", "adapter"):
            assert p[key] is None
        assert isinstance(p["seed"], int) and p["code_version"]


def test_videos_are_muted_and_last_the_segment(demo: StimulusSet) -> None:
    for source in demo.sources:
        assert source.video.suffix in (".mp4", ".webm")
        with av.open(str(source.video)) as container:
            assert len(container.streams.audio) == 0
            assert len(container.streams.video) == 1
            stream = container.streams.video[0]
            assert stream.codec_context.name in ("h264", "vp9", "vp8")
            frames = [f for f in container.decode(video=0)]
        assert len(frames) == round(DURATION * 25)
        assert (frames[0].width, frames[0].height) == (320, 240)
        assert (len(frames) / 25) == pytest.approx(DURATION)
        # The picture changes with the notes: not a still image.
        first, later = frames[0].to_ndarray(format="rgb24"), frames[12].to_ndarray(format="rgb24")
        assert np.abs(first.astype(int) - later.astype(int)).mean() > 0.5


def test_deterministic_and_cli(demo_dir: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "--n-sources", "2", "--duration", str(DURATION)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "manifest.json")
    first = json.loads((demo_dir / "manifest.json").read_text())
    second = json.loads((tmp_path / "manifest.json").read_text())
    first.pop("created")
    second.pop("created")
    assert first == second
    for clip in first["clips"]:
        assert (demo_dir / clip["path"]).read_bytes() == (tmp_path / clip["path"]).read_bytes()


def test_needs_two_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_demo_set(tmp_path, n_sources=1)
