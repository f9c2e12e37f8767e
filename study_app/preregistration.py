"""The pre-registration of a study, written from its design (issue 22). Pure: no Flask, no database.

`build_plan(design, catalog, text, table)` returns the plan as a dict in the fields of the OSF
Preregistration template (``osf``) and AsPredicted's eight answers (``aspredicted``), plus the
machine-readable part the report compares its analysis with (``analysis``): hypotheses, the
model formulas and their fallback ladders, alpha, the equivalence margin and the share of
random responders an "equivalent" verdict must survive, the correction, the exclusion rules,
the planned listeners with their power, and the stopping rule.

The researcher writes only the free text (``text``: authors, description, hypotheses' wording,
exploratory analyses, the stopping date, the sample size) and picks, per ABX condition, the
hypothesis "distinguishable" or "indistinguishable within the margin"; everything else is
generated from the design. The app never imports ``analysis``: the ladders and the lapse share
come from ``sightsound_stats``, which both read, and tests/analysis/test_analysis_deviations.py
checks the formulas written here against ``analysis.lme4``, which is what the report fits.

`canonical_json` and `plan_sha256` give the bytes the app freezes when the study opens.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import date
from typing import Any

from sightsound_stats.ladders import ABX_LADDER, RATING_LADDER
from sightsound_stats.planning import LAPSE_SHARE

from .catalog import REFERENCE, Catalog
from .power_hint import block_design, load_power_table, power_hint

PLAN_FORMAT = "sightsound-preregistration/1"
# AsPredicted's limit as we know it: 3,200 characters over its eight answers together. The plan
# keeps its answers within it (counted as Python characters), shortening the longest ones.
ASPREDICTED_LIMIT = 3200
# The report's defaults (python -m analysis report): changing one there is a deviation.
ALPHA = 0.05
EQUIVALENCE_MARGIN = 0.1
# The realism tests' degrees of freedom (analysis.realism.component_df), as the plan states them.
REALISM_DF = ("df: Welch-Satterthwaite over the listener and stimulus variances, at most the "
              "sources the condition was heard on minus one")
CORRECTION = "holm"
UNIT = "source"
# The effects the planned sample size is powered for (columns of the designer's power tables).
PLANNED_ACCURACY = 0.7  # an ABX condition listeners tell apart 70 % of the time
PLANNED_SHIFT = 0.5  # a rating shift of half a point against the reference
DISTINGUISHABLE, INDISTINGUISHABLE = "distinguishable", "indistinguishable"
# The rating dimensions the report's mixed models test against the reference.
RATING_DIMENSIONS = ("valence", "arousal")

# How the report walks a ladder (analysis/r/fit_mixed.R), stated in the plan.
REDUCTION_RULE = (
    "Each model uses the first structure of its ladder that converges without a singular fit. "
    "When a fit is singular and only variance terms are estimated at zero, the same structure "
    "without those terms is tried next; later structures that contain them are skipped. If "
    "none qualifies, the last converged fit is used and the report says so.")
# The exclusion rules the report applies by default, by the names of its exclusion table.
EXCLUSION_RULES = ("flag_failed_screening", "flag_failed_catch", "flag_too_fast",
                   "not_listened", "empty_rating")
# Free-text fields the researcher edits, with their caps (characters).
TEXT_FIELDS = {"authors": 500, "description": 5000, "exploratory_analyses": 5000}
HYPOTHESIS_WORDING_CAP = 1000
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SCREENING_TYPES = ("headphone_check", "p808_qualification")


class PlanTextError(ValueError):
    """The researcher's plan text is not acceptable; `problems` says why (all at once)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def formula(response: str, fixed: str, terms: tuple[str, ...], unit: str = UNIT) -> str:
    """An lme4 formula as the report writes it, e.g. ``correct ~ 0 + condition + (1 | source)``."""
    random = " + ".join(term.replace("unit", unit) for term in terms)
    return f"{response} ~ {fixed} + {random}"


def ladder(kind: str, response: str, unit: str = UNIT) -> list[dict[str, str]]:
    """The fallback ladder of the realism GLMM (kind "realism") or a rating LMM, top first: the
    report's own (sightsound_stats.ladders), as formulas."""
    rungs, fixed = (ABX_LADDER, "0 + condition") if kind == "realism" else (
        RATING_LADDER, "condition")
    return [{"name": name, "formula": formula(response, fixed, terms, unit)}
            for name, terms in rungs]


def clean_text(raw: dict[str, Any], hypothesis_keys: set[str] | None = None) -> dict[str, Any]:
    """The researcher's plan text, checked: raises PlanTextError listing every problem.

    Keys: the TEXT_FIELDS, ``stop_date`` (YYYY-MM-DD or empty), ``sample_size`` (a whole number
    >= 2 or empty), ``abx`` (condition -> "distinguishable" / "indistinguishable") and
    ``wording`` (hypothesis key -> the researcher's sentence; empty: the generated one).
    """
    problems = []
    text: dict[str, Any] = {}
    for key, cap in TEXT_FIELDS.items():
        value = raw.get(key) or ""
        if not isinstance(value, str):
            problems.append(f"'{key}' must be text")
            continue
        if len(value) > cap:
            problems.append(f"'{key}' is {len(value)} characters long; at most {cap}")
        text[key] = value.strip()
    stop = raw.get("stop_date") or ""
    if stop:
        try:
            if not (isinstance(stop, str) and ISO_DATE.match(stop)):
                raise ValueError
            date.fromisoformat(stop)
        except ValueError:
            problems.append("'stop_date' must be a date as YYYY-MM-DD")
    text["stop_date"] = stop or None
    size = raw.get("sample_size")
    if size in ("", None):
        text["sample_size"] = None
    else:
        try:
            text["sample_size"] = int(str(size).strip())
            if text["sample_size"] < 2 or text["sample_size"] > 100_000:
                raise ValueError
        except ValueError:
            problems.append("'sample_size' must be a whole number from 2 to 100000, or empty")
    choices = raw.get("abx") or {}
    if not isinstance(choices, dict) or not all(
            v in (DISTINGUISHABLE, INDISTINGUISHABLE) for v in choices.values()):
        problems.append(f"'abx' maps conditions to {DISTINGUISHABLE!r} or {INDISTINGUISHABLE!r}")
        choices = {}
    text["abx"] = {str(k): v for k, v in sorted(choices.items())}
    wording = raw.get("wording") or {}
    if not isinstance(wording, dict) or not all(isinstance(v, str) for v in wording.values()):
        problems.append("'wording' maps hypotheses to text")
        wording = {}
    text["wording"] = {}
    for key, value in sorted(wording.items()):
        if hypothesis_keys is not None and key not in hypothesis_keys:
            continue  # a hypothesis the design no longer has: its wording goes
        if len(value) > HYPOTHESIS_WORDING_CAP:
            problems.append(f"the wording of {key} is longer than {HYPOTHESIS_WORDING_CAP}")
        if value.strip():
            text["wording"][key] = value.strip()
    if problems:
        raise PlanTextError(problems)
    return text


# The plan ---------------------------------------------------------------------------------


def _blocks(design: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in design["blocks"] if b["type"] == kind]


def hypothesis_keys(design: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(key, condition, dimension) of every hypothesis of a design, in plan order: one per ABX
    condition (over all ABX blocks: the report fits them together), then one per rating
    contrast (condition against the reference, per dimension the blocks rate)."""
    keys = []
    abx = dict.fromkeys(c for b in _blocks(design, "abx") for c in b["conditions"])
    keys += [(f"abx:{c}", c, None) for c in abx]
    for dimension in RATING_DIMENSIONS:
        rated = dict.fromkeys(
            c for b in _blocks(design, "emotion_rating")
            if REFERENCE in b["conditions"] and dimension in b["scales"]
            for c in b["conditions"] if c != REFERENCE)
        keys += [(f"rating:{dimension}:{c}", c, dimension) for c in rated]
    return keys


def _generated_wording(kind: str, condition: str, dimension: str | None, margin: float) -> str:
    if kind == DISTINGUISHABLE:
        return (f"Listeners can tell {condition} from the reference recording: ABX accuracy "
                "above chance (0.5).")
    if kind == INDISTINGUISHABLE:
        return (f"Listeners cannot tell {condition} from the reference recording: ABX accuracy "
                f"within 0.5 +/- {margin:g}.")
    return (f"Listeners rate {condition} differently in {dimension} from the reference "
            "recording of the same performance.")


def _power_of(hint: dict[str, Any] | None, question: int, n: int | None) -> dict[str, Any]:
    """Power of one question of a designer hint: at ``n`` listeners (read at the simulated
    number at or below it) and the fewest listeners reaching 80 %."""
    if hint is None or not hint["rows"]:
        note = "; ".join(hint["notes"][:1]) if hint else "no simulated table for this block"
        return {"needed": None, "power": None, "at": None, "note": note}
    needed = hint["needed"].get(f"q{question}")
    rows = [r for r in hint["rows"] if n is not None and r["participants"] <= n]
    row = rows[-1] if rows else None
    return {"needed": needed, "power": None if row is None else row[f"q{question}"],
            "at": None if row is None else row["participants"],
            "note": "lower bound" if hint["simulated"] != {
                "sources": hint["design"]["sources"],
                "sources_heard": hint["design"]["sources_heard"]} else ""}


def build_plan(
    design: dict[str, Any],
    catalog: Catalog,
    text: dict[str, Any] | None = None,
    table: Callable[[str], dict[str, Any]] = load_power_table,
) -> dict[str, Any]:
    """The pre-registration of a normalized, valid design (see the module docstring).

    ``text`` is the researcher's (as :func:`clean_text` returns it; missing keys are empty);
    ``table(kind)`` gives the designer's simulated power table of a kind.
    """
    text = clean_text(text or {})
    margin, alpha = EQUIVALENCE_MARGIN, ALPHA
    hints = {}
    for block in design["blocks"]:
        read = block_design(block, catalog)
        if read is not None:
            hints[block["id"]] = power_hint(read, table(read.kind))

    def hint_for(condition: str, block_type: str, dimension: str | None) -> dict | None:
        for block in _blocks(design, block_type):
            if condition in block["conditions"] and (dimension is None
                                                     or dimension in block["scales"]):
                return hints.get(block["id"])
        return None

    # Hypotheses, then the number of listeners their power asks for.
    hypotheses = []
    for number, (key, condition, dimension) in enumerate(hypothesis_keys(design), 1):
        if dimension is None:
            kind = text["abx"].get(condition, DISTINGUISHABLE)
            question = 1 if kind == DISTINGUISHABLE else 2  # power_hint.QUESTIONS["realism"]
            hint = hint_for(condition, "abx", None)
            effect = (f"accuracy {PLANNED_ACCURACY:.2f}" if kind == DISTINGUISHABLE
                      else "accuracy 0.50 (a condition at chance)")
            test = (f"one-sided Wald t test of the condition's logit > 0 in the realism GLMM "
                    f"({REALISM_DF}), Holm-adjusted across the ABX conditions, alpha {alpha:g}"
                    if kind == DISTINGUISHABLE else
                    f"Wald t TOST on the realism GLMM's logit against 0.5 +/- "
                    f"{margin * (1 - LAPSE_SHARE):g}: the margin {margin:g} shrunk so that the "
                    f"verdict holds even if up to {LAPSE_SHARE:.0%} of listeners answered at "
                    f"random unflagged ({REALISM_DF}; Holm-adjusted across the ABX conditions), "
                    f"alpha {alpha:g}")
        else:
            kind = "shift"
            question = 0  # power_hint.QUESTIONS["ratings"]: a shift of 0.5 points
            hint = hint_for(condition, "emotion_rating", dimension)
            effect = f"a {dimension} shift of {PLANNED_SHIFT:g} points"
            test = (f"two-sided Satterthwaite t test (lmerTest) of {condition} against the "
                    f"reference in the {dimension} LMM, Holm-adjusted across conditions within "
                    f"{dimension}, alpha {alpha:g}")
        hypotheses.append({
            "id": f"H{number}", "key": key, "kind": kind, "condition": condition,
            "dimension": dimension,
            "text": text["wording"].get(key) or _generated_wording(kind, condition, dimension,
                                                                   margin),
            "generated_text": _generated_wording(kind, condition, dimension, margin),
            "test": test, "effect": effect, "_hint": hint, "_question": question,
        })
    needed = [h["_hint"]["needed"].get(f"q{h['_question']}") for h in hypotheses if h["_hint"]]
    cap = (design.get("completion") or {}).get("max_completed")
    if text["sample_size"] is not None:
        planned, source = text["sample_size"], "set by the researcher"
    elif isinstance(cap, int):
        planned, source = cap, "the study's cap on completions (completion.max_completed)"
    elif needed and all(n is not None for n in needed):
        planned, source = max(needed), ("the fewest listeners giving every hypothesis 80 % "
                                         "power in the designer's simulated table")
    else:
        planned, source = None, "not determined: state a sample size"
    for h in hypotheses:
        if h["kind"] == "shift" and h["dimension"] != "valence":
            h["effect"] += " (power read from the valence simulation)"
        h["power"] = _power_of(h.pop("_hint"), h.pop("_question"), planned) | {
            "effect": h["effect"]}
    if text["stop_date"]:
        stopping = {"kind": "date", "date": text["stop_date"], "completions": planned}
        stopping_text = (f"Data collection stops on {text['stop_date']} (UTC), or earlier when "
                         f"{planned} listeners have completed the study." if planned else
                         f"Data collection stops on {text['stop_date']} (UTC).")
    else:
        stopping = {"kind": "completions", "completions": planned, "date": None}
        stopping_text = (f"Data collection stops when {planned} listeners have completed the "
                         "study (screened-out and withdrawn listeners do not count)."
                         if planned else "No stopping rule yet: state a sample size or a date.")

    models = _models(design)
    exclusions = _exclusions(design)
    blocks = [{"id": b["id"], "type": b["type"], "conditions": list(b.get("conditions") or [])}
              for b in design["blocks"]]
    analysis = {
        "alpha": alpha, "equivalence_margin": margin, "lapse_share": LAPSE_SHARE,
        "correction": CORRECTION, "unit": UNIT,
        "hypotheses": [{k: h[k] for k in ("id", "key", "kind", "condition", "dimension")}
                       for h in hypotheses],
        "models": models,
        "exclusions": [{"rule": e["rule"], "level": e["level"]} for e in exclusions],
        "blocks": blocks,
        "planned_participants": planned,
        "stopping_rule": stopping,
    }
    osf = _osf(design, catalog, text, hypotheses, models, exclusions, planned, source,
               stopping_text, alpha, margin)
    return {
        "format": PLAN_FORMAT,
        "study": {"slug": design["slug"], "title": design["title"],
                  "stimulus_set": design["stimulus_set"]},
        "osf": osf,
        "aspredicted": aspredicted(osf, hypotheses, design),
        "analysis": analysis,
        "hypotheses": [{k: v for k, v in h.items() if k != "effect"} for h in hypotheses],
        "text": text,
    }


def _models(design: dict[str, Any]) -> dict[str, Any]:
    models: dict[str, Any] = {}
    if _blocks(design, "abx"):
        rungs = ladder("realism", "correct")
        models["realism"] = {"family": "binomial (logit), Laplace ML, lme4::glmer",
                             "formula": rungs[0]["formula"], "ladder": rungs}
    for dimension in RATING_DIMENSIONS:
        if any(REFERENCE in b["conditions"] and dimension in b["scales"]
               for b in _blocks(design, "emotion_rating")):
            rungs = ladder("rating", dimension)
            models[dimension] = {"family": "gaussian, REML, lme4::lmer with lmerTest",
                                 "formula": rungs[0]["formula"], "ladder": rungs}
    return models


def _exclusions(design: dict[str, Any]) -> list[dict[str, str]]:
    """The report's exclusion rules with this design's thresholds."""
    screens = []
    for block in design["blocks"]:
        if block["type"] == "headphone_check":
            screens.append(f"headphone check '{block['id']}' ({block['method']}): fewer than "
                           f"{block['pass_threshold']} of {block['trials']} correct")
        elif block["type"] == "p808_qualification":
            screens.append(f"P.808 qualification '{block['id']}' failed")
    checks = []
    for block in design["blocks"]:
        if block.get("catch_trials"):
            checks.append(f"{block['catch_trials']} catch trial(s) in '{block['id']}'")
        if block.get("attention_checks"):
            checks.append(f"{block['attention_checks']} instructed-response item(s) in "
                          f"'{block['id']}'")
    if any(b["type"] == "acr" for b in design["blocks"]):
        checks.append("P.808 gold-standard and trapping questions")
    return [
        {"rule": "flag_failed_screening", "level": "participant",
         "text": "Listeners who fail a screening block are excluded entirely: "
                 + ("; ".join(screens) if screens else "the design has no screening block")
                 + "."},
        {"rule": "flag_failed_catch", "level": "participant",
         "text": "Listeners who fail any catch or attention item are excluded entirely: "
                 + ("; ".join(checks) if checks else "the design has none") + "."},
        {"rule": "flag_too_fast", "level": "row",
         "text": "An answer given (server clock, first showing to answer) sooner than its audio "
                 "can be heard is excluded: ABX 3 x the clip's duration, emotion rating 1 x."},
        {"rule": "not_listened", "level": "row",
         "text": "An answer given before the server had sent every audio clip of the trial "
                 "whole (flag_unheard), or sooner than the clips play (flag_too_quick), is "
                 "excluded."},
        {"rule": "empty_rating", "level": "row",
         "text": "A rating left empty that its block asks for is excluded."},
    ]


def _osf(design, catalog, text, hypotheses, models, exclusions, planned, source,
         stopping_text, alpha, margin) -> dict[str, Any]:
    abx_conditions = [h["condition"] for h in hypotheses if h["dimension"] is None]
    rated = list(dict.fromkeys(c for b in _blocks(design, "emotion_rating")
                               for c in b["conditions"]))
    blocks_text = "; ".join(_block_sentence(b, catalog) for b in design["blocks"])
    power_lines = []
    unavailable: dict[str, list[str]] = {}  # why -> hypotheses (one sentence per reason)
    for h in hypotheses:
        p = h["power"]
        if p["power"] is not None:
            power_lines.append(f"{h['id']}: power {p['power']:.2f} at {p['at']} listeners for "
                               f"{p['effect']}" + (f" ({p['note']})" if p["note"] else "")
                               + (f"; 80 % from {p['needed']} listeners" if p["needed"] else
                                  "; 80 % not reached in the simulated range"))
        else:
            why = (p["note"] or "below the simulated numbers of listeners").rstrip(".")
            unavailable.setdefault(why, []).append(h["id"])
    power_lines += [f"{', '.join(ids)}: power not available ({why})"
                    for why, ids in unavailable.items()]
    model_lines = [f"{name}: {m['formula']} ({m['family']}); if that structure does not converge "
                   "or is singular, the next of: " + " | ".join(r["formula"].split(" ~ ", 1)[1]
                                                                for r in m["ladder"][1:])
                   for name, m in models.items()]
    if model_lines:
        model_lines.append(REDUCTION_RULE)
    return {
        "study_information": {
            "title": design["title"],
            "authors": text["authors"],
            "description": text["description"] or (
                f"A listening study of the stimulus set '{design['stimulus_set']}': "
                + blocks_text + "."),
            "hypotheses": [{"id": h["id"], "text": h["text"], "test": h["test"]}
                           for h in hypotheses],
        },
        "design_plan": {
            "study_type": "Experiment: an online listening test in which every listener hears "
                          "clips of every condition (a within-subjects design).",
            "blinding": "Listeners are blind to condition: every clip is served through an "
                        "opaque per-trial token, loudness-matched, with the same duration and "
                        "format as the reference; nothing the browser receives names the "
                        "condition. The researcher sees only aggregated results while data are "
                        "collected.",
            "study_design": f"Within-subjects. Blocks in order: {blocks_text}. "
                            + (f"ABX conditions: {', '.join(abx_conditions)} (each against the "
                               "reference). " if abx_conditions else "")
                            + (f"Rated conditions: {', '.join(rated)}." if rated else ""),
            "randomization": "Conditions are assigned to segments by a Latin square (list = "
                             "arrival index mod the number of conditions), so each listener "
                             "hears every condition equally often and each segment in one "
                             "condition; A/B position and the identity of X rotate through four "
                             "arrangements; trial order within a block is shuffled per listener "
                             "from a stored seed, so every session can be reproduced.",
        },
        "sampling_plan": {
            "existing_data": "Registration prior to creation of data: no listener has taken "
                             "the study when it opens (researcher previews are never recorded "
                             "as data).",
            "data_collection_procedures": "Listeners are recruited online (e.g. Prolific) and "
                                          "follow the study link; they are asked to use "
                                          "headphones and take the blocks above in order. "
                                          "Withdrawn listeners' data are deleted.",
            "sample_size": (f"{planned} listeners who complete the study."
                            if planned else "Not yet determined."),
            "sample_size_rationale": (f"{planned} listeners: {source}. " if planned else
                                      "No sample size yet: state one (or a cap on "
                                      "completions). ") + " ".join(
                f"{line}." for line in power_lines) + (
                " Power from the designer's simulated tables (mixed models refitted by lme4; "
                "alpha / k for k conditions, Holm's first step)." if power_lines else ""),
            "stopping_rule": stopping_text,
        },
        "variables": {
            "manipulated_variables": "Condition (the source of the music): reference (the "
                                     "real recording) and " + (", ".join(
                                         c for c in dict.fromkeys(abx_conditions + rated)
                                         if c != REFERENCE) or "no other") + ".",
            "measured_variables": "ABX: the answer (A or B), whether it is correct, confidence "
                                  "(1-5), response time and plays. Emotion rating: valence and "
                                  "arousal (9-point SAM), GEMS-9 words, fit and tempo where the "
                                  "block asks for them. Server-side: response time and the "
                                  "bytes of each clip sent before the answer.",
            "indices": "ABX accuracy per condition (proportion correct; d' under the "
                       "differencing model). Rating shifts: the condition's mean minus the "
                       "reference's, in scale points.",
        },
        "analysis_plan": {
            "statistical_models": model_lines or ["No mixed model: the design has no ABX or "
                                                  "reference-rated emotion block."],
            "transformations": "Conditions enter as treatment contrasts against the reference "
                               "(ratings) or cell means on the logit scale (ABX); listeners "
                               f"and stimulus {UNIT}s are crossed random effects.",
            "inference_criteria": f"alpha {alpha:g}; Holm correction across conditions within "
                                  "each family (ABX conditions; conditions within a rating "
                                  f"dimension); equivalence margin +/-{margin:g} around chance "
                                  f"for ABX (TOST), required to hold even if up to "
                                  f"{LAPSE_SHARE:.0%} of listeners answered at random "
                                  f"unflagged (tested against +/-{margin * (1 - LAPSE_SHARE):g}).",
            "data_exclusion": [e["text"] for e in exclusions],
            "missing_data": "Unanswered trials are not imputed: mixed models use every "
                            "answer given; listeners who stop early keep the answers they "
                            "gave, and do not count towards the sample size.",
            "exploratory_analysis": text["exploratory_analyses"] or (
                "Everything else the report shows (per-listener accuracy, semantic agreement "
                "with the mismatched-video control, GEMS, fit, tempo, the analysis without "
                "exclusions) is exploratory."),
        },
    }


def _block_sentence(block: dict[str, Any], catalog: Catalog) -> str:
    kind = block["type"]
    conditions = block.get("conditions") or []
    if kind in ("abx", "emotion_rating"):
        wanted = [REFERENCE, *conditions] if kind == "abx" else conditions
        segments = len(catalog.segments_with(wanted))
        trials = block.get("trials_per_participant") or segments
        return (f"'{block['id']}' ({kind}, {len(conditions)} conditions, {trials} trials per "
                f"listener from {segments} segments)")
    if kind == "headphone_check":
        return f"'{block['id']}' (headphone check, {block['trials']} trials)"
    return f"'{block['id']}' ({kind})"


def aspredicted(osf: dict[str, Any], hypotheses: list[dict[str, Any]],
                design: dict[str, Any]) -> dict[str, Any]:
    """AsPredicted's eight answers, at most ASPREDICTED_LIMIT characters together: each answer
    is written in full when the eight fit, else the longest ones are cut at a sentence and
    point to the OSF plan, which holds everything."""
    info, plan = osf["study_information"], osf["analysis_plan"]
    sampling = osf["sampling_plan"]
    answers = [
        ("Data collection. Have any data been collected for this study already?",
         "No, no data have been collected for this study yet."),
        ("Hypothesis. What's the main question being asked or hypothesis being tested?",
         " ".join(f"{h['id']}: {h['text']}" for h in info["hypotheses"])
         or "No confirmatory hypothesis."),
        ("Dependent variable. Describe the key dependent variable(s) specifying how they will "
         "be measured.", osf["variables"]["indices"]),
        ("Conditions. How many and which conditions will participants be assigned to?",
         osf["design_plan"]["study_design"]),
        ("Analyses. Specify exactly which analyses you will conduct to examine the main "
         "question/hypothesis.",
         _grouped_tests(hypotheses) + " Models (first structure of each fallback ladder, "
         "all in the OSF plan): "
         + "; ".join(str(m).split("; if that structure")[0] for m in plan["statistical_models"]
                     if m != REDUCTION_RULE)
         + "."),
        ("Outliers and Exclusions. Describe exactly how outliers will be defined and handled, "
         "and your precise rule(s) for excluding observations.",
         " ".join(plan["data_exclusion"])),
        ("Sample Size. How many observations will be collected or what will determine sample "
         "size?", f"{sampling['sample_size']} {sampling['stopping_rule']}"),
        ("Other. Anything else you would like to pre-register?",
         f"Exploratory: {plan['exploratory_analysis']}"),
    ]
    texts = [a for _, a in answers]
    note = " (Full text in the OSF plan.)"
    while sum(map(len, texts)) > ASPREDICTED_LIMIT:
        longest = max(range(len(texts)), key=lambda i: len(texts[i]))
        excess = sum(map(len, texts)) - ASPREDICTED_LIMIT
        keep = max(len(texts[longest]) - excess - len(note), 80)
        cut = texts[longest][:keep]
        # End at a sentence (or word) so the answer reads as written, not as cut.
        stop = max(cut.rfind(". "), cut.rfind("; "))
        cut = cut[:stop + 1] if stop > 40 else cut[:cut.rfind(" ")]
        texts[longest] = cut.rstrip() + note
        if len(texts[longest]) >= len(answers[longest][1]):  # nothing left to cut here
            break
    return {"limit_characters": ASPREDICTED_LIMIT, "characters": sum(map(len, texts)),
            "answers": [{"question": q, "answer": t}
                        for (q, _), t in zip(answers, texts, strict=True)]}


def _grouped_tests(hypotheses: list[dict[str, Any]]) -> str:
    """One sentence per kind of test, naming the hypotheses it answers (AsPredicted is short)."""
    groups: dict[str, list[str]] = {}
    for h in hypotheses:
        generic = h["test"].replace(f" of {h['condition']} ", " of each condition ")
        groups.setdefault(generic, []).append(h["id"])
    return " ".join(f"{', '.join(ids)}: {test}." for test, ids in groups.items())


# Freezing ---------------------------------------------------------------------------------


def canonical_json(plan: dict[str, Any]) -> str:
    """The plan as canonical JSON: sorted keys, no insignificant whitespace, UTF-8 text."""
    return json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def plan_sha256(plan_json: str) -> str:
    """The sha256 of a plan's canonical JSON (hex)."""
    return hashlib.sha256(plan_json.encode("utf-8")).hexdigest()


def frozen_record(plan_json: str, sha256: str, frozen_at: str,
                  amendments: list[dict[str, Any]]) -> dict[str, Any]:
    """What preregistration.json holds: the frozen plan as frozen, its hash and time, and the
    amendments after it (dated, with reasons; the plan itself never changes)."""
    return {"format": PLAN_FORMAT, "sha256": sha256, "frozen_at": frozen_at,
            "plan": json.loads(plan_json), "amendments": amendments}


def plan_markdown(plan: dict[str, Any], record: dict[str, Any] | None = None) -> str:
    """The plan as Markdown (OSF's sections, then AsPredicted's answers, then amendments)."""
    lines = [f"# Pre-registration: {plan['study']['title']}", ""]
    if record:
        lines += [f"Frozen {record['frozen_at']} when the study opened; sha256 of the plan's "
                  f"canonical JSON: `{record['sha256']}`.", ""]
    else:
        lines += ["Draft: the plan is frozen when the study opens.", ""]
    for section, fields in plan["osf"].items():
        lines += [f"## {_title(section)}", ""]
        for name, value in fields.items():
            lines.append(f"### {_title(name)}")
            lines.append("")
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        lines.append(f"- **{item['id']}**: {item['text']} Test: {item['test']}.")
                    else:
                        lines.append(f"- {item}")
            else:
                lines.append(str(value) or "(empty)")
            lines.append("")
    lines += ["## AsPredicted", "",
              f"{plan['aspredicted']['characters']} of {plan['aspredicted']['limit_characters']} "
              "characters.", ""]
    for number, item in enumerate(plan["aspredicted"]["answers"], 1):
        lines += [f"{number}. **{item['question']}** {item['answer']}"]
    lines.append("")
    if record and record["amendments"]:
        lines += ["## Amendments", ""]
        lines += [f"- {a['at']}: {a['text']} (reason: {a['reason']})"
                  for a in record["amendments"]]
        lines.append("")
    return "\n".join(lines)


def _title(key: str) -> str:
    return key.replace("_", " ").capitalize().replace("Osf", "OSF")
