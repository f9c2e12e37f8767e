"""Load and validate a stimulus set: the contract between `synthesis` and `study_app`.

A set is a folder with `manifest.json` (see `stimuli/manifest.schema.json`) and the files it names.
`load_stimulus_set` refuses a set unless a blind comparison of its clips is sound: every file is
there, is what the manifest says it is (sha256, WAV format, duration) and lies inside the folder,
and the clips of one segment differ in nothing but their content (duration, sample rate, channel
count, loudness). It reports every problem at once, so a researcher can fix a set in one pass.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from .audio import read_wav_info

__all__ = [
    "Clip",
    "REFERENCE",
    "SCHEMA_PATH",
    "Segment",
    "Source",
    "StimulusSet",
    "StimulusSetError",
    "load_stimulus_set",
]

REFERENCE = "reference"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "stimuli" / "manifest.schema.json"

DURATION_TOLERANCE_S = 0.001  # clip vs its WAV header, and clips of one segment
SEGMENT_DURATION_TOLERANCE_S = 0.010  # clip vs its segment's nominal duration
LOUDNESS_TOLERANCE_LU = 1.0  # spread of loudness_lufs among the clips of one segment
_HASH_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class StimulusSetError(Exception):
    """A refused stimulus set; `problems` lists every reason, one message each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


@dataclass(frozen=True)
class Source:
    """One performance video (muted) and what is known about it."""

    id: str
    video: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    score: Path | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of a source video; every clip of a segment renders the same stretch."""

    id: str
    source: str
    start: float
    duration: float
    features: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Clip:
    """One audio file: a segment rendered by one condition (`reference` or a system/control)."""

    id: str
    segment: str
    source: str
    condition: str
    path: Path
    sha256: str
    sample_rate: int
    channels: int
    duration: float
    loudness_lufs: float
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StimulusSet:
    """A validated stimulus set; paths are absolute and known to lie inside `folder`."""

    folder: Path
    name: str
    manifest: dict[str, Any]
    sources: tuple[Source, ...]
    segments: tuple[Segment, ...]
    clips: tuple[Clip, ...]

    def conditions(self) -> list[str]:
        """All conditions, sorted, with `reference` first (the order studies list them in)."""
        names = {clip.condition for clip in self.clips}
        return sorted(names, key=lambda c: (c != REFERENCE, c))

    def clips_for_segment(self, segment_id: str) -> dict[str, Clip]:
        """The clips of one segment by condition (empty for an unknown segment)."""
        return {clip.condition: clip for clip in self.clips if clip.segment == segment_id}

    def segment(self, segment_id: str) -> Segment:
        """The segment with this id; KeyError if there is none."""
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        raise KeyError(segment_id)

    def source(self, source_id: str) -> Source:
        """The source with this id; KeyError if there is none."""
        for source in self.sources:
            if source.id == source_id:
                return source
        raise KeyError(source_id)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def load_stimulus_set(folder: Path) -> StimulusSet:
    """Validate the set in `folder` and return it; raise `StimulusSetError` with every problem."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    problems = _Checker(folder, manifest).run()
    if problems:
        raise StimulusSetError(problems)
    return _build(folder.resolve(), manifest)


def _read_manifest(folder: Path) -> dict[str, Any]:
    """manifest.json as a mapping; anything else ends validation here (nothing else to check)."""
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise StimulusSetError([f"stimulus set folder {str(folder)!r} does not exist"])
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StimulusSetError([f"manifest.json: not found in {str(folder)!r}"]) from None
    except OSError as exc:
        raise StimulusSetError([f"manifest.json: cannot be read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StimulusSetError(
            [f"manifest.json: not UTF-8 text (byte {exc.start}: {exc.reason})"]
        ) from None
    try:
        manifest = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise StimulusSetError(
            [f"manifest.json: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from None
    except ValueError as exc:
        raise StimulusSetError([f"manifest.json: not valid JSON: {exc}"]) from None
    if not isinstance(manifest, dict):
        raise StimulusSetError(
            [f"manifest.json: must be a JSON object, not {type(manifest).__name__}"]
        )
    return manifest


def _refuse_constant(name: str) -> Any:
    """Python's json accepts NaN and Infinity, which are not JSON and break every comparison."""
    raise ValueError(f"{name} is not a JSON number")


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_num(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Collects every problem of a parsed manifest and the files it names."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = folder
        self.root = folder.resolve()
        self.manifest = manifest
        self.problems: list[str] = []

    def add(self, message: str) -> None:
        self.problems.append(message)

    def entries(self, key: str) -> list[tuple[int, dict[str, Any]]]:
        items = self.manifest.get(key)
        if not isinstance(items, list):
            return []
        return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]

    def run(self) -> list[str]:
        self.check_schema()
        sources = self.check_ids("sources", "source")
        segments = self.check_ids("segments", "segment")
        clips = self.check_ids("clips", "clip")
        self.check_references(sources, segments, clips)
        self.check_source_files()
        self.check_clip_files()
        self.check_segments(segments, clips)
        return self.problems

    # Structure ---------------------------------------------------------------------------------

    def label(self, path: list[Any]) -> str:
        """A JSON path like `clips[3].sha256`, prefixed with the entry's id when it has one."""
        text = "$"
        for part in path:
            text += f"[{part}]" if isinstance(part, int) else f".{part}"
        if (
            len(path) >= 2
            and path[0] in ("sources", "segments", "clips")
            and isinstance(path[1], int)
        ):
            items = self.manifest.get(path[0])
            if isinstance(items, list) and path[1] < len(items):
                item = items[path[1]]
                if isinstance(item, dict) and _is_str(item.get("id")):
                    kind = path[0][:-1]
                    return f"{kind} {item['id']!r} ({text})"
        return text

    def check_schema(self) -> None:
        errors = sorted(
            _validator().iter_errors(self.manifest),
            key=lambda e: [str(p) for p in e.absolute_path],
        )
        for error in errors:
            path = list(error.absolute_path)
            self.add(f"schema: {self.label(path)}: {error.message}")

    def check_ids(self, key: str, kind: str) -> dict[str, dict[str, Any]]:
        """Entries by id; duplicates are reported (the first one is kept)."""
        seen: dict[str, int] = {}
        by_id: dict[str, dict[str, Any]] = {}
        for index, item in self.entries(key):
            ident = item.get("id")
            if not _is_str(ident):
                continue
            if ident in seen:
                self.add(f"duplicate {kind} id {ident!r} ({key}[{seen[ident]}] and {key}[{index}])")
                continue
            seen[ident] = index
            by_id[ident] = item
        return by_id

    def check_references(
        self,
        sources: dict[str, dict[str, Any]],
        segments: dict[str, dict[str, Any]],
        clips: dict[str, dict[str, Any]],
    ) -> None:
        for _, segment in self.entries("segments"):
            ref = segment.get("source")
            if _is_str(segment.get("id")) and _is_str(ref) and ref not in sources:
                self.add(f"segment {segment['id']!r}: source {ref!r} is not a source of this set")
        for _, clip in self.entries("clips"):
            ref = clip.get("segment")
            if _is_str(clip.get("id")) and _is_str(ref) and ref not in segments:
                self.add(f"clip {clip['id']!r}: segment {ref!r} is not a segment of this set")

    # Files -------------------------------------------------------------------------------------

    def safe_path(self, owner: str, key: str, value: Any) -> Path | None:
        """The file a manifest path names, or None (problem reported) if it may not be opened.

        Checked on the string first (absolute, drive letters, backslashes, `..`), then on the
        resolved path (symlinks leading out), before anything is opened: a manifest must not make
        the app read, hash or serve a file outside the set's folder.
        """
        if not _is_str(value) or not value:
            return None  # the schema check has reported it
        where = f"{owner}: {key} {value!r}"
        if "\x00" in value:
            self.add(f"{where} contains a NUL character")
            return None
        if "\\" in value:
            self.add(f"{where} contains a backslash; use POSIX '/' separators")
            return None
        if _DRIVE.match(value):
            self.add(f"{where} has a drive letter; paths must be relative to the set's folder")
            return None
        posix = PurePosixPath(value)
        if posix.is_absolute():
            self.add(f"{where} is absolute; paths must be relative to the set's folder")
            return None
        if ".." in posix.parts:
            self.add(f"{where} contains '..'; paths may not leave the set's folder")
            return None
        candidate = self.folder.joinpath(*posix.parts)
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
            self.add(f"{where} cannot be resolved: {exc}")
            return None
        if not resolved.is_relative_to(self.root):
            self.add(f"{where} leaves the set's folder (through a symbolic link)")
            return None
        try:
            info = resolved.stat()
        except FileNotFoundError:
            self.add(f"{where}: file not found")
            return None
        except OSError as exc:
            self.add(f"{where}: cannot be read: {exc.strerror or exc}")
            return None
        if not stat.S_ISREG(info.st_mode):
            self.add(f"{where} is not a regular file")
            return None
        if not os.access(resolved, os.R_OK):
            self.add(f"{where}: cannot be read: permission denied")
            return None
        return resolved

    def check_hash(self, where: str, path: Path, expected: Any, value: str) -> None:
        if not _is_str(expected):
            return
        try:
            actual = sha256_file(path)
        except OSError as exc:
            self.add(f"{where}: path {value!r} cannot be read: {exc.strerror or exc}")
            return
        if actual != expected:
            self.add(
                f"{where}: sha256 mismatch for {value!r}: "
                f"manifest {expected[:12]}..., file {actual[:12]}..."
            )

    def check_source_files(self) -> None:
        for _, source in self.entries("sources"):
            ident = source.get("id")
            owner = f"source {ident!r}" if _is_str(ident) else "source"
            video = self.safe_path(owner, "video", source.get("video"))
            if video is not None and "video_sha256" in source:
                self.check_hash(owner, video, source.get("video_sha256"), source["video"])
            if "score" in source:
                self.safe_path(owner, "score", source.get("score"))

    def check_clip_files(self) -> None:
        for _, clip in self.entries("clips"):
            ident = clip.get("id")
            owner = f"clip {ident!r}" if _is_str(ident) else "clip"
            value = clip.get("path")
            path = self.safe_path(owner, "path", value)
            if path is None:
                continue
            self.check_hash(owner, path, clip.get("sha256"), value)
            try:
                info = read_wav_info(path)
            except OSError as exc:
                self.add(f"{owner}: path {value!r} cannot be read: {exc.strerror or exc}")
                continue
            except ValueError as exc:
                self.add(f"{owner}: path {value!r} is not a valid PCM WAV file: {exc}")
                continue
            rate, channels = clip.get("sample_rate"), clip.get("channels")
            duration = clip.get("duration")
            if _is_int(rate) and rate != info.sample_rate:
                self.add(
                    f"{owner}: sample_rate is {rate} in the manifest "
                    f"but {info.sample_rate} in the WAV header of {value!r}"
                )
            if _is_int(channels) and channels != info.channels:
                self.add(
                    f"{owner}: channels is {channels} in the manifest "
                    f"but {info.channels} in the WAV header of {value!r}"
                )
            if _is_num(duration) and abs(duration - info.duration) > DURATION_TOLERANCE_S:
                self.add(
                    f"{owner}: duration is {duration:.4f} s in the manifest but the WAV file "
                    f"{value!r} holds {info.frames} frames at {info.sample_rate} Hz "
                    f"= {info.duration:.4f} s"
                )

    # Segments ----------------------------------------------------------------------------------

    def check_segments(
        self, segments: dict[str, dict[str, Any]], clips: dict[str, dict[str, Any]]
    ) -> None:
        """Clips of one segment may differ only in content, and one clip per condition."""
        by_segment: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for clip in clips.values():
            if _is_str(clip.get("segment")):
                by_segment[clip["segment"]].append(clip)
        for segment_id, members in by_segment.items():
            where = f"segment {segment_id!r}"
            by_condition: dict[str, list[str]] = defaultdict(list)
            for clip in members:
                if _is_str(clip.get("condition")):
                    by_condition[clip["condition"]].append(clip["id"])
            for condition, ids in sorted(by_condition.items()):
                if len(ids) > 1:
                    self.add(
                        f"{where}: {len(ids)} clips of condition {condition!r} "
                        f"({', '.join(map(repr, ids))}); one per condition is allowed"
                    )
            self.check_spread(where, members, "duration", DURATION_TOLERANCE_S, "{:.4f} s", "s")
            self.check_spread(where, members, "sample_rate", 0, "{} Hz", "Hz")
            self.check_spread(where, members, "channels", 0, "{}", "")
            self.check_spread(
                where, members, "loudness_lufs", LOUDNESS_TOLERANCE_LU, "{:.2f} LUFS", "LU"
            )
            segment = segments.get(segment_id)
            nominal = segment.get("duration") if segment else None
            if not _is_num(nominal):
                continue
            for clip in members:
                duration = clip.get("duration")
                if _is_num(duration) and abs(duration - nominal) > SEGMENT_DURATION_TOLERANCE_S:
                    self.add(
                        f"clip {clip['id']!r}: duration {duration:.4f} s differs from the "
                        f"duration of segment {segment_id!r} ({nominal:.4f} s) by more than "
                        f"{SEGMENT_DURATION_TOLERANCE_S * 1000:.0f} ms"
                    )

    def check_spread(
        self,
        where: str,
        members: list[dict[str, Any]],
        key: str,
        tolerance: float,
        value_format: str,
        unit: str,
    ) -> None:
        """Report a segment whose clips' `key` values spread wider than `tolerance`."""
        values = [(clip["id"], clip[key]) for clip in members if _is_num(clip.get(key))]
        if len(values) < 2:
            return
        low = min(v for _, v in values)
        high = max(v for _, v in values)
        if high - low > tolerance + 1e-9:
            listing = ", ".join(f"{ident!r}={value_format.format(v)}" for ident, v in values)
            limit = f" by more than {tolerance:g} {unit}" if tolerance else ""
            self.add(f"{where}: clips differ in {key}{limit}: {listing}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (videos and long clips can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _build(root: Path, manifest: dict[str, Any]) -> StimulusSet:
    """Typed view of a manifest that passed every check."""

    def resolve(value: str) -> Path:
        return root.joinpath(*PurePosixPath(value).parts).resolve()

    sources = tuple(
        Source(
            id=s["id"],
            video=resolve(s["video"]),
            metadata=dict(s.get("metadata", {})),
            score=resolve(s["score"]) if "score" in s else None,
        )
        for s in manifest["sources"]
    )
    segments = tuple(
        Segment(
            id=s["id"],
            source=s["source"],
            start=float(s["start"]),
            duration=float(s["duration"]),
            features=dict(s.get("features", {})),
        )
        for s in manifest["segments"]
    )
    source_of = {s.id: s.source for s in segments}
    clips = tuple(
        Clip(
            id=c["id"],
            segment=c["segment"],
            source=source_of[c["segment"]],
            condition=c["condition"],
            path=resolve(c["path"]),
            sha256=c["sha256"],
            sample_rate=int(c["sample_rate"]),
            channels=int(c["channels"]),
            duration=float(c["duration"]),
            loudness_lufs=float(c["loudness_lufs"]),
            provenance=dict(c.get("provenance", {})),
        )
        for c in manifest["clips"]
    )
    return StimulusSet(
        folder=root,
        name=manifest["name"],
        manifest=manifest,
        sources=sources,
        segments=segments,
        clips=clips,
    )
