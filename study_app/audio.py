"""Small, strict PCM WAV helpers for stimulus sets and the blind audio the app serves.

Why not just use `wave` everywhere: Python 3.11's `wave` reader rejects WAVE_FORMAT_EXTENSIBLE
(how most 24-bit files are written), does not notice a truncated data chunk and says nothing
useful about a corrupt file. Reading therefore walks the RIFF chunks itself and gives a clear
`ValueError`; writing goes through `wave`, which emits exactly RIFF/fmt/data and nothing else, so a
served clip carries no metadata (no LIST/INFO, id3, bext, ...) that could reveal its origin.

Quantization to 16 bit uses plain rounding (no dither): it is deterministic, so rebuilding a set
gives byte-identical files, and an exact negation (R = -L in the headphone check) stays exact.
At the levels used here (about -23 LUFS) the rounding error is far below audibility.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
import wave
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

__all__ = [
    "WavInfo",
    "canonical_wav_bytes",
    "dither_seed",
    "dithered_rendition",
    "dithered_samples",
    "read_wav_info",
    "read_wav_samples",
    "waveform_peaks",
    "wav_bytes",
    "write_wav",
]

PathOrFile = str | os.PathLike[str] | BinaryIO

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM: {00000001-0000-0010-8000-00aa00389b71}
_PCM_SUBFORMAT = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FULL_SCALE_16 = 32767  # writing: +1.0 -> 32767, -1.0 -> -32767 (symmetric, so -x stays -x)
PEAK_BUCKETS = 1024  # waveform_peaks: enough for a canvas 1024 device pixels wide


@dataclass(frozen=True)
class WavInfo:
    """Format of a PCM WAV file; `duration` is frames / sample_rate, the truth for a clip."""

    sample_rate: int
    channels: int
    frames: int
    duration: float
    sample_width: int  # bytes per sample: 1, 2, 3 or 4


@dataclass(frozen=True)
class _Layout:
    info: WavInfo
    data_offset: int
    data_size: int


# Writing ---------------------------------------------------------------------------------------


def write_wav(path_or_file: PathOrFile, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples in [-1, 1] (shape (n,) or (n, channels)) as 16-bit PCM WAV.

    Samples outside [-1, 1] (or NaN/inf) raise `ValueError` instead of being clipped: a clipped
    stimulus is a broken stimulus, and the caller should lower the gain instead.
    """
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[1] < 1:
        raise ValueError(f"samples must have shape (n,) or (n, channels), not {data.shape}")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, not {sample_rate!r}")
    if not np.all(np.isfinite(data)):
        raise ValueError("samples contain NaN or infinite values")
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if peak > 1.0:
        raise ValueError(
            f"samples exceed full scale (peak {peak:.4f} > 1.0); refusing to clip, lower the gain"
        )
    pcm = np.round(data * _FULL_SCALE_16).astype("<i2")
    _write_pcm16(path_or_file, pcm, int(sample_rate))


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """`write_wav` into memory: the bytes of the 16-bit PCM WAV (audio the app renders itself)."""
    buffer = io.BytesIO()
    write_wav(buffer, samples, sample_rate)
    return buffer.getvalue()


def _write_pcm16(path_or_file: PathOrFile, pcm: np.ndarray, sample_rate: int) -> None:
    """Write int16 frames (n, channels) with `wave`: RIFF, fmt and data chunks only."""
    pcm = np.ascontiguousarray(pcm, dtype="<i2")
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, "wb") as f:
            _write_pcm16(f, pcm, sample_rate)
        return
    with wave.open(path_or_file, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.setnframes(pcm.shape[0])  # header written right, so no seek back is needed
        w.writeframesraw(pcm.tobytes())


# Reading ---------------------------------------------------------------------------------------


def read_wav_info(path: PathOrFile) -> WavInfo:
    """Format of a PCM WAV file, reading only its chunk headers (files can be large).

    Raises `ValueError` naming the reason for a non-WAV, truncated, corrupt or non-PCM file.
    """
    with _opened(path) as f:
        return _parse(f).info


def read_wav_samples(path: PathOrFile) -> tuple[np.ndarray, int]:
    """Samples as float32 of shape (n, channels) in [-1, 1), and the sample rate."""
    with _opened(path) as f:
        layout = _parse(f)
        ints = _read_ints(f, layout)
    scale = float(2 ** (8 * layout.info.sample_width - 1))
    return (ints.astype(np.float64) / scale).astype(np.float32), layout.info.sample_rate


def canonical_wav_bytes(path: PathOrFile) -> bytes:
    """The same audio as a canonical 16-bit PCM WAV with only fmt and data chunks.

    Drops every other chunk (LIST/INFO, id3, bext, iXML, cue, ...) that could reveal where a clip
    came from, so the app can serve clips blind. 16-bit samples are copied unchanged; 8-bit are
    widened exactly; 24/32-bit are rounded to 16 bit.
    """
    with _opened(path) as f:
        layout = _parse(f)
        ints = _read_ints(f, layout)
    width = layout.info.sample_width
    if width == 1:
        pcm = ints.astype(np.int32) << 8
    elif width == 2:
        pcm = ints
    else:
        shift = 8 * (width - 2)
        wide = ints.astype(np.int64)
        pcm = np.clip((wide + (1 << (shift - 1))) >> shift, -32768, 32767)
    out = io.BytesIO()
    _write_pcm16(out, pcm.astype("<i2"), layout.info.sample_rate)
    return out.getvalue()


class _opened:
    """Context manager: open a path for reading, or use (and rewind) a given binary file."""

    def __init__(self, path: PathOrFile):
        self._path = path
        self._file: BinaryIO | None = None
        self._owned = False

    def __enter__(self) -> BinaryIO:
        if isinstance(self._path, str | os.PathLike):
            self._file = open(self._path, "rb")  # noqa: SIM115 - closed in __exit__
            self._owned = True
        else:
            self._file = self._path
            self._file.seek(0)
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._owned and self._file is not None:
            self._file.close()


def _parse(f: BinaryIO) -> _Layout:
    """Walk the RIFF chunks; find fmt and data; check that they are complete and consistent."""
    f.seek(0, os.SEEK_END)
    file_size = f.tell()
    f.seek(0)
    header = f.read(12)
    if len(header) < 12:
        raise ValueError(f"not a WAV file: only {len(header)} bytes, no RIFF header")
    riff, _, wave_id = struct.unpack("<4sI4s", header)
    if riff in (b"RIFX", b"RF64", b"BW64"):
        raise ValueError(f"unsupported WAV variant {riff.decode('latin-1')!r}; use RIFF/WAVE")
    if riff != b"RIFF" or wave_id != b"WAVE":
        raise ValueError("not a WAV file: no RIFF/WAVE header")

    fmt: bytes | None = None
    data_offset = data_size = -1
    pos = 12
    while pos + 8 <= file_size:
        f.seek(pos)
        chunk_id, size = struct.unpack("<4sI", f.read(8))
        body = pos + 8
        name = chunk_id.decode("latin-1")
        if chunk_id == b"data":
            if data_offset >= 0:
                raise ValueError("corrupt WAV: more than one data chunk")
            if body + size > file_size:
                raise ValueError(
                    f"truncated WAV: data chunk declares {size} bytes, "
                    f"only {file_size - body} present"
                )
            data_offset, data_size = body, size
        else:
            if body + size > file_size:
                raise ValueError(f"truncated or corrupt WAV: chunk {name!r} runs past end of file")
            if chunk_id == b"fmt ":
                if fmt is not None:
                    raise ValueError("corrupt WAV: more than one fmt chunk")
                fmt = f.read(size)
        pos = body + size + (size & 1)
    if fmt is None:
        raise ValueError("corrupt WAV: no fmt chunk")
    if data_offset < 0:
        raise ValueError("corrupt or truncated WAV: no data chunk")

    if len(fmt) < 16:
        raise ValueError(f"corrupt WAV: fmt chunk has {len(fmt)} bytes, expected at least 16")
    tag, channels, rate, byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise ValueError("corrupt WAV: WAVE_FORMAT_EXTENSIBLE fmt chunk is too short")
        if fmt[24:40] != _PCM_SUBFORMAT:
            raise ValueError("not PCM: WAVE_FORMAT_EXTENSIBLE with a non-PCM subformat")
    elif tag != _WAVE_FORMAT_PCM:
        kind = {3: "IEEE float", 6: "A-law", 7: "mu-law", 0x55: "MP3", 2: "ADPCM"}.get(tag, "")
        raise ValueError(f"not PCM: WAV format tag 0x{tag:04x} {kind}".rstrip())
    if channels < 1:
        raise ValueError("corrupt WAV: zero channels")
    if rate < 1:
        raise ValueError("corrupt WAV: zero sample rate")
    if bits not in (8, 16, 24, 32):
        raise ValueError(f"unsupported PCM sample size: {bits} bits")
    width = bits // 8
    if block_align != channels * width:
        raise ValueError(
            f"corrupt WAV: block_align {block_align} != channels {channels} x {width} bytes"
        )
    if byte_rate != rate * block_align:
        raise ValueError(f"corrupt WAV: byte_rate {byte_rate} != {rate} Hz x {block_align} bytes")
    if data_size % block_align:
        raise ValueError(
            f"corrupt or truncated WAV: data size {data_size} is not a whole number of frames"
        )
    frames = data_size // block_align
    info = WavInfo(
        sample_rate=rate,
        channels=channels,
        frames=frames,
        duration=frames / rate,
        sample_width=width,
    )
    return _Layout(info=info, data_offset=data_offset, data_size=data_size)


def _read_ints(f: BinaryIO, layout: _Layout) -> np.ndarray:
    """The data chunk as signed integers of shape (frames, channels) (int8/16 widened as stored)."""
    f.seek(layout.data_offset)
    raw = f.read(layout.data_size)
    if len(raw) != layout.data_size:
        raise ValueError("truncated WAV: data chunk shorter than declared")
    info = layout.info
    width = info.sample_width
    if width == 1:
        ints = np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128
    elif width == 2:
        ints = np.frombuffer(raw, dtype="<i2")
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
    else:
        ints = np.frombuffer(raw, dtype="<i4")
    return ints.reshape(info.frames, info.channels)


def dither_seed(secret_key: str | bytes, trial_token: str, slot: str) -> str:
    """The seed of a trial slot's dither: HMAC-SHA256 keyed by the app's SECRET_KEY.

    The trial token and the slot are in every media URL, so a seed derived from them alone
    could be recomputed by the participant, who could then regenerate the noise, subtract it
    and hold the canonical file (recognisable by its hash in any later session). Keyed by a
    secret the browser never sees, the noise cannot be regenerated.
    """
    key = secret_key.encode() if isinstance(secret_key, str) else bytes(secret_key)
    if not key:
        raise ValueError("the dither needs a non-empty secret key")
    # NUL separators: tokens and slots never contain one, so no two (token, slot) pairs collide.
    message = b"\0".join((b"sightsound-dither/1", trial_token.encode(), slot.encode()))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def dithered_rendition(canonical: bytes, seed: str) -> bytes:
    """A copy of a canonical 16-bit WAV with its own inaudible +-1 LSB triangular noise.

    Served once per trial slot, so no two slots are ever byte-identical: in ABX, X cannot be
    matched to A or B by comparing downloads, and a clip heard before cannot be recognised by
    its hash. The noise (about -101 dBFS) sits at the level of 16-bit quantisation itself;
    length, format and loudness are unchanged. The same seed gives the same bytes, so Range
    requests of one slot agree. `seed` must be secret (the app passes `dither_seed(...)`):
    whoever knows it can regenerate the noise and undo it.
    """
    return canonical[:44] + dithered_samples(canonical, seed).tobytes()


def dithered_samples(canonical: bytes, seed: str) -> np.ndarray:
    """The samples of `dithered_rendition(canonical, seed)` (little-endian int16), after the
    same 44-byte header: for a writer that sends header and samples without joining them
    (media_accel.ensure_rendition), one copy of the clip fewer."""
    if canonical[:4] != b"RIFF" or canonical[36:40] != b"data":
        raise ValueError("not a canonical 16-bit WAV (fmt then data, nothing else)")
    samples = np.frombuffer(canonical, dtype="<i2", offset=44)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    # Two random bits per sample, one byte each: bit0 - bit1 is -1, 0, +1 with probabilities
    # 1/4, 1/2, 1/4 (triangular). Random bytes are ~10x cheaper than two integer draws, and
    # this runs for every audio request.
    bits = np.frombuffer(rng.bytes(samples.size), dtype=np.uint8)
    noise = (bits & 1).view(np.int8) - ((bits >> 1) & 1).view(np.int8)
    # In 16 bits (half the time of widening to 32 and clipping): the sum wraps only at full
    # scale, where the sample is put back, i.e. clipped.
    dithered = samples + noise
    dithered[(samples == 32767) & (noise == 1)] = 32767
    dithered[(samples == -32768) & (noise == -1)] = -32768
    return dithered.astype("<i2", copy=False)


def waveform_peaks(path: PathOrFile, buckets: int = PEAK_BUCKETS) -> bytes:
    """A clip's waveform outline for drawing, in a body whose size never depends on the clip.

    Layout (little-endian): uint32 frames, uint32 sample rate, then `buckets` pairs of int8
    (min, max) over every channel, each bucket an equal share of the frames (an empty one, in
    a clip shorter than `buckets` frames, is 0, 0), scaled so that 127 is full scale. Always
    8 + 2 * buckets bytes: the page draws the open MUSHRA Reference from it without fetching
    its audio, and a fixed size says nothing about the clip beyond its length in frames,
    which the page may know (every clip of a segment has the same one).
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, not {buckets}")
    samples, rate = read_wav_samples(path)
    frames = samples.shape[0]
    lows = np.zeros(buckets)
    highs = np.zeros(buckets)
    if frames:
        edges = (np.arange(buckets + 1) * frames) // buckets
        lo_per_frame = samples.min(axis=1).astype(np.float64)
        hi_per_frame = samples.max(axis=1).astype(np.float64)
        filled = edges[:-1] < edges[1:]
        starts = edges[:-1][filled]
        # (reduceat over the start of every non-empty bucket: each reduces up to the next start)
        lows[filled] = np.minimum.reduceat(lo_per_frame, starts)
        highs[filled] = np.maximum.reduceat(hi_per_frame, starts)
    pairs = np.stack([lows, highs], axis=1)
    scaled = np.clip(np.round(pairs * 127), -127, 127).astype(np.int8)
    return struct.pack("<II", frames, rate) + scaled.tobytes()
