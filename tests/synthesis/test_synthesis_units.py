"""Audio finishing, motion features, visual encoders and their cache, configs, model errors."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

from synthesis.audio import ClipFormat, finish_clip, integrated_loudness, read_wav, write_wav
from synthesis.config import ConfigError, ModelSpec, config_from_dict, load_config
from synthesis.encoders import EmbeddingCache, load_clip_labeller, load_visual_encoder
from synthesis.features import estimate_tempo, motion_energy, onset_envelope, segment_features
from synthesis.models import ModelNotFoundError, load_musicgen

RATE = 16000


@pytest.mark.parametrize("target", [-30.0, -23.0, -14.0])
@pytest.mark.parametrize("kind", ["sine", "noise_burst", "quiet_with_dc", "stereo"])
def test_finished_clips_hit_the_loudness_target(kind, target, tmp_path):
    rng = np.random.default_rng(0)
    time = np.arange(int(1.5 * RATE)) / RATE
    if kind == "sine":
        audio = 0.5 * np.sin(2 * np.pi * 330 * time)[None]
    elif kind == "noise_burst":  # a peaky signal that needs the limiter at loud targets
        audio = rng.standard_normal((1, len(time))) * (time < 0.2)[None] * 0.9
        audio += 0.001 * rng.standard_normal((1, len(time)))
    elif kind == "quiet_with_dc":  # like a random-weight codec's output
        audio = 0.48 + 0.01 * rng.standard_normal((1, len(time)))
    else:
        audio = np.stack([np.sin(2 * np.pi * 220 * time), 0.2 * np.sin(2 * np.pi * 440 * time)])
    clip_format = ClipFormat(RATE, 1, 1.0, target, 20.0)
    finished = finish_clip(audio.astype(np.float32), 22050 if kind == "sine" else RATE, clip_format)
    assert finished.shape == (1, RATE)
    write_wav(tmp_path / "clip.wav", finished, RATE)
    written, rate = read_wav(tmp_path / "clip.wav")
    assert rate == RATE and written.shape == (1, RATE)
    assert abs(integrated_loudness(written, rate) - target) <= 0.5
    assert np.abs(written).max() < 1.0
    assert abs(written[0, 0]) < 1e-3 and abs(written[0, -1]) < 1e-3  # faded in and out


def test_silence_cannot_be_loudness_matched():
    from synthesis.audio import LoudnessError

    with pytest.raises(LoudnessError):
        finish_clip(np.zeros((1, RATE), np.float32), RATE, ClipFormat(RATE, 1, 1.0, -23, 20))


def test_motion_features_find_the_tempo_of_periodic_motion():
    rate = 24.0  # a flash every 12 frames = every 0.5 s: 120 BPM
    steps = np.arange(int(8 * rate))
    frames = np.zeros((len(steps), 16, 16), np.float32)
    for index in steps:
        if index % 12 == 0:
            frames[index] = 1.0
    energy = motion_energy(frames)
    assert abs(estimate_tempo(onset_envelope(energy, rate), rate) - 120) < 4
    features = segment_features(energy, rate, start=2.0, duration=4.0, intensity_scale=1.0)
    assert features["feature_rate_hz"] == rate
    assert len(features["onset_envelope"]) == len(features["intensity"]) == 96
    assert abs(features["tempo_bpm"] - 120) < 4
    still = segment_features(np.zeros(100, np.float32), rate, 0.0, 4.0, 0.0)
    assert still["tempo_bpm"] is None


@pytest.mark.parametrize("family", ["vit", "videomae", "clip"])
def test_each_encoder_family_embeds_frames_and_is_cached(family, tmp_path):
    encoder = load_visual_encoder(ModelSpec(family=family, tiny={}))
    frames = np.random.default_rng(0).integers(0, 255, (8, 48, 48, 3), dtype=np.uint8)
    embeddings = encoder.embed(frames)
    expected_steps = 2 if family == "videomae" else 8  # 4 frames, tubelets of 2
    assert embeddings.shape == (expected_steps, encoder.embedding_size)
    cache = EmbeddingCache(tmp_path)
    settings = {"frame_rate": 4.0, "start": 0.0}
    first = cache.get_or_compute("ab" * 32, encoder, settings, frames)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = cache.get_or_compute("ab" * 32, encoder, settings, frames[::-1])  # served from cache
    np.testing.assert_array_equal(first, again)
    cache.get_or_compute("ab" * 32, encoder, {**settings, "frame_rate": 2.0}, frames)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # other sampling settings, other key


def test_clip_labeller_picks_one_word_per_vocabulary():
    labeller = load_clip_labeller(ModelSpec(family="clip", tiny={}))
    frames = np.random.default_rng(1).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    vocabularies = {"mood": ["calm", "tense"], "instrument": ["violin", "flute"]}
    labels = labeller.label(frames, vocabularies)
    assert labels["mood"] in vocabularies["mood"]
    assert labels["instrument"] in vocabularies["instrument"]


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as caught:
        load_musicgen(ModelSpec(family="musicgen", path="facebook/musicgen-small"))
    message = str(caught.value)
    assert "facebook/musicgen-small" in message and str(tmp_path / "hub") in message
    with pytest.raises(ModelNotFoundError):
        load_visual_encoder(ModelSpec(family="vit", path=str(tmp_path / "no-such-model")))


def test_config_rejects_unknown_keys_and_families():
    data = load_config("tiny").to_dict()
    data["video"]["frame_rat"] = 3
    with pytest.raises(ConfigError, match="frame_rat"):
        config_from_dict(data)
    data = load_config("tiny").to_dict()
    data["encoder"]["family"] = "resnet"
    with pytest.raises(ConfigError):
        config_from_dict(data)
    assert load_config("musicgen-small").fit_for_studies is True


# --------------------------------------------------------------------------------------------
# Motion tempo at the shipped rate (issue 17: octave errors at 25 Hz)


@pytest.mark.parametrize(
    ("bpm", "accent"),
    [(60, 1.0), (75, 1.0), (90, 1.0), (120, 1.0), (150, 1.0), (180, 1.0), (150, 0.7)],
)
def test_motion_tempo_of_bowing_videos_has_the_right_octave(
    bpm, accent, tmp_path, bowing_video_maker
):
    from synthesis.features import intensity_scale
    from synthesis.video import sample_video

    video = bowing_video_maker(tmp_path / "bowing.mp4", bpm, seconds=20.0, accent=accent)
    motion_rate = load_config("musicgen-small").video.motion_rate  # the shipped 25 Hz
    assert motion_rate == 25.0
    sampled = sample_video(video, 4.0, 64, motion_rate)
    energy = motion_energy(sampled.motion_frames)
    for start in (0.0, 10.0):  # two 10 s segments, as musicgen-small cuts them
        features = segment_features(energy, motion_rate, start, 10.0, intensity_scale(energy))
        # the right octave, and within 2 % (whole-frame lags alone are 4 % off at 120 BPM)
        assert abs(features["tempo_bpm"] - bpm) <= 0.02 * bpm, (start, features["tempo_bpm"])


def test_strong_accents_on_alternate_beats_give_half_the_tempo():
    rate = 25.0
    onsets = np.zeros(250)
    beat = 60 * rate / 150  # 150 BPM = 10 frames
    for index, frame in enumerate(np.arange(0, 250, beat).astype(int)):
        onsets[frame] = 1.0 if index % 2 == 0 else 0.2  # the off-beats barely move
    assert abs(estimate_tempo(onsets, rate) - 75) < 2


def test_short_segments_say_their_tempo_is_not_meaningful():
    from synthesis.features import measurable_tempo_range
    from synthesis.pipeline.ingest import tempo_notes

    assert measurable_tempo_range(10.0, 25.0) == (40.0, 240.0)
    # a pulse must repeat within half the segment: 1 s segments show nothing below 120 BPM
    assert measurable_tempo_range(1.0, 10.0) == (120.0, 240.0)
    tiny_notes = tempo_notes(load_config("tiny"))
    assert len(tiny_notes) == 1 and "not meaningful" in tiny_notes[0]
    assert "120-240 BPM" in tiny_notes[0]
    assert tempo_notes(load_config("musicgen-small")) == []


# --------------------------------------------------------------------------------------------
# Damaged and truncated files, FFmpeg's messages


def test_a_truncated_video_is_reported_and_not_copied(tmp_path, video_maker, truncated_copy_maker):
    from synthesis.video import VideoError, read_audio, sample_video, write_muted_copy

    whole = video_maker(tmp_path / "whole.mp4", seconds=12.0, fps=25)
    cut = truncated_copy_maker(whole, tmp_path / "cut.mp4", keep=0.45)
    with pytest.raises(VideoError, match=r"cut.mp4 is truncated or damaged: the file says 12.00 s"):
        sample_video(cut, 4.0, 32, 25.0)
    with pytest.raises(VideoError) as caught:
        read_audio(cut, 16000, 1)
    assert "Errno" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    muted = tmp_path / "set" / "videos" / "cut.mp4"
    with pytest.raises(VideoError, match="cut.mp4 is truncated"):
        write_muted_copy(cut, muted)
    assert list(muted.parent.iterdir()) == []  # neither the copy nor its temporary file
    # the whole file passes all three
    assert abs(sample_video(whole, 4.0, 32, 25.0).duration - 12.0) < 0.05
    write_muted_copy(whole, muted)
    assert muted.exists()


def test_ffmpeg_errors_read_as_a_sentence_naming_the_file(tmp_path):
    from synthesis.video import VideoError, sample_video

    junk = tmp_path / "concert.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(VideoError) as caught:
        sample_video(junk, 4.0, 32, 25.0)
    message = str(caught.value)
    assert message.startswith("cannot open concert.mp4: FFmpeg found invalid data")
    assert "Errno" not in message and str(tmp_path) not in message


# --------------------------------------------------------------------------------------------
# Configs, progress


def test_relative_paths_in_a_config_file_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "models" / "vit").mkdir(parents=True)
    data = load_config("tiny").to_dict()
    data["adapter"]["checkpoint"] = "checkpoints/adapter.safetensors"
    data["gan"]["checkpoint"] = str(tmp_path / "elsewhere" / "gan-generator.safetensors")
    data["encoder"] = {"family": "vit", "path": "models/vit"}  # a local folder beside the file
    data["musicgen"] = {"family": "musicgen", "path": "facebook/musicgen-small"}  # a hub id
    (folder / "config.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)  # another current directory
    config = load_config(folder / "config.json")
    assert config.adapter.checkpoint == str(folder / "checkpoints" / "adapter.safetensors")
    assert config.gan.checkpoint == str(tmp_path / "elsewhere" / "gan-generator.safetensors")
    assert config.encoder.path == str(folder / "models" / "vit")
    assert config.musicgen.path == "facebook/musicgen-small"
    # shipped configs keep theirs: relative to the directory the command runs in
    shipped = load_config("musicgen-small")
    assert shipped.adapter.checkpoint == "checkpoints/vit_adapter/adapter.safetensors"


def test_progress_prints_plain_lines_when_not_on_a_terminal(monkeypatch):
    import io

    from synthesis import progress

    log = io.StringIO()  # not a terminal, like a log file
    monkeypatch.setattr(progress, "PLAIN_LINE_SECONDS", 0.0)
    bar = progress.Progress(3, "clips", "clip", stream=log)
    for _ in range(3):
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("clips: 1/3 clips (33%)") and "left" in lines[0]
    assert lines[-1].startswith("clips: 3/3 clips (100%)")
    assert len(lines) == 3 and "\r" not in log.getvalue()  # the last count is not repeated
    monkeypatch.setattr(progress, "PLAIN_LINE_SECONDS", 3600.0)
    quiet = io.StringIO()
    bar = progress.Progress(100, "videos", "video", stream=quiet)
    for _ in range(100):
        bar.update()
    bar.close()
    assert [line.split(" (")[0] for line in quiet.getvalue().splitlines()] == [
        "videos: 1/100 videos",
        "videos: 100/100 videos",
    ]


# --------------------------------------------------------------------------------------------
# Metrical ambiguity of the motion tempo (issue 26: alternate strokes weaker, as in bowing)


def accented_motion(bpm: float, weight: float, seed: int) -> np.ndarray:
    """The simulated bowing motion of scripts/motion_tempo_ambiguity.py (the docs' table)."""
    scripts = str(pathlib.Path(__file__).resolve().parents[2] / "scripts")
    sys.path.insert(0, scripts)
    try:
        import motion_tempo_ambiguity
    finally:
        sys.path.remove(scripts)
    return motion_tempo_ambiguity.accented_motion(bpm, weight, seed)


@pytest.mark.parametrize("weight", [1.0, 0.7, 0.5])
@pytest.mark.parametrize("bpm", [60, 75, 90, 105, 120, 135, 150, 165, 180])
def test_accented_motion_keeps_the_true_tempo_among_two_candidates(bpm, weight):
    from synthesis.features import tempo_reading

    for seed in range(4):
        reading = tempo_reading(onset_envelope(accented_motion(bpm, weight, seed), 25.0), 25.0)
        found = [reading.bpm, reading.alternative_bpm]
        assert any(abs(value - bpm) <= 0.03 * bpm for value in found), (seed, reading)
        if weight == 1.0:  # even strokes: the tempo first, and no doubt about it
            assert abs(reading.bpm - bpm) <= 0.03 * bpm and not reading.ambiguous, reading
        elif bpm / 2 >= 40:  # half the tempo is a reading too, and it is flagged
            assert reading.ambiguous, (seed, reading)
            assert {round(reading.bpm / reading.alternative_bpm, 1)} <= {0.5, 2.0}, reading


@pytest.mark.parametrize(("bpm", "accent"), [(90, 0.7), (120, 0.7), (120, 0.5), (180, 0.5)])
def test_bowing_with_weaker_up_bows_reports_both_readings(bpm, accent, tmp_path,
                                                          bowing_video_maker):
    from synthesis.features import intensity_scale
    from synthesis.video import sample_video

    video = bowing_video_maker(tmp_path / "bowing.mp4", bpm, seconds=20.0, accent=accent)
    sampled = sample_video(video, 4.0, 64, 25.0)
    energy = motion_energy(sampled.motion_frames)
    for start in (0.0, 10.0):
        features = segment_features(energy, 25.0, start, 10.0, intensity_scale(energy))
        bpms = [entry["bpm"] for entry in features["tempo_candidates"]]
        assert len(bpms) == 2 and features["tempo_bpm"] == bpms[0]
        assert any(abs(value - bpm) <= 0.02 * bpm for value in bpms), (start, features)
        assert any(abs(value - bpm / 2) <= 0.02 * bpm / 2 for value in bpms), (start, features)
        assert features["tempo_ambiguous"] is True
        assert all(0 < entry["salience"] <= 1 for entry in features["tempo_candidates"])
