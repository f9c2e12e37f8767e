"""As planned / Deviations: the report's analysis against the study's pre-registration (issue 22).

The app freezes the plan when a study opens and exports it as ``preregistration.json`` beside
``study.json`` (``{"format", "sha256", "frozen_at", "plan", "amendments"}``; the plan's
``analysis`` part is what is compared here). :func:`deviations` is pure: from the plan, the
export and the report's tables and settings it returns one row per planned item, each "as
planned" or "deviation" (amendments are listed as "amendment"), in the spirit of the
deviations tables Willroth & Atherton (2024) ask for. :func:`label_verdicts` says of each
verdict sentence whether it answers a pre-registered hypothesis or is exploratory.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

PLAN_FILE = "preregistration.json"
PLAN_FORMAT = "sightsound-preregistration/1"
# What the report does and no option changes: Holm across conditions within each family.
REPORT_CORRECTION = "holm"
AS_PLANNED, DEVIATION, AMENDMENT = "as planned", "deviation", "amendment"
COLUMNS = ["item", "planned", "analysed", "status", "note"]
# The command-line option that switches each exclusion rule off (python -m analysis report).
RULE_OPTIONS = {
    "flag_failed_screening": "--keep-failed-screening",
    "flag_failed_catch": "--keep-failed-catch",
    "flag_too_fast": "--keep-too-fast",
    "not_listened": "--keep-unheard",
    "empty_rating": "(no option)",
}
# The trial types whose blocks' conditions the plan's hypotheses are about.
PLANNED_TYPES = ("abx", "emotion_rating")


class PlanError(ValueError):
    """preregistration.json cannot be read as a plan."""


def read_plan(study_path: str | Path) -> dict[str, Any] | None:
    """The plan beside ``study.json`` (None when the export has none); PlanError if broken."""
    path = Path(study_path).with_name(PLAN_FILE)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PlanError(f"{path}: not readable as JSON ({error})") from None
    if (not isinstance(record, dict) or record.get("format") != PLAN_FORMAT
            or not isinstance(record.get("plan"), dict)
            or not isinstance(record["plan"].get("analysis"), dict)):
        raise PlanError(f"{path}: not a {PLAN_FORMAT} plan")
    return record


def canonical_sha256(plan: dict[str, Any]) -> str:
    """sha256 of the plan's canonical JSON, as the app took it when it froze the plan."""
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _row(item: str, planned: Any, analysed: Any, deviates: bool, note: str = "") -> dict:
    return {"item": item, "planned": str(planned), "analysed": str(analysed),
            "status": DEVIATION if deviates else AS_PLANNED, "note": note}


def _normal(formula: str) -> str:
    return re.sub(r"\s+", " ", formula.strip())


def deviations(
    record: dict[str, Any],
    study: dict[str, Any],
    responses: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    *,
    alpha: float,
    margin: float,
    lapse_share: float,
    unit: str,
    exclusion_rules: list[str],
    analysed_participants: int | None = None,
) -> pd.DataFrame:
    """One row per planned item (see the module docstring), in the report's order.

    ``study`` is study.json; ``responses`` the export's rows before exclusions; ``tables`` the
    report's (``realism_glmm`` and ``rating_mixed_model`` carry the fitted formulas);
    ``exclusion_rules`` the rules the report applied (ExclusionConfig.active_rules()).
    """
    plan = record["plan"]["analysis"]
    rows = []
    if canonical_sha256(record["plan"]) != record.get("sha256"):
        rows.append(_row("plan's integrity", f"sha256 {record.get('sha256')}",
                         f"sha256 {canonical_sha256(record['plan'])}", True,
                         "the plan in preregistration.json is not the plan that was frozen"))
    rows.append(_listeners(plan, study, responses, analysed_participants))
    rows.extend(_exclusions(plan, exclusion_rules))
    rows.append(_row("alpha", plan["alpha"], alpha, alpha != plan["alpha"],
                     "changed on the command line (--alpha)" if alpha != plan["alpha"] else ""))
    margin_changed = margin != plan["equivalence_margin"]
    rows.append(_row("equivalence margin", f"+/-{plan['equivalence_margin']:g}",
                     f"+/-{margin:g}", margin_changed,
                     "changed on the command line (--margin)" if margin_changed else ""))
    rows.append(_lapse_share(plan, margin, lapse_share))
    rows.append(_row("multiple-comparison correction", plan["correction"], REPORT_CORRECTION,
                     plan["correction"] != REPORT_CORRECTION))
    rows.append(_row("stimulus unit (random effect)", plan["unit"], unit, unit != plan["unit"],
                     "changed on the command line (--unit)" if unit != plan["unit"] else ""))
    rows.extend(_models(plan, tables))
    rows.extend(_conditions(plan, responses))
    for amendment in record.get("amendments") or []:
        rows.append({"item": f"amendment of {amendment['at']}", "planned": "",
                     "analysed": amendment["text"], "status": AMENDMENT,
                     "note": f"reason: {amendment['reason']}"})
    return pd.DataFrame.from_records(rows, columns=COLUMNS)


def _lapse_share(plan: dict, margin: float, share: float) -> dict:
    """The share of random responders an "equivalent" verdict must survive. Plans frozen before
    the app stated it (2026-12-07) planned a plain TOST at the margin: the report's test, at the
    margin shrunk by the share, is then stricter than planned, and says so."""
    item, analysed = "equivalence robust to random responders", (
        f"{share:.0%} (TOST at +/-{margin * (1 - share):g})")
    planned = plan.get("lapse_share")
    if planned is None:
        return _row(item, f"not stated (a TOST at +/-{plan['equivalence_margin']:g})", analysed,
                    share > 0, "the plan predates the lapse-robust test; 'equivalent' is "
                    "stricter than planned" if share > 0 else "")
    changed = share != planned
    return _row(item, f"{planned:.0%}", f"{share:.0%}", changed,
                "changed on the command line (--lapse-share)" if changed else "")


def _listeners(plan: dict, study: dict, responses: pd.DataFrame,
               analysed: int | None) -> dict:
    """Completed against the planned number, and against the stopping rule."""
    planned = plan.get("planned_participants")
    info = study.get("study", {})
    completed = info.get("participants_completed")
    if completed is None:
        completed = int(responses["participant"].nunique())
    rule = plan.get("stopping_rule") or {}
    analysed_text = f"{completed} completed" + (
        f", {analysed} analysed after exclusions" if analysed is not None else "")
    item = "listeners and stopping rule"
    if rule.get("kind") == "date":
        stop = str(rule["date"])
        last = pd.to_datetime(responses.get("answered_at"), utc=True, errors="coerce").max()
        if pd.notna(last) and last.date().isoformat() > stop:
            return _row(item, f"until {stop}", analysed_text + f", last answer "
                        f"{last.date().isoformat()}", True,
                        "data collection went on after the planned stop date")
        if planned and completed < planned and info.get("status") == "closed" and (
                pd.notna(last) and last.date().isoformat() < stop):
            return _row(item, f"until {stop}", analysed_text, True,
                        f"stopped early: closed before {stop} with {completed} of {planned} "
                        "planned listeners")
        return _row(item, f"until {stop}", analysed_text, False)
    if not planned:
        return _row(item, "no number planned", analysed_text, False)
    if completed < planned:
        return _row(item, f"{planned} completed", analysed_text, True,
                    f"stopped early: {completed} of {planned} planned listeners")
    if completed > planned:
        return _row(item, f"{planned} completed", analysed_text, True,
                    f"stopped late: {completed} listeners, {planned} planned")
    return _row(item, f"{planned} completed", analysed_text, False)


def _exclusions(plan: dict, applied: list[str]) -> list[dict]:
    planned = [e["rule"] for e in plan.get("exclusions", [])]
    rows = []
    for rule in planned:
        on = rule in applied
        rows.append(_row(f"exclusion rule {rule}", "applied", "applied" if on else "not applied",
                         not on, "" if on else f"switched off ({RULE_OPTIONS.get(rule, '')})"))
    rows += [_row(f"exclusion rule {rule}", "not planned", "applied", True,
                  "a rule the plan does not name") for rule in applied if rule not in planned]
    return rows


def _fitted(tables: dict[str, pd.DataFrame]) -> dict[str, tuple[str, str]]:
    """Model name -> (fitted formula, structure's name), from the report's tables."""
    fitted = {}
    glmm = tables.get("realism_glmm")
    if glmm is not None and len(glmm):
        fitted["realism"] = (str(glmm["formula"].iloc[0]), str(glmm["model"].iloc[0]))
    shifts = tables.get("rating_mixed_model")
    if shifts is not None and len(shifts):
        for _, row in shifts.drop_duplicates("dimension").iterrows():
            fitted[str(row["dimension"])] = (str(row["formula"]), str(row["model"]))
    return fitted


def _models(plan: dict, tables: dict[str, pd.DataFrame]) -> list[dict]:
    """The fitted random-effect structure against the planned one: the first structure of
    the planned ladder is as planned; one further down the ladder is as planned too (the
    ladder is pre-registered) and named; any other structure, or no fit, is a deviation."""
    rows = []
    fitted = _fitted(tables)
    for name, model in plan.get("models", {}).items():
        item = f"model {name}: random effects"
        if name not in fitted:
            rows.append(_row(item, model["formula"], "not fitted", True,
                             "the report fitted no such model (no data for it?)"))
            continue
        formula, structure = fitted[name]
        ladder = [_normal(r["formula"]) for r in model["ladder"]]
        if _normal(formula) == _normal(model["formula"]):
            rows.append(_row(item, model["formula"], formula, False,
                             "the planned (maximal) structure"))
        elif _normal(formula) in ladder:
            step = ladder.index(_normal(formula))
            rows.append(_row(item, model["formula"], formula, False,
                             f"fallback down the planned ladder to step {step + 1} of "
                             f"{len(ladder)}: '{model['ladder'][step]['name']}'"))
        elif (step := _reduced_from(formula, structure, model["ladder"])) is not None:
            rows.append(_row(item, model["formula"], formula, False,
                             f"fallback: step {step + 1} of {len(ladder)} of the planned ladder "
                             f"('{model['ladder'][step]['name']}') without the terms a singular "
                             "fit estimated at zero, as the plan's reduction rule says"))
        else:
            rows.append(_row(item, model["formula"], formula, True,
                             f"'{structure}', a structure not in the planned ladder"))
    rows += [_row(f"model {name}: random effects", "not planned", formula, True,
                  "a model the plan does not name")
             for name, (formula, _) in fitted.items() if name not in plan.get("models", {})]
    return rows


def _terms(formula: str) -> set[str]:
    """The random-effect terms of a formula, e.g. {"(1 | source)"}."""
    return {_normal(t) for t in re.findall(r"\([^()]*\|[^()]*\)", formula)}


def _reduced_from(formula: str, structure: str, rungs: list[dict]) -> int | None:
    """The ladder step a fitted structure was reduced from by the plan's rule (a singular
    fit's zero-variance terms dropped; R names it "<step> without <terms>"), else None."""
    for step, rung in enumerate(rungs):
        if structure.startswith(f"{rung['name']} without "):
            fewer, full = _terms(formula), _terms(rung["formula"])
            same_fixed = _normal(formula).split(" + (")[0] == _normal(rung["formula"]).split(
                " + (")[0]
            if fewer and fewer < full and same_fixed:
                return step
    return None


def _conditions(plan: dict, responses: pd.DataFrame) -> list[dict]:
    """Conditions per block: planned (the frozen design's) against those in the data."""
    rows = []
    planned_blocks = {b["id"]: b for b in plan.get("blocks", []) if b["type"] in PLANNED_TYPES}
    data = responses[responses["trial_type"].isin(PLANNED_TYPES)]
    if "is_catch" in data:
        data = data[~data["is_catch"].fillna(False).astype(bool)]
    seen = {str(block): set(map(str, part["condition"].dropna()))
            for block, part in data.groupby("block", observed=True)}
    for block_id, block in planned_blocks.items():
        planned = set(block["conditions"]) | ({"reference"} if block["type"] == "abx" else set())
        found = seen.get(block_id, set()) | ({"reference"} if block["type"] == "abx" else set())
        added, dropped = sorted(found - planned), sorted(planned - found)
        note = "; ".join(part for part in (
            f"added: {', '.join(added)}" if added else "",
            f"dropped: {', '.join(dropped)}" if dropped else "") if part)
        rows.append(_row(f"conditions of block {block_id}", ", ".join(block["conditions"]),
                         ", ".join(sorted(found - {"reference"}) if block["type"] == "abx"
                                   else sorted(found)), bool(added or dropped), note))
    rows += [_row(f"conditions of block {block}", "no such block", ", ".join(sorted(found)),
                  True, "a block the plan does not name")
             for block, found in sorted(seen.items()) if block not in planned_blocks]
    return rows


def label_verdicts(verdicts: pd.DataFrame, record: dict[str, Any]) -> pd.DataFrame:
    """The verdicts with a ``registration`` column ("pre-registered (H1)" or "exploratory"),
    and each sentence starting with it."""
    hypotheses = record["plan"]["analysis"]["hypotheses"]
    by_key = {(h["condition"], h["dimension"]): h["id"] for h in hypotheses}
    labels = []
    for row in verdicts.itertuples():
        question = str(row.question)
        dimension = None
        if question.startswith("rating shift ("):
            dimension = question[len("rating shift ("):-1]
        elif question != "realism (ABX)":
            labels.append("exploratory")
            continue
        found = by_key.get((row.condition, dimension))
        labels.append(f"pre-registered ({found})" if found else "exploratory")
    labelled = verdicts.copy()
    labelled["registration"] = labels
    labelled["verdict"] = [f"{label[0].upper()}{label[1:]}: {sentence}"
                           for label, sentence in zip(labels, verdicts["verdict"], strict=True)]
    return labelled


def summary_line(record: dict[str, Any], table: pd.DataFrame) -> str:
    """One sentence above the table: the plan's time and hash, and the count of deviations."""
    count = int((table["status"] == DEVIATION).sum())
    amendments = int((table["status"] == AMENDMENT).sum())
    return (f"Pre-registered plan frozen {record.get('frozen_at')} (sha256 "
            f"{str(record.get('sha256'))[:12]}...): "
            + (f"{count} deviation{'s' if count != 1 else ''}" if count else "no deviations")
            + (f", {amendments} amendment{'s' if amendments != 1 else ''}" if amendments else "")
            + ".")


NO_PLAN_LINE = ("No pre-registration in this export (preregistration.json): nothing to compare "
                "the analysis with.")
