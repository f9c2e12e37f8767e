"""Scores: a source's MIDI score, sliced to each segment's time window, and what comes from it.

URMP ships every piece's score as MIDI (`Sco_*.mid`), aligned to the mix, which is aligned to the
video; a plain folder's video may bring `<video>.mid` beside it, read as aligned to the video's
own audio. Times are converted to seconds through the MIDI's tempo map (pretty_midi), so tempo
changes are honoured, and a slice is written back with one fixed tempo: its notes keep their
times in seconds, whatever the original's tempo map was.
"""

from __future__ import annotations

import io
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthesis.video import file_sha256

# A note shorter than this after cutting at a window's edge is dropped: it would be a click.
MIN_NOTE_SECONDS = 0.005


class ScoreError(ValueError):
    """A score that cannot be read."""


@dataclass
class Score:
    name: str  # file name (never the machine's path: it reaches the manifest)
    sha256: str
    midi: Any  # pretty_midi.PrettyMIDI
    offset: float = 0.0  # score seconds at the video's t = 0


def load_score(path: pathlib.Path, offset: float = 0.0) -> Score:
    """Reads a MIDI score; a ScoreError names the file when it cannot be read."""
    import pretty_midi

    try:
        midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as error:  # mido and pretty_midi raise many kinds for a damaged file
        raise ScoreError(f"cannot read the score {path.name}: {error}") from error
    return Score(path.name, file_sha256(path), midi, offset)


@dataclass
class ScoreSlice:
    """The notes of one segment's window, in seconds from the window's start."""

    midi: Any  # pretty_midi.PrettyMIDI holding only the window's notes
    start: float  # window in the score's own seconds
    duration: float
    score_name: str
    score_sha256: str

    @property
    def note_count(self) -> int:
        return sum(len(instrument.notes) for instrument in self.midi.instruments)

    def pitched_notes(self) -> list[Any]:
        """Every non-drum note, sorted by onset."""
        notes = [
            note
            for instrument in self.midi.instruments
            if not instrument.is_drum
            for note in instrument.notes
        ]
        return sorted(notes, key=lambda note: (note.start, note.pitch))

    def programs(self) -> list[int]:
        """The General MIDI programs of the pitched instruments playing in the window.

        Drum tracks (MIDI channel 10) are left out: their program number picks a drum kit, not
        an instrument, and a kit's usual 0 would read as piano. `has_drums` says they play.
        """
        return sorted(
            {
                int(instrument.program)
                for instrument in self.midi.instruments
                if not instrument.is_drum
            }
        )

    def has_drums(self) -> bool:
        """Whether a drum track plays in the window (a slice keeps only instruments with notes)."""
        return any(instrument.is_drum for instrument in self.midi.instruments)

    def is_unpitched(self) -> bool:
        """No pitched note in the window: drums only, or nothing (no melody, no harmony)."""
        return not self.pitched_notes()

    def midi_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.midi.write(buffer)
        return buffer.getvalue()

    def provenance(self) -> dict[str, Any]:
        return {
            "score": self.score_name,
            "score_sha256": self.score_sha256,
            "score_window": {
                "start": round(self.start, 6),
                "end": round(self.start + self.duration, 6),
            },
            "score_notes": int(self.note_count),
            "score_programs": self.programs(),
            "score_drums": self.has_drums(),
        }


def _last_before(events: list[Any], time: float) -> Any | None:
    earlier = [event for event in events if event.time <= time]
    return earlier[-1] if earlier else None


def slice_score(score: Score, start: float, duration: float) -> ScoreSlice:
    """The notes sounding in [start, start + duration) of the video's time, cut at its edges.

    A note that crosses an edge is cut there and keeps its velocity (a held note is still heard
    at the start of the segment). Controllers (e.g. the sustain pedal) and pitch bends take the
    value they had at the window's start, then change as in the score.
    """
    import pretty_midi

    window_start = start + score.offset
    window_end = window_start + duration
    # One fixed tempo: the window's notes are placed in seconds, which the original's tempo map
    # already gave them. The resolution is the original's (at least 480) so times stay fine.
    resolution = max(int(score.midi.resolution), 480)
    sliced = pretty_midi.PrettyMIDI(resolution=resolution, initial_tempo=120.0)
    for instrument in score.midi.instruments:
        kept = pretty_midi.Instrument(
            program=instrument.program, is_drum=instrument.is_drum, name=instrument.name
        )
        for note in instrument.notes:
            note_start = max(note.start, window_start)
            note_end = min(note.end, window_end)
            if note_end - note_start < MIN_NOTE_SECONDS:
                continue
            kept.notes.append(
                pretty_midi.Note(
                    velocity=note.velocity,
                    pitch=note.pitch,
                    start=note_start - window_start,
                    end=note_end - window_start,
                )
            )
        if not kept.notes:
            continue
        controls = sorted(instrument.control_changes, key=lambda change: change.time)
        for number in sorted({change.number for change in controls}):
            same = [change for change in controls if change.number == number]
            held = _last_before(same, window_start)
            if held is not None:
                kept.control_changes.append(pretty_midi.ControlChange(number, held.value, 0.0))
            kept.control_changes += [
                pretty_midi.ControlChange(number, change.value, change.time - window_start)
                for change in same
                if window_start < change.time < window_end
            ]
        bends = sorted(instrument.pitch_bends, key=lambda bend: bend.time)
        held_bend = _last_before(bends, window_start)
        if held_bend is not None:
            kept.pitch_bends.append(pretty_midi.PitchBend(held_bend.pitch, 0.0))
        kept.pitch_bends += [
            pretty_midi.PitchBend(bend.pitch, bend.time - window_start)
            for bend in bends
            if window_start < bend.time < window_end
        ]
        sliced.instruments.append(kept)
    return ScoreSlice(sliced, window_start, duration, score.name, score.sha256)


def pitch_class_energy(
    score_slice: ScoreSlice, frame_rate: float, frames: int | None = None
) -> np.ndarray:
    """(frames, 12): per frame, velocity x seconds sounding of each pitch class (drums left out).

    Computed from the notes, not from audio: the score's own harmony, frame by frame.
    """
    count = frames if frames is not None else int(np.ceil(score_slice.duration * frame_rate))
    energy = np.zeros((count, 12), dtype=np.float64)
    edges = np.arange(count + 1) / frame_rate
    for note in score_slice.pitched_notes():
        overlap = np.clip(
            np.minimum(edges[1:], note.end) - np.maximum(edges[:-1], note.start), 0.0, None
        )
        energy[:, note.pitch % 12] += overlap * note.velocity
    return energy


def one_hot_chroma(energy: np.ndarray) -> np.ndarray:
    """Each frame's strongest pitch class as one-hot, as MusicGen-melody's feature extractor does.

    Its extractor turns audio chroma into the argmax one-hot per frame, and a silent frame's
    argmax is pitch class 0 (C); frames without notes get the same here, so the model sees
    what it was trained on.
    """
    chroma = np.zeros_like(energy, dtype=np.float32)
    chroma[np.arange(len(energy)), energy.argmax(axis=1)] = 1.0
    return chroma
