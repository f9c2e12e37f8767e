"""Note-level descriptors from basic-pitch's pretrained transcription model, run offline.

basic-pitch (Bittner et al. 2022, "A lightweight instrument-agnostic model for polyphonic note
transcription and multipitch estimation", ICASSP) ships its ICASSP 2022 model inside its PyPI
wheel, also as ``nmp.onnx``. On Python >= 3.11 the package *requires* TensorFlow < 2.15.1,
which means a 475 MB wheel and numpy < 2 (pip would downgrade the project's numpy 2.x to
1.26), so the project does not install it with its dependencies. It runs the shipped ONNX
file with onnxruntime (about 15 MB) through basic-pitch's own windowing and note-creation
code, which need only librosa, mir_eval, pretty_midi, resampy and scipy (the ``analysis``
extra). :func:`basic_pitch_package` finds basic-pitch either installed
(``pip install --no-deps basic-pitch==0.4.0``) or, failing that, fetches the pinned wheel from
PyPI with pip (``pip download --no-deps``), checks its SHA-256 and unpacks it into a cache
(``$SIGHTSOUND_CACHE``, else ``~/.cache/sightsound``): so ``make test`` on a fresh machine
needs PyPI alone, and no model hub.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

BASIC_PITCH_VERSION = "0.4.0"
BASIC_PITCH_WHEEL = f"basic_pitch-{BASIC_PITCH_VERSION}-py2.py3-none-any.whl"
BASIC_PITCH_WHEEL_SHA256 = "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0"
NOTE_COLUMNS = ["start", "end", "pitch", "amplitude"]


class TranscriptionUnavailable(RuntimeError):
    """basic-pitch or onnxruntime is missing and could not be fetched."""


def cache_dir() -> Path:
    """Where the fetched basic-pitch wheel is unpacked."""
    root = os.environ.get("SIGHTSOUND_CACHE") or Path.home() / ".cache" / "sightsound"
    return Path(root) / f"basic-pitch-{BASIC_PITCH_VERSION}"


def _fetch_wheel(target: Path) -> None:
    """pip download the pinned wheel (no dependencies), check it, unpack basic_pitch/ into
    ``target``. Only the ONNX model of the four serialisations is kept."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--quiet", f"basic-pitch=={BASIC_PITCH_VERSION}", "--dest", scratch]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheel = Path(scratch) / BASIC_PITCH_WHEEL
        if done.returncode != 0 or not wheel.exists():
            raise TranscriptionUnavailable(
                f"could not fetch basic-pitch {BASIC_PITCH_VERSION} from PyPI with pip: "
                f"{done.stderr.strip()[-500:]}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != BASIC_PITCH_WHEEL_SHA256:
            raise TranscriptionUnavailable(f"{BASIC_PITCH_WHEEL}: SHA-256 {digest} is not the "
                                           f"pinned {BASIC_PITCH_WHEEL_SHA256}")
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                models = "basic_pitch/saved_models/"
                if name.startswith("basic_pitch/") and (
                        not name.startswith(models) or name.endswith("nmp.onnx")):
                    archive.extract(name, partial)
        # the rename makes a half-unpacked cache (a killed run) look absent, not broken
        partial.rename(target)


def basic_pitch_package(fetch: bool = True) -> ModuleType:
    """The ``basic_pitch`` package: installed, else from the cache, else fetched (``fetch``).

    Raises :class:`TranscriptionUnavailable` naming what is missing.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        raise TranscriptionUnavailable("onnxruntime is not installed (pip install "
                                       "-e '.[analysis]')")
    # basic_pitch's __init__ logs a warning for each backend it lacks (TF, TFLite, CoreML)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        if "basic_pitch" in sys.modules:
            return sys.modules["basic_pitch"]
        if importlib.util.find_spec("basic_pitch") is not None:
            return importlib.import_module("basic_pitch")
        target = cache_dir()
        if not (target / "basic_pitch" / "__init__.py").exists():
            if not fetch:
                raise TranscriptionUnavailable(
                    f"basic-pitch is neither installed nor cached in {target}; run with "
                    "fetching allowed, or pip install --no-deps basic-pitch==0.4.0")
            target.parent.mkdir(parents=True, exist_ok=True)
            _fetch_wheel(target)
        package_dir = target / "basic_pitch"
        spec = importlib.util.spec_from_file_location(
            "basic_pitch", package_dir / "__init__.py",
            submodule_search_locations=[str(package_dir)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["basic_pitch"] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules["basic_pitch"]
            raise
        return module
    finally:
        logging.disable(previous)


class BasicPitch:
    """basic-pitch's ICASSP 2022 model (ONNX, onnxruntime) as ``(audio, rate) -> notes``.

    Returns a DataFrame with ``start``, ``end`` (s), ``pitch`` (MIDI) and ``amplitude`` per
    note, sorted by start; ``notes.attrs["duration"]`` is the clip's length in seconds. The
    thresholds are basic-pitch's defaults (onset 0.5, frame 0.3, notes >= 127.7 ms).
    """

    def __init__(self, onset_threshold: float = 0.5, frame_threshold: float = 0.3,
                 minimum_note_ms: float = 127.70, fetch: bool = True):
        package = basic_pitch_package(fetch)
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            self._inference = importlib.import_module("basic_pitch.inference")
            self._notes = importlib.import_module("basic_pitch.note_creation")
            self._constants = importlib.import_module("basic_pitch.constants")
        finally:
            logging.disable(previous)
        self.model_path = Path(package.__file__).parent / "saved_models/icassp_2022/nmp.onnx"
        self.model = self._inference.Model(self.model_path)
        self.onset_threshold, self.frame_threshold = onset_threshold, frame_threshold
        self.minimum_note_ms = minimum_note_ms

    def model_output(self, audio: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        """Frame-level note, onset and contour posteriors, as basic-pitch's ``run_inference``
        computes them from a file (its windows of 2 s with 30 frames of overlap)."""
        import librosa

        c = self._constants
        audio = np.asarray(audio, dtype=np.float32)
        if rate != c.AUDIO_SAMPLE_RATE:
            audio = librosa.resample(audio, orig_sr=rate, target_sr=c.AUDIO_SAMPLE_RATE)
        overlap_frames = 30
        overlap = overlap_frames * c.FFT_HOP
        hop = c.AUDIO_N_SAMPLES - overlap
        padded = np.concatenate([np.zeros(overlap // 2, dtype=np.float32), audio])
        output: dict[str, list[np.ndarray]] = {"note": [], "onset": [], "contour": []}
        for window, _ in self._inference.window_audio_file(padded, hop):
            for key, value in self.model.predict(window[None, ...]).items():
                output[key].append(value)
        return {key: self._inference.unwrap_output(np.concatenate(value), len(audio),
                                                   overlap_frames)
                for key, value in output.items()}

    def __call__(self, audio: np.ndarray, rate: int) -> pd.DataFrame:
        c = self._constants
        minimum_frames = int(np.round(self.minimum_note_ms / 1000
                                      * (c.AUDIO_SAMPLE_RATE / c.FFT_HOP)))
        _, events = self._notes.model_output_to_notes(
            self.model_output(audio, rate), onset_thresh=self.onset_threshold,
            frame_thresh=self.frame_threshold, min_note_len=minimum_frames,
            include_pitch_bends=False, melodia_trick=True)
        notes = pd.DataFrame([event[:4] for event in events], columns=NOTE_COLUMNS)
        notes = notes.astype({"start": float, "end": float, "pitch": int, "amplitude": float})
        notes = notes.sort_values(["start", "pitch"], ignore_index=True)
        notes.attrs["duration"] = len(audio) / rate
        return notes


def note_density(notes: pd.DataFrame, duration: float | None = None) -> float:
    """Notes per second. ``duration`` defaults to ``notes.attrs["duration"]``.

    Reference: the "note density" of Gabrielsson & Lindstroem (2010) and of MIR descriptor
    sets (e.g. jSymbolic, McKay & Fujinaga 2006).

    >>> notes = pd.DataFrame({"start": [0.0, 0.5, 1.0], "end": [0.4, 0.9, 1.4],
    ...                       "pitch": [60, 64, 67], "amplitude": [0.5] * 3})
    >>> note_density(notes, duration=2.0)
    1.5
    """
    duration = notes.attrs.get("duration") if duration is None else duration
    return float(len(notes) / duration) if duration else float("nan")


def pitch_range(notes: pd.DataFrame) -> float:
    """Highest minus lowest MIDI pitch (semitones); NaN without notes.

    >>> pitch_range(pd.DataFrame({"pitch": [60, 64, 72]}))
    12.0
    """
    return float(notes["pitch"].max() - notes["pitch"].min()) if len(notes) else float("nan")


def pitch_class_histogram(notes: pd.DataFrame) -> np.ndarray:
    """Duration-weighted distribution of the notes' pitch classes (C first, sums to 1).

    Reference: Krumhansl (1990), ch. 3 (tone profiles from note durations).

    >>> notes = pd.DataFrame({"start": [0.0, 1.0], "end": [1.0, 4.0], "pitch": [60, 67]})
    >>> pitch_class_histogram(notes)[[0, 7]].tolist()
    [0.25, 0.75]
    """
    weights = (notes["end"] - notes["start"]).to_numpy(dtype=float) if len(notes) else []
    histogram = np.bincount(np.asarray(notes["pitch"], dtype=int) % 12, weights=weights,
                            minlength=12)
    total = histogram.sum()
    return histogram / total if total > 0 else histogram


def note_f1(notes: pd.DataFrame, reference: pd.DataFrame, onset_tolerance: float = 0.05) -> float:
    """Note F-measure (onset within 50 ms, pitch within 50 cents, offsets ignored), mir_eval.

    Reference: Raffel et al. (2014), mir_eval; Bay, Ehmann & Downie (2009), ISMIR (MIREX note
    tracking).

    >>> ref = pd.DataFrame({"start": [0.0, 0.5], "end": [0.4, 0.9], "pitch": [60, 62]})
    >>> est = pd.DataFrame({"start": [0.01, 0.5], "end": [0.4, 0.9], "pitch": [60, 64]})
    >>> note_f1(est, ref)
    0.5
    """
    import mir_eval

    if len(notes) == 0 or len(reference) == 0:
        return float(len(notes) == len(reference))

    def parts(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        intervals = frame[["start", "end"]].to_numpy(dtype=float)
        return intervals, mir_eval.util.midi_to_hz(frame["pitch"].to_numpy(dtype=float))

    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        *parts(reference), *parts(notes), onset_tolerance=onset_tolerance, offset_ratio=None)
    return float(f1)


def note_differences(notes: pd.DataFrame, reference: pd.DataFrame) -> dict[str, Any]:
    """A clip's note descriptors against its reference's (columns of ``objective.csv``)."""
    from analysis.cues import pitch_class_distance

    return {
        "notes": len(notes), "notes_reference": len(reference),
        "note_density_diff": note_density(notes) - note_density(reference),
        "pitch_range_diff": pitch_range(notes) - pitch_range(reference),
        "note_pitch_class_distance": pitch_class_distance(pitch_class_histogram(notes),
                                                          pitch_class_histogram(reference)),
        "note_f1": note_f1(notes, reference),
    }
