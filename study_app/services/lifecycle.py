"""Owns a study's lifecycle: create it from a design, edit the design, open/close it, duplicate it.

Each function that writes commits once, so it either happens whole or not at all.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select

from ..design import COMPLETION_OUTCOMES, DesignError, validated_design
from ..extensions import db
from ..models import (
    AuditEvent,
    Researcher,
    StimulusSet,
    Study,
)
from .stimuli import catalog_for


def create_study(data: dict[str, Any], owner: Researcher, status: str = "open") -> Study:
    """Create a study from a design mapping (see docs/design-format.md). Raises DesignError."""
    set_name = data.get("stimulus_set")
    stimulus_set = db.session.scalar(select(StimulusSet).where(StimulusSet.name == set_name))
    if stimulus_set is None:
        raise DesignError([f"no imported stimulus set named {set_name!r}"])
    design = _with_completion_codes(validated_design(data, catalog_for(stimulus_set)))
    if db.session.scalar(select(Study).where(Study.slug == design["slug"])) is not None:
        raise DesignError([f"a study with slug {design['slug']!r} exists already"])
    code = design["completion"]["code"]
    study = Study(
        slug=design["slug"],
        title=design["title"],
        owner=owner,
        stimulus_set=stimulus_set,
        design=design,
        status=status,
        completion_code=code,
    )
    db.session.add(study)
    db.session.commit()
    return study


def update_design(study: Study, data: dict[str, Any]) -> Study:
    """Replace a draft's design. Raises DesignError; an open or closed study is immutable."""
    if study.status != "draft":
        raise DesignError(["the design of an open or closed study cannot change; duplicate it"])
    # A code left empty keeps the one the study has (it may be set up on Prolific already).
    previous = dict(study.design.get("completion") or {}, code=study.completion_code)
    design = validated_design(data, catalog_for(study.stimulus_set))
    design = _with_completion_codes(design, previous)
    if design["slug"] != study.slug:
        if db.session.scalar(select(Study).where(Study.slug == design["slug"])) is not None:
            raise DesignError([f"a study with slug {design['slug']!r} exists already"])
        study.slug = design["slug"]
    if design["stimulus_set"] != study.stimulus_set.name:
        raise DesignError(["a study's stimulus set cannot change; create a new study"])
    study.title = design["title"]
    study.design = design
    study.completion_code = design["completion"]["code"]
    db.session.commit()
    return study


def _with_completion_codes(
    design: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`design` with a code for every outcome (completion.code, screened_out_code,
    failed_attention_code): as given, else `previous`'s, else a new random one. They are kept in
    the stored design, so the designer, the export's study.json and Prolific's set-up agree."""
    completion = design["completion"]
    for key in COMPLETION_OUTCOMES:
        completion[key] = completion.get(key) or (previous or {}).get(key)
    for key in COMPLETION_OUTCOMES:
        while not completion[key]:
            code = secrets.token_hex(4).upper()
            # Distinct outcomes need distinct codes: that is how Prolific tells them apart.
            if code not in completion.values():
                completion[key] = code
    return design


STATUS_MOVES = {("draft", "open"), ("open", "closed"), ("closed", "open")}


def set_status(study: Study, status: str, researcher: Researcher) -> None:
    if (study.status, status) not in STATUS_MOVES:
        raise ValueError(f"a {study.status} study cannot become {status}")
    db.session.add(
        AuditEvent(
            researcher_id=researcher.id,
            study_id=study.id,
            action=f"status:{status}",
            detail={"from": study.status},
        )
    )
    study.status = status
    db.session.commit()


def duplicate_study(study: Study, owner: Researcher) -> Study:
    """A new draft with the same design (its own slug, entry link and no participants)."""
    base = study.slug[:50]
    number = 1
    while db.session.scalar(select(Study.id).where(Study.slug == f"{base}-copy{number}")):
        number += 1
    design = dict(study.design, slug=f"{base}-copy{number}", title=f"{study.title} (copy)")
    return create_study(design, owner, status="draft")
