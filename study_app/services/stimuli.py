"""Owns importing a stimulus set into the database and the catalog of its clips.

Each function that writes commits once, so it either happens whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from sqlalchemy import select

from ..audio import canonical_wav_bytes
from ..catalog import Catalog
from ..extensions import db
from ..models import (
    Clip,
    Segment,
    StimulusSet,
)
from ..stimulus_set import StimulusSetError, load_stimulus_set

VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg", ".mov": "video/mp4"}


# Every media file gets the same modification time, so Last-Modified says nothing about a clip.
MEDIA_MTIME = 946684800  # 2000-01-01T00:00:00Z


class ImportRefused(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("stimulus set refused:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def import_stimulus_set(folder: Path, media_dir: Path) -> StimulusSet:
    """Validate a stimulus set and import it; a refused import changes nothing.

    Participants are served canonical copies with random names (plain PCM WAV with no metadata
    chunks, one fixed mtime), never the set's own files.
    """
    folder = Path(folder).resolve()
    try:
        stimuli = load_stimulus_set(folder)
    except StimulusSetError as exc:
        raise ImportRefused(exc.problems) from exc
    manifest_bytes = (folder / "manifest.json").read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    existing = db.session.scalar(select(StimulusSet).where(StimulusSet.name == stimuli.name))
    if existing is not None:
        if existing.manifest_sha256 == manifest_sha:
            return existing  # importing the same set twice is a no-op
        raise ImportRefused(
            [f"a different stimulus set named {stimuli.name!r} is already imported"]
        )

    media_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def store(data: bytes, suffix: str) -> str:
        name = secrets.token_hex(16) + suffix
        path = media_dir / name
        path.write_bytes(data)
        os.utime(path, (MEDIA_MTIME, MEDIA_MTIME))
        written.append(path)
        return name

    try:
        record = StimulusSet(
            name=stimuli.name,
            folder=str(folder),
            manifest=json.loads(manifest_bytes),
            manifest_sha256=manifest_sha,
        )
        db.session.add(record)
        for segment in stimuli.segments:
            source = stimuli.source(segment.source)
            suffix = source.video.suffix.lower()
            video_file = store(source.video.read_bytes(), suffix) if source.video else None
            db.session.add(
                Segment(
                    stimulus_set=record,
                    key=segment.id,
                    source_key=segment.source,
                    start=segment.start,
                    duration=segment.duration,
                    video_file=video_file,
                    video_mimetype=VIDEO_TYPES.get(suffix, "application/octet-stream"),
                )
            )
        for clip in stimuli.clips:
            db.session.add(
                Clip(
                    stimulus_set=record,
                    key=clip.id,
                    segment_key=clip.segment,
                    source_key=clip.source,
                    condition=clip.condition,
                    duration=clip.duration,
                    media_file=store(canonical_wav_bytes(clip.path), ".wav"),
                )
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return record


def catalog_for(stimulus_set: StimulusSet) -> Catalog:
    rows = db.session.execute(
        select(Clip.segment_key, Clip.source_key, Clip.condition, Clip.key, Clip.duration).where(
            Clip.stimulus_set_id == stimulus_set.id
        )
    )
    return Catalog.from_clips(tuple(row) for row in rows)
