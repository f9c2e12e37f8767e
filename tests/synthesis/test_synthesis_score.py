"""Score-conditioned synthesis (issue 16): score slices, and FluidSynth's rendering of them."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

from study_app.stimulus_set import load_stimulus_set
from synthesis.audio import integrated_loudness, read_wav
from synthesis.config import ConfigError, load_config
from synthesis.pipeline import generate_set
from synthesis.score import ScoreSlice, load_score, pitch_class_energy, slice_score
from synthesis.video import file_sha256

SOUNDFONT = pathlib.Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(),
    reason="needs Debian's fluidsynth and fluid-soundfont-gm (make fluidsynth)",
)


def quiet(_message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# Slicing


def test_a_slice_cuts_crossing_notes_at_its_edges_and_keeps_their_velocity(tmp_path, score_maker):
    path = score_maker(
        tmp_path / "piece.mid",
        [
            (40, [(69, 0.5, 1.5, 90), (72, 1.2, 1.6, 70), (74, 2.5, 3.5, 50), (76, 3.0, 3.2, 60)]),
            (42, [(48, 0.0, 4.0, 110)]),
        ],
    )
    window = slice_score(load_score(path), 1.0, 2.0)  # [1, 3)
    assert window.score_sha256 == file_sha256(path)
    assert (window.start, window.duration) == (1.0, 2.0)
    notes = {
        (note.pitch, round(note.start, 3), round(note.end, 3), note.velocity)
        for note in window.pitched_notes()
    }
    assert notes == {
        (69, 0.0, 0.5, 90),  # started before the window: cut at its start
        (72, 0.2, 0.6, 70),  # inside
        (74, 1.5, 2.0, 50),  # runs past the window's end: cut there
        (48, 0.0, 2.0, 110),  # held through the whole window
    }  # the 76 at 3.0 s starts at the window's end: not in it
    assert window.programs() == [40, 42]
    # written as MIDI and read back, the slice is the same notes in the same instruments
    reread = slice_score(load_score(_write(tmp_path / "slice.mid", window)), 0.0, 2.0)
    assert {
        (note.pitch, round(note.start, 2), round(note.end, 2), note.velocity)
        for note in reread.pitched_notes()
    } == {(pitch, round(start, 2), round(end, 2), v) for pitch, start, end, v in notes}
    assert reread.programs() == [40, 42]
    empty = slice_score(load_score(path), 5.0, 1.0)
    assert empty.note_count == 0


def _write(path: pathlib.Path, window: ScoreSlice) -> pathlib.Path:
    path.write_bytes(window.midi_bytes())
    return path


def test_tempo_changes_are_honoured(tmp_path):
    import mido

    # 480 ticks a beat; 120 BPM for the first two beats (1 s), then 60 BPM
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    track.append(mido.Message("program_change", program=71, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=1000000, time=960))
    # beat 3 starts at 1 s + 1 s = 2 s; the note lasts half a beat (0.5 s at 60 BPM)
    track.append(mido.Message("note_on", note=67, velocity=80, time=480))
    track.append(mido.Message("note_off", note=67, velocity=0, time=240))
    midi.save(str(tmp_path / "tempo.mid"))
    window = slice_score(load_score(tmp_path / "tempo.mid"), 1.5, 1.0)
    (note,) = window.pitched_notes()
    assert note.start == pytest.approx(0.5, abs=0.005)
    assert note.end == pytest.approx(1.0, abs=0.005)
    assert window.programs() == [71]


def test_a_damaged_score_is_refused_with_its_name(tmp_path):
    from synthesis.score import ScoreError

    damaged = tmp_path / "Sco_01_x.mid"
    damaged.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00`")
    with pytest.raises(ScoreError, match="cannot read the score Sco_01_x.mid"):
        load_score(damaged)


# --------------------------------------------------------------------------------------------
# FluidSynth


def chroma_of_audio(audio: np.ndarray, rate: int, hop: int, size: int = 4096) -> np.ndarray:
    """(frames, 12) magnitude per pitch class, 200-2500 Hz, frame i centred at i * hop."""
    padded = np.concatenate([np.zeros(size // 2), audio, np.zeros(size // 2)])
    frames = np.array(
        [padded[i : i + size] * np.hanning(size) for i in range(0, len(audio), hop)]
    )
    spectrum = np.abs(np.fft.rfft(frames, axis=1))
    frequencies = np.fft.rfftfreq(size, 1 / rate)
    band = (frequencies > 200) & (frequencies < 2500)
    classes = (np.round(12 * np.log2(frequencies[band] / 440) + 69) % 12).astype(int)
    return np.stack([spectrum[:, band][:, classes == k].sum(1) for k in range(12)], axis=1)


def onsets_of_audio(audio: np.ndarray, rate: int, hop: int = 256, size: int = 1024) -> list[float]:
    """Peaks of the positive log-spectral flux above 30 % of the largest, in seconds."""
    frames = np.array(
        [audio[i : i + size] * np.hanning(size) for i in range(0, len(audio) - size, hop)]
    )
    flux = np.maximum(np.diff(np.log1p(10 * np.abs(np.fft.rfft(frames, axis=1))), axis=0), 0)
    flux = flux.sum(1)
    return [
        ((i + 1) * hop + size / 2) / rate
        for i in range(1, len(flux) - 1)
        if flux[i] > flux[i - 1] and flux[i] >= flux[i + 1] and flux[i] > 0.3 * flux.max()
    ]


MELODY = [  # piano; pitch classes A, C, E, G, D, B; the first starts before the window
    (69, 0.5, 1.35, 100),
    (72, 1.4, 1.75, 100),
    (76, 1.8, 2.15, 100),
    (79, 2.2, 2.55, 100),
    (74, 2.6, 2.95, 100),
    (71, 3.0, 3.6, 100),
]


@needs_fluidsynth
def test_fluidsynth_renders_the_score_s_pitch_classes_and_onsets(tmp_path, score_maker):
    from synthesis.conditions.score_render import render_midi

    window = slice_score(load_score(score_maker(tmp_path / "m.mid", [(0, MELODY)])), 1.0, 2.0)
    rate, hop = 16000, 256
    audio = render_midi(window.midi_bytes(), rate, SOUNDFONT)
    assert audio.shape[0] == 2 and audio.shape[1] >= 2 * rate
    mono = audio.mean(0)[: 2 * rate]
    chroma = chroma_of_audio(mono, rate, hop)
    times = np.arange(len(chroma)) * hop / rate
    notes = window.pitched_notes()
    assert [note.pitch for note in notes] == [69, 72, 76, 79, 74]  # 71 starts at the end
    for note in notes:  # every note's interval sounds its own pitch class loudest
        inside = (times >= note.start + 0.05) & (times < note.end - 0.02)
        assert int(np.argmax(chroma[inside].mean(0))) == note.pitch % 12, note
    expected = pitch_class_energy(window, rate / hop, len(chroma)).sum(0)
    measured = chroma.sum(0)
    cosine = expected @ measured / np.linalg.norm(expected) / np.linalg.norm(measured)
    assert cosine > 0.8
    # onsets: one at each note that starts inside the window, none elsewhere
    found = onsets_of_audio(mono, rate)
    starts = [note.start for note in notes if note.start > 0.1]
    assert len(found) == len(starts)
    for start, onset in zip(starts, found, strict=True):
        assert abs(onset - start) < 0.035, (start, found)
    # the cut note (A, started 0.5 s before the window) sounds from the window's start
    head = mono[: int(0.3 * rate)]
    assert np.sqrt(np.mean(head**2)) > 0.5 * np.sqrt(np.mean(mono**2))
    assert int(np.argmax(chroma[times < 0.3].mean(0))) == 9
    # nothing is sampled: the same slice gives the same samples
    np.testing.assert_array_equal(render_midi(window.midi_bytes(), rate, SOUNDFONT), audio)


# --------------------------------------------------------------------------------------------
# In the pipeline


def score_config(conditions: list[str]):
    config = load_config("tiny")
    config.conditions = conditions
    return config


@pytest.fixture(scope="module")
def urmp_folder(tmp_path_factory, urmp_maker, video_maker):
    """Two URMP pieces (2.5 s: two 1 s segments each) and a plain video without a score."""
    root = tmp_path_factory.mktemp("urmp")
    # piece 01: notes in both segments, one crossing from the first into the second
    urmp_maker(
        root,
        "01_Jupiter_vn_vc",
        [(40, [(76, 0.1, 0.5, 90), (79, 0.6, 1.4, 70)]), (42, [(48, 1.5, 1.9, 100)])],
        seed=0,
    )
    # piece 02: notes in its first segment only, so its second is skipped
    urmp_maker(root, "02_Air_fl", [(73, [(81, 0.2, 0.8, 80)])], seed=1)
    video_maker(root / "plain.mp4", seconds=2.5, seed=2)  # no plain.mid beside it
    return root


@needs_fluidsynth
def test_score_render_clips_are_matched_and_the_set_imports(urmp_folder, tmp_path):
    out = tmp_path / "set"
    summary = generate_set(
        urmp_folder, out, score_config(["reference", "score_render"]), "cpu", log=quiet
    )
    assert summary.manifest_problems == [] and summary.clips_failed == []
    skipped_sources = dict(summary.sources_skipped)
    assert set(skipped_sources) == {"plain"}
    assert "plain.mp4 has no score (plain.mid beside it)" in skipped_sources["plain"]
    assert "score_render" in skipped_sources["plain"]
    assert summary.segments_skipped == [
        ("02_Air_fl.s001", "no notes in the score Sco_02_Air_fl.mid between 1.00 s and 2.00 s")
    ]
    assert "skipped segment 02_Air_fl.s001: no notes in the score" in summary.text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"]["skipped_segments"] == [
        {"segment": "02_Air_fl.s001", "reason": summary.segments_skipped[0][1]}
    ]
    assert [segment["id"] for segment in manifest["segments"]] == [
        "01_Jupiter_vn_vc.s000",
        "01_Jupiter_vn_vc.s001",
        "02_Air_fl.s000",
    ]
    assert len(manifest["clips"]) == 6
    soundfont_sha = file_sha256(SOUNDFONT)
    assert manifest["generator"]["checkpoints"]["soundfont"] == (
        f"FluidR3_GM.sf2 sha256:{soundfont_sha}"
    )
    for segment in manifest["segments"]:
        clips = [clip for clip in manifest["clips"] if clip["segment"] == segment["id"]]
        shapes = set()
        for clip in clips:
            audio, rate = read_wav(out / clip["path"])
            shapes.add((rate, audio.shape))
            assert abs(integrated_loudness(audio, rate) - manifest["loudness_target_lufs"]) < 0.5
        assert len(shapes) == 1
    rendered = {c["segment"]: c for c in manifest["clips"] if c["condition"] == "score_render"}
    crossing = rendered["01_Jupiter_vn_vc.s001"]["provenance"]
    score = urmp_folder / "01_Jupiter_vn_vc" / "Sco_01_Jupiter_vn_vc.mid"
    assert crossing["score_sha256"] == file_sha256(score)
    assert crossing["score_window"] == {"start": 1.0, "end": 2.0}
    assert crossing["soundfont_sha256"] == soundfont_sha
    assert crossing["score_notes"] == 2  # the 79 cut at 1.0 s, and the cello's 48
    assert crossing["score_programs"] == [40, 42]
    # the crossing note (G, 79) sounds from the segment's start in the rendered clip
    audio, rate = read_wav(out / rendered["01_Jupiter_vn_vc.s001"]["path"])
    chroma = chroma_of_audio(audio[0], rate, 256)
    times = np.arange(len(chroma)) * 256 / rate
    assert int(np.argmax(chroma[(times > 0.05) & (times < 0.35)].mean(0))) == 7
    load_stimulus_set(out)


@needs_fluidsynth
def test_a_replaced_score_remakes_its_source_s_clips(tmp_path, urmp_maker, score_maker):
    root = tmp_path / "urmp"
    urmp_maker(root, "01_Jupiter_vn_vc", [(40, [(76, 0.1, 0.9, 90), (79, 1.1, 1.9, 70)])])
    urmp_maker(root, "02_Air_fl", [(73, [(81, 0.2, 1.8, 80)])], seed=1)
    config = score_config(["reference", "score_render"])
    out = tmp_path / "set"
    generate_set(root, out, config, "cpu", log=quiet)
    before = clip_hashes(out)
    score_maker(root / "01_Jupiter_vn_vc" / "Sco_01_Jupiter_vn_vc.mid", [(40, [(60, 0, 1.9, 90)])])
    summary = generate_set(root, out, config, "cpu", log=quiet)
    assert summary.sources_changed == [
        ("01_Jupiter_vn_vc", "score Sco_01_Jupiter_vn_vc.mid replaced by other content")
    ]
    assert (summary.clips_written, summary.clips_reused) == (4, 4)  # its 2 segments x 2
    after = clip_hashes(out)
    changed = "01_Jupiter_vn_vc.s000.score_render"
    assert after[changed] != before[changed]
    assert after["02_Air_fl.s000.score_render"] == before["02_Air_fl.s000.score_render"]


def clip_hashes(out: pathlib.Path) -> dict[str, str]:
    return {c["id"]: c["sha256"] for c in json.loads((out / "manifest.json").read_text())["clips"]}


def test_a_missing_soundfont_stops_the_run_before_any_video_is_read(
    urmp_folder, tmp_path, monkeypatch
):
    import synthesis.pipeline.ingest

    def no_ingest(*args, **kwargs):
        raise AssertionError("videos were read before the soundfont was checked")

    monkeypatch.setattr(synthesis.pipeline.ingest, "ingest_source", no_ingest)
    config = score_config(["reference", "score_render"])
    config.score_render = dataclasses.replace(
        config.score_render, soundfont=str(tmp_path / "none.sf2")
    )
    with pytest.raises(ConfigError, match="none.sf2 .score_render.soundfont. does not exist"):
        generate_set(urmp_folder, tmp_path / "set", config, "cpu", log=quiet)
    config.score_render = dataclasses.replace(config.score_render, fluidsynth="no-such-synth")
    with pytest.raises(ConfigError, match="FluidSynth command 'no-such-synth'"):
        generate_set(urmp_folder, tmp_path / "set", config, "cpu", log=quiet)


# --------------------------------------------------------------------------------------------
# Spectrogram diffusion


@pytest.mark.model  # a tiny model run
def test_diffusion_chunks_cover_the_whole_segment(tmp_path, score_maker):
    import torch
    from diffusers.pipelines.deprecated.spectrogram_diffusion.midi_utils import MidiProcessor

    from synthesis.conditions.score_diffusion import (
        ScoreDiffusionConfig,
        chunks_for,
        load_diffusion,
        synthesize,
        tokenize_slice,
    )

    # notes end 1.5 s into a 6 s segment: diffusers' processor stops there, after one chunk
    path = score_maker(tmp_path / "early.mid", [(40, [(69, 0.5, 1.5, 90), (72, 1.0, 1.5, 60)])])
    window = slice_score(load_score(path), 0.0, 6.0)
    assert len(MidiProcessor()(window.midi_bytes())) == 1
    tokens = tokenize_slice(window.midi_bytes(), 6.0)
    assert len(tokens) == chunks_for(6.0) == 2  # 5.12 s each
    assert [len(chunk) for chunk in tokens] == [2048, 2048]
    assert (chunks_for(10.0), chunks_for(10.3), chunks_for(1.0)) == (2, 3, 1)
    # where the processor covers the segment, the tokens are its tokens
    whole = slice_score(load_score(path), 0.0, 1.5)
    assert tokenize_slice(whole.midi_bytes(), 1.5) == MidiProcessor()(whole.midi_bytes())
    model = load_diffusion(ScoreDiffusionConfig(tiny={}, steps=2), torch.device("cpu"))
    audio = synthesize(model, tokens, 2, seed=3, seconds=6.0)
    assert audio.shape == (1, 6 * 16000)  # two chunks (10.24 s) cut to the segment
    assert np.abs(audio[:, -16000:]).max() > 0  # the last second is made, not padding
    np.testing.assert_array_equal(synthesize(model, tokens, 2, seed=3, seconds=6.0), audio)
    assert not np.array_equal(synthesize(model, tokens, 2, seed=4, seconds=6.0), audio)


def test_absent_diffusion_weights_stop_the_run_with_a_clear_error(urmp_folder, tmp_path):
    from synthesis.models import ModelNotFoundError

    config = score_config(["reference", "score_diffusion"])
    config.score_diffusion = dataclasses.replace(
        config.score_diffusion, tiny=None, path=str(tmp_path / "no-such-model")
    )
    with pytest.raises(ModelNotFoundError, match="cannot load SpectrogramDiffusionPipeline"):
        generate_set(urmp_folder, tmp_path / "set", config, "cpu", log=quiet)
    assert not (tmp_path / "set" / "videos").exists()


def diffusion_hashes(out: pathlib.Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {c["id"]: c["sha256"] for c in manifest["clips"] if c["condition"] == "score_diffusion"}


@pytest.mark.model  # a tiny model run
def test_score_diffusion_clips_same_seed_same_bytes(urmp_folder, tmp_path):
    config = score_config(["reference", "score_diffusion"])
    first = generate_set(urmp_folder, tmp_path / "one", config, "cpu", log=quiet)
    assert first.manifest_problems == [] and first.clips_failed == []
    generate_set(urmp_folder, tmp_path / "two", config, "cpu", log=quiet)
    config.generation = dataclasses.replace(config.generation, seed=9)
    generate_set(urmp_folder, tmp_path / "three", config, "cpu", log=quiet)
    hashes = diffusion_hashes(tmp_path / "one")
    assert len(hashes) == 3  # 02_Air_fl.s001 has no notes
    assert hashes == diffusion_hashes(tmp_path / "two")
    assert set(hashes.values()).isdisjoint(diffusion_hashes(tmp_path / "three").values())
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    clip = next(c for c in manifest["clips"] if c["condition"] == "score_diffusion")
    provenance = clip["provenance"]
    assert provenance["model"] == "tiny-random-spectrogram-diffusion"
    assert provenance["diffusion_steps"] == config.score_diffusion.steps
    assert provenance["chunks"] == 1 and len(provenance["weights_sha256"]) == 64
    assert provenance["score_window"] == {"start": 0.0, "end": 1.0}
    assert manifest["generator"]["checkpoints"]["score_diffusion"].endswith(
        provenance["weights_sha256"]
    )
    load_stimulus_set(tmp_path / "one")


# --------------------------------------------------------------------------------------------
# vit_score: MusicGen-melody on the score's chroma and the visual adapter's tokens


def tiny_melody():
    from synthesis.config import ModelSpec
    from synthesis.models import load_musicgen

    return load_musicgen(ModelSpec("melody", tiny={}), "cpu")


def test_score_chroma_comes_from_the_notes(tmp_path, score_maker):
    from synthesis.conditions.vit_score import CHROMA_HOP, chroma_frames, score_chroma

    melody = tiny_melody()  # 16 kHz codec: 16000 / 4096 = 3.9 chroma frames per second
    path = score_maker(tmp_path / "c.mid", [(40, [(67, 0.0, 1.3, 90)]), (42, [(50, 1.3, 2.0, 90)])])
    chroma = score_chroma(slice_score(load_score(path), 0.0, 2.0), melody)
    assert chroma.shape == (chroma_frames(melody, 2.0), 12) == (2 * 16000 // CHROMA_HOP + 1, 12)
    assert np.all(chroma.sum(1) == 1)  # one-hot, as melody's feature extractor makes it
    # frames of 0.256 s: G (7) sounds until 1.3 s (the frame from 1.28 s is mostly D), then D
    assert list(chroma.argmax(1)) == [7, 7, 7, 7, 7, 2, 2, 2]
    silent = score_chroma(slice_score(load_score(path), 5.0, 1.0), melody)
    assert list(silent.argmax(1)) == [0] * len(silent)  # no notes: pitch class 0, as for audio


@pytest.mark.model  # a tiny model run
def test_the_score_s_chroma_and_the_video_both_reach_melody_s_logits():
    import torch

    from synthesis.conditions.vit_score import melody_conditioning

    melody = tiny_melody()
    decoder = melody.model.decoder
    width = melody.decoder_width
    tokens = torch.randn(1, 4, width)
    c_major = np.zeros((8, 12), dtype=np.float32)
    c_major[np.arange(8), [0, 4, 7, 0, 4, 7, 0, 4]] = 1
    f_sharp = np.zeros((8, 12), dtype=np.float32)
    f_sharp[:, 6] = 1
    inputs = torch.full((4, 1), decoder.config.bos_token_id)

    def logits(chroma: np.ndarray, states: torch.Tensor) -> torch.Tensor:
        conditioning = melody_conditioning(melody, chroma, states)
        with torch.no_grad():
            return decoder(
                input_ids=inputs,
                encoder_hidden_states=conditioning.states,
                encoder_attention_mask=conditioning.mask,
            ).logits[:, -1]

    base = logits(c_major, tokens)
    assert not torch.allclose(base, logits(f_sharp, tokens))  # the score is heard
    assert not torch.allclose(base, logits(c_major, torch.randn(1, 4, width)))  # so is the video
    conditioning = melody_conditioning(melody, c_major, tokens)
    prefix = melody.model.config.chroma_length
    assert conditioning.states.shape == (1, prefix + 4, width)
    assert torch.equal(conditioning.null_states[:, prefix:], torch.zeros(1, 4, width))


# --------------------------------------------------------------------------------------------
# Drums (issue 26, item 5): recorded as drums, and no melody for vit_score


def drum_and_violin_score(path: pathlib.Path) -> pathlib.Path:
    """A drum kit (MIDI channel 10, program 0) alone for 2 s, then a violin (program 40) alone."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    kit = pretty_midi.Instrument(program=0, is_drum=True, name="kit")
    for beat in range(4):  # kick, snare, kick, snare; hi-hats in between
        kick_or_snare = 36 if beat % 2 == 0 else 38
        kit.notes.append(pretty_midi.Note(100, kick_or_snare, beat / 2, beat / 2 + 0.1))
        kit.notes.append(pretty_midi.Note(70, 42, beat / 2 + 0.25, beat / 2 + 0.3))
    violin = pretty_midi.Instrument(program=40, name="violin")
    violin.notes.append(pretty_midi.Note(90, 76, 2.0, 3.5))
    midi.instruments += [kit, violin]
    midi.write(str(path))
    return path


def test_a_drum_only_window_says_drums_and_not_piano(tmp_path):
    score = load_score(drum_and_violin_score(tmp_path / "band.mid"))
    drums = slice_score(score, 0.0, 2.0)
    assert drums.provenance()["score_notes"] == 8
    # the kit's program 0 is a drum kit, not General MIDI's piano
    assert drums.provenance()["score_programs"] == []
    assert drums.provenance()["score_drums"] is True
    assert drums.is_unpitched()
    violin = slice_score(score, 2.0, 2.0)
    assert (violin.programs(), violin.has_drums(), violin.is_unpitched()) == ([40], False, False)
    both = slice_score(score, 1.0, 2.0)
    assert (both.programs(), both.has_drums(), both.is_unpitched()) == ([40], True, False)
    # written out and read back (as score_render and score_diffusion get it), still drums
    reread = slice_score(load_score(_write(tmp_path / "drums.mid", drums)), 0.0, 2.0)
    assert (reread.programs(), reread.has_drums(), reread.note_count) == ([], True, 8)


@pytest.mark.model  # a tiny model run
def test_vit_score_gives_an_unpitched_window_melody_s_no_melody(tmp_path):
    """Drums only: the chroma prefix is MusicGen-melody's "no melody" (the same as guidance's
    unconditional row, so the melody does not steer), and the provenance says so."""
    import torch

    from synthesis.conditions.base import SegmentInput
    from synthesis.conditions.vit_score import VitScore, chroma_frames, no_melody, score_chroma
    from synthesis.pipeline import load_run_models

    setup = load_run_models(load_config("tiny"), "cpu")
    condition = VitScore(setup)
    melody = condition.musicgen
    prefix = melody.model.config.chroma_length
    score = load_score(drum_and_violin_score(tmp_path / "band.mid"))
    plans, rng = {}, np.random.default_rng(0)
    for name, start in (("drums", 0.0), ("violin", 2.0)):
        segment = SegmentInput(
            id=f"band.{name}",
            source_id="band",
            index=int(start),
            start=start,
            duration=1.0,
            embeddings=rng.standard_normal((4, setup.encoder.embedding_size)).astype(np.float32),
            frames=np.zeros((4, 32, 32, 3), dtype=np.uint8),
            features={},
            reference_audio=np.zeros((1, melody.sampling_rate), dtype=np.float32),
            reference_rate=melody.sampling_rate,
            score=slice_score(score, start, 1.0),
        )
        assert condition.segment_problem(segment) is None  # drums are notes: the segment stays
        plans[name] = condition.plan(segment, [segment])
    drums, violin = plans["drums"], plans["violin"]
    chroma = score_chroma(slice_score(score, 0.0, 1.0), melody)
    assert np.array_equal(chroma, no_melody(melody, chroma_frames(melody, 1.0)))
    assert drums.provenance["melody"].startswith("null melody (no pitched notes in the window)")
    assert (drums.provenance["score_programs"], drums.provenance["score_drums"]) == ([], True)
    assert torch.equal(
        drums.conditioning.states[:, :prefix], drums.conditioning.null_states[:, :prefix]
    )
    assert violin.provenance["melody"].startswith("score chroma: one-hot per frame")
    assert not torch.equal(
        violin.conditioning.states[:, :prefix], violin.conditioning.null_states[:, :prefix]
    )


@pytest.mark.model  # a tiny model run
def test_train_adapter_for_vit_score_then_generate_with_it(urmp_folder, tmp_path, capsys):
    from synthesis.__main__ import main

    checkpoints = tmp_path / "vit_score"
    arguments = ["train-adapter", "--videos", str(urmp_folder), "--out", str(checkpoints)]
    code = main([*arguments, "--config", "tiny", "--epochs", "2", "--condition", "vit_score"])
    assert code == 0, capsys.readouterr().err
    sidecar = json.loads((checkpoints / "adapter.json").read_text())
    assert sidecar["condition"] == "vit_score"
    assert sidecar["musicgen"] == "tiny-random-melody"
    # the plain video has no score; 02_Air_fl.s001 has no notes: three segments remain
    assert sorted(sidecar["segments"]) == [
        "01_Jupiter_vn_vc.s000",
        "01_Jupiter_vn_vc.s001",
        "02_Air_fl.s000",
    ]
    config = score_config(["reference", "vit_score"])
    config.vit_score.adapter = dataclasses.replace(
        config.vit_score.adapter,
        checkpoint=str(checkpoints / "adapter.safetensors"),
        allow_untrained=False,
    )
    summary = generate_set(urmp_folder, tmp_path / "set", config, "cpu", log=quiet)
    assert summary.manifest_problems == [] and summary.clips_failed == []
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    made = [clip for clip in manifest["clips"] if clip["condition"] == "vit_score"]
    assert len(made) == 3
    for clip in made:
        assert clip["provenance"]["adapter"].startswith("adapter.safetensors sha256:")
        assert clip["provenance"]["model"] == "tiny-random-melody"
    assert manifest["generator"]["checkpoints"]["vit_score_adapter"] == made[0]["provenance"][
        "adapter"
    ]
    # vit_adapter's adapter is refused for vit_score, and the other way round
    config.adapter = dataclasses.replace(
        config.adapter, checkpoint=str(checkpoints / "adapter.safetensors"), allow_untrained=False
    )
    config.conditions = ["reference", "vit_adapter"]
    with pytest.raises(ConfigError, match="trained for the vit_score condition, not vit_adapter"):
        generate_set(urmp_folder, tmp_path / "other", config, "cpu", log=quiet)


@pytest.mark.model  # a tiny model run
def test_cli_tiny_on_a_urmp_folder_makes_every_condition_and_the_set_imports(
    urmp_folder, tmp_path, capsys, make_app
):
    from study_app.extensions import db
    from study_app.services import import_stimulus_set
    from synthesis.__main__ import main

    out = tmp_path / "tiny-urmp"
    code = main(["generate", "--videos", str(urmp_folder), "--out", str(out), "--config", "tiny"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "skipped plain: plain.mp4 has no score" in printed
    assert "skipped segment 02_Air_fl.s001: no notes in the score" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    conditions = load_config("tiny").conditions
    assert {"score_render", "score_diffusion", "vit_score"} <= set(conditions)
    assert len(manifest["segments"]) == 3
    assert len(manifest["clips"]) == 3 * len(conditions)
    for segment in manifest["segments"]:
        clips = [clip for clip in manifest["clips"] if clip["segment"] == segment["id"]]
        assert sorted(clip["condition"] for clip in clips) == sorted(conditions)
        formats = set()
        for clip in clips:
            audio, rate = read_wav(out / clip["path"])
            formats.add((rate, audio.shape))
            assert abs(integrated_loudness(audio, rate) - manifest["loudness_target_lufs"]) < 0.5
        assert len(formats) == 1
    for source in manifest["sources"]:
        assert source["score"].startswith("scores/Sco_")
    app = make_app(f"sqlite:///{tmp_path / 'app.sqlite'}")  # the study app's own import
    with app.app_context():
        db.create_all()
        imported = import_stimulus_set(out, tmp_path / "media")
        assert imported.name == "tiny-urmp"
        assert len(list((tmp_path / "media").rglob("*.wav"))) == len(manifest["clips"])
