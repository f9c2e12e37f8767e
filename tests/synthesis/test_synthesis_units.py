"""Audio finishing, motion features, visual encoders and their cache, configs, model errors."""

from __future__ import annotations

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
