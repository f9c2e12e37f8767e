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


# Onsets are found at one analysis rate, with every length in seconds, so that a clip's rate
# does not change what is counted (a 2,048-point window at a clip's own rate was 128 ms at
# 16 kHz: notes came out 50 ms late and doubled). The mel bands stop below 16 kHz clips'
# Nyquist frequency, so clips at 16-48 kHz are analysed on the same band.
ONSET_ANALYSIS_RATE = 22050
ONSET_WINDOW_SECONDS = 0.093  # 2,048 samples: fine enough to part a low note from the next
ONSET_HOP_SECONDS = 0.01
ONSET_MEL_BANDS = 256
ONSET_MEL_RANGE_HZ = (27.5, 7500.0)
ONSET_LAG_SECONDS = 0.04  # superflux: the rise over 40 ms, so slow attacks build one peak
ONSET_MAX_BANDS = 3  # superflux: a band's rise counts against its neighbours' maximum (vibrato)
ONSET_WAIT_SECONDS = 0.08  # at most one onset per 80 ms: a breath or bow noise is not a note
ONSET_DELTA = 0.07  # peak height above the local mean, on the envelope scaled to 0..1
ONSET_LATENCY_SECONDS = 0.02  # the flux peaks this long after a struck note (piano, drums)


def onset_times(audio: np.ndarray, rate: int) -> np.ndarray:
    """Note onsets (seconds): the superflux novelty of a log-mel spectrogram, peak-picked.

    The clip is resampled to 22,050 Hz and analysed with a 93 ms window every 10 ms over 256
    mel bands from 27.5 Hz to 7.5 kHz (dB, 80 dB range). Superflux (Boeck & Widmer 2013) takes
    each band's rise over 40 ms against the maximum of it and its neighbours 40 ms earlier, so
    vibrato and tremolo, which move energy between neighbouring bands, do not count, and the
    rise is rectified, so note ends do not count either. librosa's peak picking (Boeck, Krebs
    & Schedl 2012) keeps peaks 0.07 above the mean of the surrounding 0.1 s, the largest within
    30 ms before, at most one per 80 ms, without backtracking; 20 ms (the flux's delay on
    struck notes) is taken off. Measured on rendered scores in docs/analysis.md (Onsets):
    piano and drums F >= 0.93 at 16-48 kHz; legato cello is undercounted (a pitch change
    without a rise in level is no onset to it).

    >>> rate = 16000
    >>> t = np.arange(2 * rate) / rate
    >>> bursts = np.exp(-((t * 4) % 1.0) * 20) * np.sin(2 * np.pi * 440 * t)  # 0, 0.25, ...
    >>> found = onset_times(bursts, rate)
    >>> len(found), bool(np.abs(found - np.arange(8) / 4).max() < 0.03)
    (8, True)
    """
    import librosa

    audio = np.asarray(audio, dtype=float)
    if audio.size == 0:
        return np.zeros(0)
    analysis = ONSET_ANALYSIS_RATE
    if rate != analysis:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=analysis)
    # a note at the very first sample has no rise to detect: lead in with 0.1 s of silence
    lead = int(0.1 * analysis)
    padded = np.concatenate([np.zeros(lead), audio])
    hop = int(round(ONSET_HOP_SECONDS * analysis))
    window = int(round(ONSET_WINDOW_SECONDS * analysis))

    def frames(seconds: float) -> int:
        return max(1, int(round(seconds / ONSET_HOP_SECONDS)))

    power = librosa.feature.melspectrogram(
        y=padded, sr=analysis, n_fft=window, hop_length=hop, n_mels=ONSET_MEL_BANDS,
        fmin=ONSET_MEL_RANGE_HZ[0], fmax=ONSET_MEL_RANGE_HZ[1])
    levels = librosa.power_to_db(power, ref=np.max, top_db=80.0)
    novelty = librosa.onset.onset_strength(
        S=levels, sr=analysis, hop_length=hop, lag=frames(ONSET_LAG_SECONDS),
        max_size=ONSET_MAX_BANDS)
    onsets = librosa.onset.onset_detect(
        onset_envelope=novelty, sr=analysis, hop_length=hop, backtrack=False, units="time",
        pre_max=frames(0.03), post_max=1, pre_avg=frames(0.1), post_avg=frames(0.1) + 1,
        delta=ONSET_DELTA, wait=frames(ONSET_WAIT_SECONDS))
    return np.maximum(onsets - lead / analysis - ONSET_LATENCY_SECONDS, 0.0)


def onset_rate(audio: np.ndarray, rate: int) -> float:
    """Onsets per second (:func:`onset_times`), a cue to articulation.

    The same at every sample rate (to within 3 % on rendered piano and drums at 16-48 kHz).
    Reference: Juslin & Laukka (2003): fast, staccato playing goes with high arousal.

    >>> rate = 22050
    >>> t = np.arange(4 * rate) / rate
    >>> bursts = np.exp(-((t * 3) % 1.0) * 20) * np.sin(2 * np.pi * 440 * t)  # 3 per second
    >>> round(onset_rate(bursts, rate))
    3
    """
    if not len(audio):
        return float("nan")
    return float(len(onset_times(audio, rate)) / (len(audio) / rate))


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
