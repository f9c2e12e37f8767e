"""Video ingest with PyAV: find sources, sample frames, read the reference audio, mute a copy.

Two layouts are understood:
- a plain folder of videos (each video's own audio track is the reference);
- URMP: one folder per piece, e.g. `01_Jupiter_vn_vc/` holding `Vid_01_Jupiter_vn_vc.mp4`, the mix
  `AuMix_01_Jupiter_vn_vc.wav` (the reference), per-instrument tracks `AuSep_1_vn_01_Jupiter.wav`
  and the score `Sco_01_Jupiter_vn_vc.mid`. A plain folder's video may bring its score as
  `<video>.mid` beside it.
"""

from __future__ import annotations

import hashlib
import math
import pathlib
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")

URMP_INSTRUMENTS = {
    "vn": "violin",
    "va": "viola",
    "vc": "cello",
    "db": "double bass",
    "fl": "flute",
    "ob": "oboe",
    "cl": "clarinet",
    "bn": "bassoon",
    "sax": "saxophone",
    "tpt": "trumpet",
    "hn": "horn",
    "tbn": "trombone",
    "tba": "tuba",
}


class VideoError(RuntimeError):
    """A video that cannot be used: corrupt, truncated, without audio, too short."""


# A decode may end this much before the container's stated duration (rounding of the last
# frame's or audio packet's duration, encoder priming) before we call the file truncated.
SHORT_DECODE_TOLERANCE_SECONDS = 0.5


def describe_av_error(error: BaseException) -> str:
    """FFmpeg's error as a clause without its errno or the machine's path of the file.

    PyAV's own text is `[Errno 1094995529] Invalid data found when processing input: '/abs/path'`:
    the number means nothing to a reader and the path must not reach a portable manifest.
    """
    if isinstance(error, av.error.InvalidDataError):
        return "FFmpeg found invalid data (the file is damaged, truncated or not a media file)"
    if isinstance(error, FileNotFoundError):
        return "the file does not exist"
    if isinstance(error, PermissionError):
        return "permission denied"
    reason = getattr(error, "strerror", None) or str(error)
    return f"FFmpeg reports: {str(reason).rstrip('.')}"


def _stated_seconds(stream: Any, container: Any) -> float | None:
    """The duration the file's index states for `stream` (else for the container), if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / av.time_base
    return None


def _stated_end(stream: Any, container: Any) -> Fraction | None:
    """The time (s) at which the file's index says `stream` ends: its start plus its duration.

    On the presentation timeline, as frame times are: a stream that starts late (an MP4 edit
    list, a video track starting after the audio) ends that much later than its length.
    """
    if stream.duration is not None and stream.time_base is not None:
        return (stream.duration + (stream.start_time or 0)) * Fraction(stream.time_base)
    if container.duration is not None:
        return Fraction(container.duration + (container.start_time or 0), av.time_base)
    return None


def _check_complete(
    name: str, what: str, decoded: float, stated: float | None, slack: float
) -> None:
    """Raises VideoError when `decoded` seconds fall short of the `stated` duration.

    A file cut short after its index (an MP4 with `moov` at the start, copied or downloaded
    halfway) still states its full length; FFmpeg decodes the part that is there and stops
    without an error. Such a source is skipped rather than used in part: its audio and video may
    end at different points, and a study should not silently get a shorter performance.
    """
    if stated is not None and decoded + SHORT_DECODE_TOLERANCE_SECONDS + slack < stated:
        raise VideoError(
            f"{name} is truncated or damaged: the file says {stated:.2f} s of {what} but only "
            f"{decoded:.2f} s decode; copy or export it again"
        )


@dataclass
class VideoSource:
    id: str
    video: pathlib.Path
    reference_audio: pathlib.Path | None = None  # None: the video's own audio track
    score: pathlib.Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_id(text: str) -> str:
    """A string made to match the manifest's id pattern ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or "source"
    if not cleaned[0].isalnum():
        cleaned = "s" + cleaned
    return cleaned[:100]


def _urmp_source(folder: pathlib.Path) -> VideoSource | None:
    videos = sorted(folder.glob("Vid_*.mp4"))
    mixes = sorted(folder.glob("AuMix_*.wav"))
    if not videos or not mixes:
        return None
    match = re.match(r"^(\d+)_([^_]+)_(.+)$", folder.name)
    metadata: dict[str, Any] = {"dataset": "URMP"}
    if match:
        codes = match.group(3).split("_")
        metadata["piece"] = match.group(2)
        metadata["instrument"] = ", ".join(URMP_INSTRUMENTS.get(code, code) for code in codes)
    tracks = sorted(path.name for path in folder.glob("AuSep_*.wav"))
    if tracks:
        metadata["tracks"] = tracks
    scores = sorted(folder.glob("Sco_*.mid"))
    return VideoSource(
        id=safe_id(folder.name),
        video=videos[0],
        reference_audio=mixes[0],
        score=scores[0] if scores else None,
        metadata=metadata,
    )


def _score_beside(video: pathlib.Path) -> pathlib.Path | None:
    """`<video>.mid` (or `.midi`) beside a plain folder's video: its score, aligned to the video."""
    for suffix in (".mid", ".midi", ".MID", ".MIDI"):
        candidate = video.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def discover_sources(folder: pathlib.Path) -> list[VideoSource]:
    """URMP piece folders and plain videos directly inside `folder`, sorted by id."""
    sources = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            source = _urmp_source(entry)
            if source is not None:
                sources.append(source)
        elif entry.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(
                VideoSource(id=safe_id(entry.stem), video=entry, score=_score_beside(entry))
            )
    ids = [source.id for source in sources]
    duplicates = sorted({identifier for identifier in ids if ids.count(identifier) > 1})
    if duplicates:
        raise VideoError(f"several videos map to the same source id: {duplicates}")
    return sources


@dataclass
class SampledVideo:
    duration: float  # seconds, from the video stream
    frame_rate: float  # embedding frames per second
    frames: np.ndarray  # (T, size, size, 3) uint8, frame i at i / frame_rate
    motion_rate: float
    motion_frames: np.ndarray  # (M, h, w) float32 grayscale, frame j at j / motion_rate


def _square_crop(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def _sample_count(until: Fraction, rate: Fraction) -> int:
    """How many sample times j / rate (j = 0, 1, ...) lie before `until` seconds: ceil(until*rate).

    Exact (rationals): a sample time equal to a frame's time is not before it, so that frame
    takes the sample (float accumulation of 1 / rate once gave such samples the frame before).
    """
    return max(0, math.ceil(until * rate))


def sample_video(
    path: pathlib.Path,
    frame_rate: float,
    frame_size: int,
    motion_rate: float,
    motion_size: int = 64,
) -> SampledVideo:
    """Decodes the video once, keeping RGB frames at `frame_rate` and gray ones at `motion_rate`.

    Sample j of a rate r is the frame showing at time j / r: the one whose presentation interval
    [pts, next frame's pts) contains it, by the stream's own timestamps, so variable-frame-rate
    video (phones, frames dropped by `mpdecimate`, a frozen stretch without frames) is sampled at
    the right times. The last frame shows until the stream's end as the file states it (else for
    an average frame period); a time before the first frame (a stream starting late) takes the
    first frame. Times are compared exactly, in rationals.
    Frames are centre-cropped to a square (the encoders' input shape) after scaling the shorter
    side to the target size.
    """
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoError(f"cannot open {path.name}: {describe_av_error(error)}") from error
    frames: list[np.ndarray] = []
    motion: list[np.ndarray] = []
    frame_step, motion_step = Fraction(frame_rate), Fraction(motion_rate)

    def showing(frame: Any) -> tuple[np.ndarray, np.ndarray]:
        """`frame` as the encoders' RGB square and the motion features' small gray image."""
        scale = frame_size / min(frame.width, frame.height)
        width = max(frame_size, round(frame.width * scale))
        height = max(frame_size, round(frame.height * scale))
        rgb = _square_crop(frame.to_ndarray(width=width, height=height, format="rgb24"))
        step = max(1, rgb.shape[0] // motion_size)
        return rgb, rgb[::step, ::step].astype(np.float32).mean(axis=2) / 255.0

    def take_until(frame: Any, until: Fraction) -> None:
        """Gives `frame` every sample time before `until` not yet taken (converted only if any)."""
        frame_count = _sample_count(until, frame_step)
        motion_count = _sample_count(until, motion_step)
        if frame_count <= len(frames) and motion_count <= len(motion):
            return
        rgb, gray = showing(frame)
        frames.extend([rgb] * (frame_count - len(frames)))
        motion.extend([gray] * (motion_count - len(motion)))

    with container:
        if not container.streams.video:
            raise VideoError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        average = stream.average_rate or stream.guessed_rate or 25
        frame_period = 1 / Fraction(average)
        stated_end = _stated_end(stream, container)
        current, current_start = None, Fraction(0)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                start = frame.pts * Fraction(frame.time_base or stream.time_base)
                # the frame before this one shows until this one starts (the first frame also
                # stands for any time before it)
                take_until(current if current is not None else frame, start)
                current, current_start = frame, start
        except (av.error.FFmpegError, ValueError) as error:
            raise VideoError(
                f"cannot decode the video of {path.name}: {describe_av_error(error)}"
            ) from error
        if current is None:
            raise VideoError(f"{path.name}: no decodable video frames")
        # How far the decode got, measured as the truncation check always has.
        decoded_end = current_start + frame_period
        _check_complete(
            path.name,
            "video",
            float(decoded_end),
            None if stated_end is None else float(stated_end),
            2 * float(frame_period),
        )
        # The last frame shows until the end the file states. Frames' own durations are no
        # guide: with B-frames FFmpeg hands each frame a duration taken in decoding order.
        end = decoded_end
        if stated_end is not None and stated_end > current_start:
            end = stated_end
        take_until(current, end)
    if not frames:  # the stream ends before time 0
        raise VideoError(f"{path.name}: no decodable video frames")
    duration = float(end if stated_end is None else min(end, stated_end))
    return SampledVideo(duration, frame_rate, np.stack(frames), motion_rate, np.stack(motion))


def read_audio(path: pathlib.Path, sample_rate: int, channels: int) -> np.ndarray:
    """The first audio stream of a video or audio file as float32 (channels, samples)."""
    layout = "mono" if channels == 1 else "stereo"
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoError(f"cannot open {path.name}: {describe_av_error(error)}") from error
    chunks = []
    with container:
        if not container.streams.audio:
            raise VideoError(f"{path.name} has no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
            for converted in resampler.resample(None):  # flush
                chunks.append(converted.to_ndarray())
        except (av.error.FFmpegError, ValueError) as error:
            raise VideoError(
                f"cannot decode the audio of {path.name}: {describe_av_error(error)}"
            ) from error
        stated = _stated_seconds(stream, container)
    if not chunks:
        raise VideoError(f"{path.name}: its audio track holds no samples")
    audio = np.concatenate(chunks, axis=1).astype(np.float32)
    _check_complete(path.name, "audio", audio.shape[1] / sample_rate, stated, 0.0)
    return audio


def write_muted_copy(source: pathlib.Path, destination: pathlib.Path) -> None:
    """Copies the video stream only (no re-encoding), dropping audio and other streams.

    Refuses (VideoError, nothing written) a stream that ends before its index says it does or
    holds a packet FFmpeg marks corrupt: a stream copy would carry the broken tail into the set.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.stem + ".tmp" + destination.suffix)
    try:
        with av.open(str(source)) as input_container:
            input_stream = input_container.streams.video[0]
            indexed = input_stream.frames  # packets the index lists; 0 when it does not say
            copied, end = 0, 0.0
            with av.open(str(temporary), "w", format="mp4") as output_container:
                output_stream = output_container.add_stream_from_template(input_stream)
                for packet in input_container.demux(input_stream):
                    if packet.dts is None:
                        continue  # the demuxer's flush packet
                    if packet.is_corrupt:
                        raise VideoError(f"{source.name} holds a corrupt video packet")
                    if packet.pts is not None and packet.time_base is not None:
                        ticks = packet.pts + (packet.duration or 0)
                        end = max(end, float(ticks * packet.time_base))
                    copied += 1
                    packet.stream = output_stream
                    output_container.mux(packet)
            if indexed and copied < indexed:
                raise VideoError(
                    f"{source.name} is truncated: its index lists {indexed} video packets but "
                    f"only {copied} can be read"
                )
            stated = _stated_seconds(input_stream, input_container)
            start = 0.0
            if input_stream.start_time is not None and input_stream.time_base is not None:
                start = float(input_stream.start_time * input_stream.time_base)
            _check_complete(source.name, "video packets", end - start, stated, 0.0)
    except VideoError:
        temporary.unlink(missing_ok=True)
        raise
    except (av.error.FFmpegError, ValueError) as error:
        temporary.unlink(missing_ok=True)
        raise VideoError(
            f"cannot copy the video stream of {source.name} into an MP4 (codec "
            f"not allowed in MP4?): {describe_av_error(error)}"
        ) from error
    temporary.replace(destination)
