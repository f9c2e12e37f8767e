"""Musical cues to perceived emotion, measured on audio, one function per quantity.

The cues are those the music-emotion literature relates to the emotion listeners hear: tempo,
mode, sound level and its variability, articulation (here: onset rate), timbre brightness
(spectral centroid) and the pitch material (Juslin & Laukka 2003, Psychological Bulletin
129:770, Table 11; Gabrielsson & Lindstroem 2010, in Juslin & Sloboda (eds.), *Handbook of
Music and Emotion*, ch. 14). ``analysis.objective`` measures each for a generated clip and for
the reference clip of its segment and reports the difference; the report relates those
differences to the listeners' rating differences.

Pitch-class content comes from librosa's constant-Q chroma (:func:`chroma_cqt`); keys and mode
from correlating it with a key profile (Krumhansl & Kessler 1982; Temperley 1999), key agreement
with ``mir_eval.key.weighted_score`` (the MIREX key score).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import distance

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
HOP = 512

# Krumhansl & Kessler (1982), probe-tone ratings, tonic first (Krumhansl 1990, Table 2.1).
KRUMHANSL_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KRUMHANSL_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
# Temperley (1999), "What's key for key?", Music Perception 17:65, Figure 3.
TEMPERLEY_MAJOR = (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0)
TEMPERLEY_MINOR = (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0)
PROFILES = {
    "krumhansl": (KRUMHANSL_MAJOR, KRUMHANSL_MINOR),
    "temperley": (TEMPERLEY_MAJOR, TEMPERLEY_MINOR),
}


def chroma_cqt(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mean 12-bin constant-Q chroma (C first), as a distribution summing to 1.

    librosa's ``chroma_cqt`` over constant-Q *power* (36 bins per octave from C1, seven octaves,
    tuning fixed at A4 = 440 Hz: estimating it on a few seconds is unreliable, and each class
    spans +-50 cents), frames unnormalised, so loud frames weigh more and silent ones do not
    add noise. Constant-Q bins are a third of a
    semitone wide at every octave, so low notes get a pitch class of their own, which a
    2,048-point STFT cannot give below about C4.
    Reference: Brown (1991), JASA 89:425; McFee et al. (2015), librosa, Proc. SciPy.

    >>> rate = 22050
    >>> t = np.arange(rate) / rate
    >>> a2 = np.sin(2 * np.pi * 110.0 * t)
    >>> PITCH_CLASSES[int(np.argmax(chroma_cqt(a2, rate)))]
    'A'
    """
    import librosa

    with warnings.catch_warnings():
        # The CQT's decimated top octaves warn that n_fft exceeds a short clip: harmless.
        warnings.simplefilter("ignore", UserWarning)
        # power, not magnitude: a magnitude sum lets the noise floor of 21 bins per class
        # (7 octaves x 3) weigh as much as a decaying note (tritone-apart bursts read 0.5 alike)
        power = np.abs(librosa.cqt(np.asarray(audio, dtype=np.float32), sr=rate, hop_length=HOP,
                                   fmin=librosa.note_to_hz("C1"), n_bins=7 * 36,
                                   bins_per_octave=36, tuning=0.0)) ** 2
        values = librosa.feature.chroma_cqt(C=power, sr=rate, hop_length=HOP, norm=None,
                                            bins_per_octave=36, n_octaves=7, tuning=0.0)
    profile = values.mean(axis=1)
    total = profile.sum()
    return profile / total if total > 0 else np.full(12, 1 / 12)


def key_correlations(chroma: np.ndarray, profile: str = "krumhansl") -> np.ndarray:
    """Pearson r of a 12-bin chroma with the 24 key profiles: C..B major, then C..B minor.

    The Krumhansl-Schmuckler key-finding algorithm (Krumhansl 1990, ch. 4).

    >>> c_major_triad = np.eye(12)[[0, 4, 7]].sum(axis=0)
    >>> int(np.argmax(key_correlations(c_major_triad)))  # 0 = C major
    0
    """
    major, minor = (np.asarray(p, dtype=float) for p in PROFILES[profile])
    chroma = np.asarray(chroma, dtype=float)
    rows = [np.roll(major, shift) for shift in range(12)]
    rows += [np.roll(minor, shift) for shift in range(12)]
    return np.array([np.corrcoef(chroma, row)[0, 1] for row in rows])


def estimate_key(chroma: np.ndarray, profile: str = "krumhansl") -> str:
    """The best-correlated key, in mir_eval's spelling ("C major", "A minor").

    Reference: Krumhansl (1990), *Cognitive Foundations of Musical Pitch*, ch. 4.

    >>> estimate_key(np.eye(12)[[9, 0, 4]].sum(axis=0))  # A, C, E
    'A minor'
    """
    best = int(np.argmax(key_correlations(chroma, profile)))
    return f"{PITCH_CLASSES[best % 12]} {'major' if best < 12 else 'minor'}"


def mode_strength(chroma: np.ndarray, profile: str = "krumhansl") -> float:
    """Best major-key correlation minus best minor-key correlation (> 0: major).

    A continuous mode cue, as MIRtoolbox's ``mirmode`` (Lartillot & Toiviainen 2007, DAFx);
    mode is the cue most strongly tied to perceived valence (Gabrielsson & Lindstroem 2010).

    >>> round(mode_strength(np.eye(12)[[0, 4, 7]].sum(axis=0)), 3)  # C major triad
    0.074
    """
    correlations = key_correlations(chroma, profile)
    return float(correlations[:12].max() - correlations[12:].max())


def mode(chroma: np.ndarray, profile: str = "krumhansl") -> str:
    """"major" or "minor": the sign of :func:`mode_strength` (ties read as major).

    >>> mode(np.eye(12)[[0, 3, 7]].sum(axis=0))  # C, Eb, G
    'minor'
    """
    return "major" if mode_strength(chroma, profile) >= 0 else "minor"


def key_agreement(estimated: str, reference: str) -> float:
    """MIREX key score via ``mir_eval.key.weighted_score``: 1 same key, 0.5 a fifth apart,
    0.3 relative, 0.2 parallel, else 0.

    Reference: Raffel et al. (2014), mir_eval, Proc. ISMIR; MIREX audio key detection.

    >>> key_agreement("G major", "C major"), key_agreement("A minor", "C major")
    (0.5, 0.3)
    """
    import mir_eval

    return float(mir_eval.key.weighted_score(reference, estimated))


def pitch_class_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, 0..1) between two pitch-class distributions.

    Symmetric and bounded, and unlike cosine similarity it treats the vectors as
    distributions. Reference: Lin (1991), IEEE Trans. Inf. Theory 37:145.

    >>> round(pitch_class_distance(np.eye(12)[0], np.eye(12)[7]), 3)  # disjoint
    1.0
    """
    p, q = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(distance.jensenshannon(p / p.sum(), q / q.sum(), base=2))


def loudness(audio: np.ndarray, rate: int) -> float:
    """Integrated loudness (LUFS), ITU-R BS.1770-4, via pyloudnorm.

    Reference: ITU-R BS.1770-4 (2015); Steinmetz & Reiss (2021), pyloudnorm, AES Convention.

    >>> rate = 48000
    >>> tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(5 * rate) / rate)
    >>> round(loudness(tone, rate) - loudness(tone / 2, rate), 2)
    6.02
    """
    import pyloudnorm

    return float(pyloudnorm.Meter(rate).integrated_loudness(np.asarray(audio, dtype=float)))


def dynamic_range(audio: np.ndarray, rate: int, window: float = 0.4, hop: float = 0.1) -> float:
    """Level spread in dB: 95th minus 10th percentile of 400 ms RMS levels, gated.

    The percentiles and the gates (absolute -70 dBFS, relative -20 dB below the power mean)
    follow EBU Tech 3342's loudness range, on plain RMS windows short enough for clips of a
    few seconds (LRA's 3 s windows give a 6 s clip only a handful of values).

    >>> rate = 16000
    >>> t = np.arange(4 * rate) / rate
    >>> gain = np.where((t % 1.0) < 0.5, 0.5, 0.125)  # 12.04 dB steps
    >>> round(dynamic_range(gain * np.sin(2 * np.pi * 440 * t), rate), 1)
    12.0
    """
    import librosa

    length, step = int(round(window * rate)), int(round(hop * rate))
    rms = librosa.feature.rms(y=np.asarray(audio, dtype=float), frame_length=length,
                              hop_length=step, center=False)[0]
    levels = 20 * np.log10(np.maximum(rms, 1e-10))
    levels = levels[levels > -70.0]
    if levels.size == 0:
        return float("nan")
    mean_level = 10 * np.log10(np.mean(10 ** (levels / 10)))
    levels = levels[levels > mean_level - 20.0]
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))


def onset_rate(audio: np.ndarray, rate: int) -> float:
    """Onsets per second (librosa's spectral-flux onset detector), a cue to articulation.

    Reference: Boeck, Krebs & Schedl (2012), ISMIR (the detector's peak picking); Juslin &
    Laukka (2003): fast, staccato playing goes with high arousal.

    >>> rate = 22050
    >>> t = np.arange(4 * rate) / rate
    >>> bursts = np.exp(-((t * 3) % 1.0) * 20) * np.sin(2 * np.pi * 440 * t)  # 3 per second
    >>> round(onset_rate(bursts, rate))
    3
    """
    import librosa

    # a note at the very first sample has no rise to detect: lead in with 0.1 s of silence
    padded = np.concatenate([np.zeros(int(0.1 * rate)), np.asarray(audio, dtype=float)])
    onsets = librosa.onset.onset_detect(y=padded, sr=rate, hop_length=HOP, units="time")
    return float(len(onsets) / (len(audio) / rate)) if len(audio) else float("nan")


def spectral_centroid(audio: np.ndarray, rate: int) -> float:
    """Centroid (Hz) of the clip's mean power spectrum: brightness.

    The centroid of the mean spectrum weighs frames by their energy, so quiet frames (whose
    centroid is that of the noise floor) do not pull it. Reference: Grey & Gordon (1978), JASA
    63:1493; the brightness cue of Juslin & Laukka (2003).

    >>> rate = 16000
    >>> tone = np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)
    >>> abs(spectral_centroid(tone, rate) - 1000) < 20
    True
    """
    import librosa

    power = np.abs(librosa.stft(np.asarray(audio, dtype=float), n_fft=2048, hop_length=HOP)) ** 2
    mean = power.mean(axis=1)
    freqs = librosa.fft_frequencies(sr=rate, n_fft=2048)
    return float((freqs * mean).sum() / mean.sum()) if mean.sum() > 0 else float("nan")


def log2_ratio(value: float, reference: float) -> float:
    """Signed difference in octaves (doublings): how tempo, onset rate and centroid compare.

    >>> log2_ratio(240.0, 120.0), log2_ratio(60.0, 120.0)
    (1.0, -1.0)
    """
    if not (value > 0 and reference > 0):
        return float("nan")
    return float(np.log2(value / reference))
