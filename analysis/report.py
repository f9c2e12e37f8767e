"""Owns the study report's assembly: every table computed from the sections of the registry
(:mod:`analysis.sections`, one per trial type), the mixed models run in R beside them, the
verdicts, and the files written: ``report.html`` (:mod:`analysis.page`), ``tables/*.csv`` and
``report.json``.

Everything is computed twice, with the configured exclusions and with none, so a reader can see
whether the conclusions hang on them. The slower model fits (mixed models) run once, on the data
after exclusions.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

# `agreement` stays importable from here: tests replace report.agreement.summarize to make a
# statistic fail while R runs.
from analysis import agreement, deviations, page  # noqa: F401
from analysis.config import ReportConfig
from analysis.exclusions import apply_exclusions
from analysis.load import Export, read_export
from analysis.sections import Context, Section, Tables, all_sections
from analysis.sections.objective import objective_vs_listeners

__all__ = [
    "PendingMixedModels", "ReportConfig", "analyse", "new_trial_type_tables",
    "objective_vs_listeners", "report_from_files", "start_mixed_models", "verdict_table",
    "write_report",
]


def analyse(
    export: Export, config: ReportConfig | None = None, objective: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """Compute every table of the report; returns name -> DataFrame.

    In the order of the page: the exclusions; each section's tables computed both ways (after
    exclusions, then with none: ``<name>_no_exclusions``); the mixed models' tables; each
    section's other tables; the verdicts; and, for a preregistered study, the deviations.
    """
    config = config or ReportConfig()
    sections = all_sections()
    tables: dict[str, pd.DataFrame] = {}
    excluded = apply_exclusions(export.responses, config.exclusions)
    context = Context(kept=excluded.kept, everyone=export.responses, config=config,
                      objective=objective)
    # The mixed models take most of the time: R fits them in the background while the
    # statistics below are computed here, and its tables keep their place in the report.
    with start_mixed_models(excluded.kept, config, sections) as pending:
        tables["exclusions"] = excluded.table
        for suffix, responses in (("", excluded.kept), ("_no_exclusions", export.responses)):
            for section in sections:
                computed = section.variant_tables(section.rows(responses), config)
                tables.update({name + suffix: table for name, table in computed.items()})
        later: dict[str, pd.DataFrame] = {}
        for section in sections:
            later.update(section.tables(context))
        tables.update(pending.tables())
    tables.update(later)
    tables["verdicts"] = verdict_table(tables, config)
    if export.preregistration is not None:  # As planned / Deviations (issue 22)
        tables["deviations"] = deviations.deviations(
            export.preregistration, export.study, export.responses, tables,
            alpha=config.alpha, margin=config.equivalence_margin,
            lapse_share=config.lapse_share, unit=config.unit,
            exclusion_rules=config.exclusions.active_rules(),
            analysed_participants=int(excluded.kept["participant"].nunique()))
        tables["verdicts"] = deviations.label_verdicts(tables["verdicts"],
                                                       export.preregistration)
    return tables


class PendingMixedModels:
    """The sections' mixed models, fitting in one background R run; :meth:`tables` waits and
    has each section build its tables from its fits.

    ``jobs`` and ``labels`` (the label each section gave a job, e.g. ``("abx", conditions,
    None)``) are in the same order, as are ``fits`` once :meth:`tables` returned
    (``scripts/bench_analysis.py`` prints them). Leaving a ``with`` block stops R if the tables
    were never asked for (an error elsewhere).
    """

    def __init__(self, responses: pd.DataFrame, config: ReportConfig,
                 sections: list[Section] | None = None) -> None:
        from analysis import lme4

        self.config = config
        planned = []
        for section in all_sections() if sections is None else sections:
            rows = section.rows(responses)
            jobs = section.model_jobs(rows, config)
            if jobs:
                planned.append((section, rows, jobs))
        self.jobs = []
        self.labels: list[Any] = []
        self._owners: list[tuple[Section, pd.DataFrame]] = []
        for section, rows, jobs in planned:
            for job, label in jobs:
                self.jobs.append(job)
                self.labels.append(label)
                self._owners.append((section, rows))
        self.fits: list[dict] = []
        self.pending = lme4.start_jobs(self.jobs, cores=config.r_cores) if self.jobs else None

    def tables(self) -> dict[str, pd.DataFrame]:
        """Wait for R; each section's :meth:`~analysis.sections.Section.model_tables`."""
        if self.pending is None:
            return {}
        results = self.pending.result()
        self.fits = results  # the raw fits, every attempt with its seconds (bench_analysis.py)
        fits: dict[str, list[tuple[Any, Any]]] = {}
        owners: dict[str, tuple[Section, pd.DataFrame]] = {}
        for (section, rows), label, result in zip(self._owners, self.labels, results,
                                                  strict=True):
            fits.setdefault(section.name, []).append((label, result[None]))
            owners[section.name] = (section, rows)
        tables: dict[str, pd.DataFrame] = {}
        for name, (section, rows) in owners.items():
            tables.update(section.model_tables(fits[name], rows, self.config))
        return tables

    def __enter__(self) -> PendingMixedModels:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pending is not None:
            self.pending.cancel()


def start_mixed_models(
    responses: pd.DataFrame, config: ReportConfig, sections: list[Section] | None = None
) -> PendingMixedModels:
    """Start every section's mixed models (the realism GLMM, the rating LMMs) on the rows kept
    after exclusions, in one background R run."""
    return PendingMixedModels(responses, config, sections)


def new_trial_type_tables(
    responses: pd.DataFrame,
    unexcluded: pd.DataFrame | None = None,
    config: ReportConfig | None = None,
) -> dict[str, pd.DataFrame]:
    """The own tables (:meth:`~analysis.sections.Section.tables`) of the sections whose trial
    types these rows hold: for the later trial types (MUSHRA, similarity, fit rating, fit
    preference, ACR, P.808 qualification) every table they have, only when their rows exist.

    ``responses`` are the rows kept after exclusions; ``unexcluded`` all rows of the export (for
    the ``_no_exclusions`` / ``_no_screening`` variants and the P.808 screening table, which
    must see the listeners that the flags remove). Without it, ``responses`` stands for both.
    """
    unexcluded = responses if unexcluded is None else unexcluded
    context = Context(kept=responses, everyone=unexcluded, config=config or ReportConfig())
    present = set(unexcluded["trial_type"]) if "trial_type" in unexcluded else set()
    tables: dict[str, pd.DataFrame] = {}
    for section in all_sections():
        if present & set(section.trial_types):
            tables.update(section.tables(context))
    return tables


def verdict_table(tables: Tables, config: ReportConfig) -> pd.DataFrame:
    """One plain sentence per condition and question, from each section's
    :meth:`~analysis.sections.Section.verdicts` (the realism GLMM, the rating shifts, the
    semantic agreement's permutation test)."""
    records = [record for section in all_sections()
               for record in section.verdicts(tables, config)]
    return pd.DataFrame.from_records(records, columns=["question", "condition", "verdict"])


def write_report(
    export: Export,
    out_dir: str | Path,
    config: ReportConfig | None = None,
    objective: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Write report.html, tables/*.csv and report.json into ``out_dir``; return the JSON data."""
    config = config or ReportConfig()
    started = time.perf_counter()
    tables = analyse(export, config, objective)
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
    summary = {
        "format": "sightsound-report/1",
        "study": export.study.get("study", {}),
        "config": _jsonable(asdict(config)),
        "counts": {
            "rows": len(export.responses),
            "participants": int(export.responses["participant"].nunique()),
        },
        "tables": {
            name: json.loads(table.to_json(orient="records", default_handler=str))
            for name, table in tables.items()
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "report.html").write_text(page.render(export, tables, config), encoding="utf-8")
    return summary


def report_from_files(
    responses: str | Path,
    study: str | Path,
    out_dir: str | Path,
    config: ReportConfig | None = None,
    objective_csv: str | Path | None = None,
) -> dict[str, Any]:
    export = read_export(responses, study)
    objective = pd.read_csv(objective_csv) if objective_csv else None
    # the set distances (MMD, Frechet, FAD-inf) are in the objective.json written beside it
    beside = Path(objective_csv).with_name("objective.json") if objective_csv else None
    if objective is not None and beside is not None and beside.exists():
        saved = json.loads(beside.read_text(encoding="utf-8"))
        objective.attrs.update({key: saved[key] for key in ("frechet", "mmd") if key in saved})
    return write_report(export, out_dir, config, objective)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
