"""A study's pre-registration in the database: the draft text, freezing on open, amendments.

The plan itself is written by the pure `preregistration.build_plan`; this module only loads what
it needs, stores what it returns and records each step in the audit log.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from .extensions import db
from .models import (
    AuditEvent,
    Preregistration,
    PreregistrationAmendment,
    Researcher,
    Study,
    as_utc,
    utcnow,
)
from .preregistration import (
    build_plan,
    canonical_json,
    clean_text,
    frozen_record,
    hypothesis_keys,
    plan_sha256,
)
from .services import catalog_for

AMENDMENT_CAP = 5000  # characters, for the amendment and for its reason


def iso(moment: Any) -> str:
    """A stored time as export.iso writes it (imported from there, export would import us)."""
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PlanRefused(ValueError):
    """A change the plan does not take (e.g. an edit of a frozen plan); `problems` says why."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _row(study: Study) -> Preregistration | None:
    return db.session.scalar(select(Preregistration).where(Preregistration.study_id == study.id))


def plan_text(study: Study) -> dict[str, Any]:
    """The researcher's plan text (empty fields when none was written yet)."""
    row = _row(study)
    return clean_text(row.text if row is not None else {})


def save_text(study: Study, raw: dict[str, Any]) -> dict[str, Any]:
    """Store the researcher's text of a draft's plan; PlanTextError / PlanRefused otherwise."""
    if study.status != "draft":
        raise PlanRefused(["the plan of an open or closed study is frozen; add an amendment"])
    keys = {key for key, _, _ in hypothesis_keys(study.design)}
    text = clean_text(raw, keys)
    row = _row(study)
    if row is None:
        row = Preregistration(study_id=study.id, text=text)
        db.session.add(row)
    row.text = text
    db.session.commit()
    return text


def draft_plan(study: Study) -> dict[str, Any]:
    """The plan as it would be frozen now, from today's design and text."""
    text = plan_text(study)
    if not text["authors"]:
        text["authors"] = study.owner.email
    return build_plan(study.design, catalog_for(study.stimulus_set), text)


def freeze(study: Study, researcher: Researcher) -> Preregistration:
    """Freeze the draft's plan (canonical JSON, sha256, time) with an audit event holding the
    hash. Adds to the session without committing: opening the study commits both together."""
    row = _row(study)
    if row is not None and row.plan_json is not None:
        return row  # frozen when the study first opened; a reopened study keeps that plan
    plan_json = canonical_json(draft_plan(study))
    if row is None:
        row = Preregistration(study_id=study.id, text={})
        db.session.add(row)
    row.plan_json = plan_json
    row.sha256 = plan_sha256(plan_json)
    row.frozen_at = utcnow()
    db.session.add(AuditEvent(
        researcher_id=researcher.id, study_id=study.id, action="preregistration:frozen",
        detail={"sha256": row.sha256, "frozen_at": iso(row.frozen_at)}))
    return row


def amend(study: Study, researcher: Researcher, text: str, reason: str) -> None:
    """Append a dated amendment to a frozen plan (never an edit of it), audited."""
    row = _row(study)
    problems = []
    if row is None or row.plan_json is None:
        problems.append("only a frozen plan takes amendments; edit the draft's plan instead")
    for name, value in (("amendment", text), ("reason", reason)):
        if not value.strip():
            problems.append(f"the {name} is empty")
        elif len(value) > AMENDMENT_CAP:
            problems.append(f"the {name} is longer than {AMENDMENT_CAP} characters")
    if problems:
        raise PlanRefused(problems)
    amendment = PreregistrationAmendment(
        preregistration_id=row.id, researcher_id=researcher.id,
        text=text.strip(), reason=reason.strip())
    db.session.add(amendment)
    db.session.flush()
    db.session.add(AuditEvent(
        researcher_id=researcher.id, study_id=study.id, action="preregistration:amended",
        detail={"sha256": row.sha256, "amendment": amendment.id}))
    db.session.commit()


def record(study: Study) -> dict[str, Any] | None:
    """preregistration.json: the frozen plan, its hash and time, and the amendments; None
    while the plan is a draft."""
    row = _row(study)
    if row is None or row.plan_json is None:
        return None
    amendments = [{"at": iso(a.at), "text": a.text, "reason": a.reason}
                  for a in row.amendments]
    return frozen_record(row.plan_json, row.sha256, iso(row.frozen_at), amendments)


def plan_and_record(study: Study) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the plan, its frozen record or None): the frozen plan once frozen, else the draft's."""
    frozen = record(study)
    if frozen is not None:
        return frozen["plan"], frozen
    return draft_plan(study), None


def record_json(study: Study) -> str | None:
    """preregistration.json's text (None while the plan is a draft)."""
    frozen = record(study)
    return None if frozen is None else json.dumps(frozen, indent=2, ensure_ascii=False) + "\n"
