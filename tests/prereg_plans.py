"""A pre-registration frozen beside a simulated export, as the app freezes one (issue 22):
shared by the analysis tests of the report's "As planned / Deviations"."""

from __future__ import annotations

import json
from pathlib import Path

from study_app.catalog import Catalog
from study_app.design import normalize_design
from study_app.preregistration import build_plan, canonical_json, frozen_record, plan_sha256


def write_plan(paths: tuple[Path, Path], sample_size: int | None = 40,
               amendments: list[dict] | None = None, **text) -> dict:
    """Freeze a plan for a simulated export's design (as the app does) beside its study.json."""
    study = json.loads(paths[1].read_text())
    manifest = study["manifest"]
    sources = {s["id"]: s["source"] for s in manifest["segments"]}
    catalog = Catalog.from_clips((c["segment"], sources[c["segment"]], c["condition"], c["id"],
                                  c["duration"]) for c in manifest["clips"])
    plan = build_plan(normalize_design(study["design"]), catalog,
                      {"sample_size": sample_size, **text})
    plan_json = canonical_json(plan)
    record = frozen_record(plan_json, plan_sha256(plan_json), "2026-11-20T09:00:00.000Z",
                           amendments or [])
    paths[1].with_name("preregistration.json").write_text(json.dumps(record, indent=2))
    return record
