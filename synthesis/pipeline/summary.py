"""A run's summary: what was used, skipped, reused, written and how fast, as the CLI prints it."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

Log = Callable[[str], None]


@dataclass
class RunSummary:
    set_folder: pathlib.Path
    sources_used: list[str] = field(default_factory=list)
    sources_skipped: list[tuple[str, str]] = field(default_factory=list)
    sources_changed: list[tuple[str, str]] = field(default_factory=list)  # (source, what)
    segments_skipped: list[tuple[str, str]] = field(default_factory=list)  # (segment, why)
    clips_written: int = 0
    clips_reused: int = 0
    clips_failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds_generated: float = 0.0
    generation_seconds: float = 0.0
    seconds: float = 0.0
    manifest_problems: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)  # set-relative paths
    notes: list[str] = field(default_factory=list)  # warnings about the set's features

    def text(self) -> str:
        lines = [
            f"stimulus set: {self.set_folder}",
            f"sources used: {len(self.sources_used)}; skipped: {len(self.sources_skipped)}",
        ]
        lines += [f"  skipped {source}: {reason}" for source, reason in self.sources_skipped]
        lines += [
            f"  changed since the last run, its clips remade: {source} ({what})"
            for source, what in self.sources_changed
        ]
        if self.segments_skipped:
            lines.append(f"segments skipped: {len(self.segments_skipped)}")
            lines += [
                f"  skipped segment {segment}: {reason}"
                for segment, reason in self.segments_skipped
            ]
        lines.append(
            f"clips written: {self.clips_written}; already done: {self.clips_reused}; "
            f"failed: {len(self.clips_failed)}"
        )
        lines += [f"  failed {clip}: {reason}" for clip, reason in self.clips_failed]
        if self.generation_seconds > 0:
            speed = self.audio_seconds_generated / self.generation_seconds
            lines.append(
                f"generated {self.audio_seconds_generated:.1f} s of audio in "
                f"{self.generation_seconds:.1f} s ({speed:.2f} audio-s/s)"
            )
        if self.files_removed:
            lines.append(
                f"removed {len(self.files_removed)} files no longer in the manifest: "
                + ", ".join(self.files_removed[:5])
                + (", ..." if len(self.files_removed) > 5 else "")
            )
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"total time: {self.seconds:.1f} s")
        if self.manifest_problems:
            lines.append("manifest problems:")
            lines += [f"  {problem}" for problem in self.manifest_problems]
        else:
            lines.append("manifest: valid against the JSON Schema")
        return "\n".join(lines)
