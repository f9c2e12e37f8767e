"""How well `analysis.cues.onset_times` counts notes: rendered scores with known onsets.

Piano, flute, cello and a drum kit (General MIDI channel 10) each play two melodies of known
notes (varied rhythm, legato and detached notes, repeated pitches, a rest), rendered by
FluidSynth with the FluidR3 General MIDI SoundFont at 16, 32, 44.1 and 48 kHz (reverb and
chorus off, as `synthesis/conditions/score_render.py` renders). Each detector's onsets are
scored with mir_eval's onset F-measure (a detection counts within 50 ms of a note onset, each
at most once) and with the ratio of onsets per second to the notes per second. The `tuning`
melodies were used to choose the detector's settings, the `heldout` ones were not.

    .venv/bin/python scripts/onset_accuracy.py            # the docs' table (about a minute)

`tests/analysis/test_analysis_onsets.py` imports the melodies and the renderer from here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RATES = (16000, 32000, 44100, 48000)
WINDOW = 0.05  # mir_eval's default onset tolerance, seconds
LEAD_IN = 0.3  # seconds of silence before the first note

Note = tuple[int, float, float, int]  # pitch, start s, end s, velocity

# (GM program, lowest pitch used as the melody's tonic); drums are on channel 10
INSTRUMENTS = {"piano": (0, 60), "flute": (73, 74), "cello": (42, 45), "drums": (0, 0)}

# Each melody: (scale degree, beats, articulation) with "l" legato (held into the next note),
# "d" detached (70 % of its length), "s" staccato (a third) and "r" a rest of that length.
TUNING = [
    (0, 1.0, "d"), (2, 0.5, "l"), (4, 0.5, "l"), (5, 1.0, "d"), (4, 0.5, "s"), (4, 0.5, "s"),
    (7, 1.5, "l"), (5, 0.5, "l"), (4, 1.0, "d"), (0, 1.0, "r"), (2, 0.25, "d"), (4, 0.25, "d"),
    (5, 0.5, "l"), (7, 0.5, "l"), (9, 0.75, "l"), (7, 0.25, "l"), (5, 1.0, "d"), (2, 0.5, "s"),
    (0, 2.0, "d"),
]
HELDOUT = [
    (4, 0.75, "l"), (5, 0.25, "l"), (7, 1.0, "d"), (7, 0.33, "s"), (7, 0.33, "s"),
    (9, 0.34, "l"), (7, 1.0, "l"), (4, 0.5, "d"), (0, 0.5, "r"), (2, 0.5, "l"), (4, 0.5, "l"),
    (2, 0.5, "l"), (0, 0.5, "l"), (-1, 1.5, "d"), (0, 0.5, "s"), (4, 0.5, "d"), (7, 0.5, "l"),
    (12, 2.0, "d"),
]
MELODIES = {"tuning": (TUNING, 100.0), "heldout": (HELDOUT, 84.0)}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
# drum patterns: beats, GM percussion keys struck together (kick 36, snare 38, closed hat 42,
# open hat 46, low/mid/high tom 45/47/50, crash 49, ride 51)
DRUMS = {
    "tuning": [
        (1.0, (36, 42)), (0.5, (42,)), (0.5, (42,)), (1.0, (38, 42)), (0.5, (42,)), (0.5, (36,)),
        (0.75, (36, 42)), (0.25, (36,)), (1.0, (38, 46)), (0.5, (42,)), (0.5, (42,)),
        (0.25, (50,)), (0.25, (47,)), (0.5, (45,)), (1.0, (36, 49)), (2.0, (51,)),
    ],
    "heldout": [
        (0.5, (36, 51)), (0.5, (51,)), (0.5, (38, 51)), (0.25, (51,)), (0.25, (36,)),
        (0.5, (36, 51)), (0.5, (38, 51)), (1.0, (46,)), (0.33, (38,)), (0.33, (38,)),
        (0.34, (38,)), (0.5, (45,)), (0.5, (47,)), (1.0, (36, 49)), (1.0, (42,)), (2.0, (38,)),
    ],
}


def degree_pitch(tonic: int, degree: int) -> int:
    """A major-scale degree (0 = tonic, negative below, 7 = the octave) as a MIDI pitch."""
    octave, step = divmod(degree, 7)
    return tonic + 12 * octave + MAJOR[step]


def melody_notes(name: str, tonic: int) -> list[Note]:
    """The notes of melody `name` on `tonic`: legato notes held to the next onset."""
    steps, bpm = MELODIES[name]
    beat = 60.0 / bpm
    time, notes = LEAD_IN, []
    velocities = (96, 72, 84, 64, 104, 78)
    for index, (degree, beats, articulation) in enumerate(steps):
        length = beats * beat
        if articulation != "r":
            held = {"l": 1.0, "d": 0.7, "s": 0.33}[articulation] * length
            velocity = velocities[index % len(velocities)]
            notes.append((degree_pitch(tonic, degree), time, time + held, velocity))
        time += length
    return notes


def drum_hits(name: str) -> list[Note]:
    """The drum pattern `name` as notes (key, start, start + 0.1 s, velocity)."""
    beat, time, notes = 60.0 / 100.0, LEAD_IN, []
    for index, (beats, keys) in enumerate(DRUMS[name]):
        for key in keys:
            notes.append((key, time, time + 0.1, 110 if index % 4 == 0 else 80))
        time += beats * beat
    return notes


def score(instrument: str, name: str) -> list[Note]:
    """The notes `instrument` plays for melody `name`."""
    if instrument == "drums":
        return drum_hits(name)
    return melody_notes(name, INSTRUMENTS[instrument][1])


def onsets_of(notes: list[Note]) -> np.ndarray:
    """The distinct note onsets (strokes struck together are one onset), seconds."""
    return np.unique(np.round([start for _, start, _, _ in notes], 6))


def render(instrument: str, notes: list[Note], rate: int) -> np.ndarray:
    """Mono float audio of `notes` played by `instrument`, by FluidSynth (reverb, chorus off)."""
    import pretty_midi

    command = shutil.which("fluidsynth")
    if command is None or not SOUNDFONT.is_file():
        raise FileNotFoundError("needs fluidsynth and fluid-soundfont-gm (`make fluidsynth`)")
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    part = pretty_midi.Instrument(program=INSTRUMENTS[instrument][0],
                                  is_drum=instrument == "drums")
    part.notes = [pretty_midi.Note(velocity, pitch, start, end)
                  for pitch, start, end, velocity in notes]
    midi.instruments.append(part)
    with tempfile.TemporaryDirectory(prefix="onsets-") as folder:
        midi_path, raw_path = Path(folder) / "score.mid", Path(folder) / "score.raw"
        midi.write(str(midi_path))
        subprocess.run(
            [command, "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(rate),
             "-T", "raw", "-O", "float", "-E", "little", "-F", str(raw_path), str(SOUNDFONT),
             str(midi_path)],
            check=True, capture_output=True, timeout=120)
        samples = np.fromfile(raw_path, dtype="<f4").reshape(-1, 2)
    return samples.mean(axis=1).astype(np.float64)


def legacy_onset_times(audio: np.ndarray, rate: int) -> np.ndarray:
    """The detector `onset_rate` used before issue 26, for the 'before' columns: librosa's
    onset_detect on the clip's own rate with a 2048-point window and a hop of 512 samples."""
    import librosa

    padded = np.concatenate([np.zeros(int(0.1 * rate)), np.asarray(audio, dtype=float)])
    return librosa.onset.onset_detect(y=padded, sr=rate, hop_length=512, units="time") - 0.1


def evaluate(
    detector: Callable[[np.ndarray, int], np.ndarray], audio: np.ndarray, rate: int,
    truth: np.ndarray,
) -> dict[str, float]:
    """F-measure, precision, recall (mir_eval, 50 ms) and detected / true onset count."""
    import mir_eval

    found = np.asarray(detector(audio, rate), dtype=float)
    f_measure, precision, recall = mir_eval.onset.f_measure(truth, found, window=WINDOW)
    return {"f": f_measure, "p": precision, "r": recall, "ratio": len(found) / len(truth)}


def table(melody: str, detectors: dict[str, Callable]) -> list[str]:
    """Markdown rows: instrument, rate, then F / P / R / count ratio per detector."""
    rows = []
    for instrument in INSTRUMENTS:
        notes = score(instrument, melody)
        truth = onsets_of(notes)
        for rate in RATES:
            audio = render(instrument, notes, rate)
            cells = []
            for detector in detectors.values():
                result = evaluate(detector, audio, rate, truth)
                cells.append(f"{result['f']:.2f} / {result['p']:.2f} / {result['r']:.2f} / "
                             f"x{result['ratio']:.2f}")
            rows.append(f"| {instrument} | {rate / 1000:g} | {len(truth)} | "
                        + " | ".join(cells) + " |")
    return rows


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from analysis.cues import onset_times

    detectors = {"before": legacy_onset_times, "after": onset_times}
    for melody in MELODIES:
        print(f"\n{melody} melody: F / precision / recall / onsets found per note")
        print("| instrument | kHz | notes | " + " | ".join(detectors) + " |")
        print("|---|---|---|" + "---|" * len(detectors))
        print("\n".join(table(melody, detectors)))


if __name__ == "__main__":
    main()
