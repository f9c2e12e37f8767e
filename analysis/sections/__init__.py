"""Owns the registry of the report's sections: one module per analysed trial type (and one for
the objective metrics), found and registered automatically, as ``study_app/trial_types`` are.

A section owns everything particular to its trial type in the report: which rows of the export
it reads (``rows``), the tables computed both after exclusions and with none
(``variant_tables``), the mixed models it fits in R (``model_jobs`` / ``model_tables``), its other
tables (``tables``), its figures, its verdict sentences, its lines of "Who was analysed" and
"Models fitted", and the titles, shown columns and legend of its tables. The report
(:mod:`analysis.report`) and the page (:mod:`analysis.page`) only call these hooks, in the
sections' ``order``, so analysing a new trial type is a new module here and touches nothing else.
The statistics themselves stay in their modules (``realism``, ``agreement``, ``mos``,
``mushra``, ``preference``); a section calls them.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from analysis import mos
from analysis.config import ReportConfig
from analysis.rows import trials_of_type
from sightsound_stats import planning

Tables = dict[str, pd.DataFrame]


@dataclass(frozen=True)
class Context:
    """What a section's own tables are computed from.

    ``kept``: the export's rows after the configured exclusions; ``everyone``: all its rows
    (for the tables that must see the listeners the flags remove); ``objective``: the per-clip
    table of ``python -m analysis objective`` (its ``attrs`` hold the set distances), or None.
    """

    kept: pd.DataFrame
    everyone: pd.DataFrame
    config: ReportConfig
    objective: pd.DataFrame | None = None


class Section:
    """Base class with the defaults (no tables, no figures); subclasses set ``name``, ``order``
    and ``trial_types`` and override what they need."""

    name: ClassVar[str]
    # Place in the report: tables, figures, verdicts and model lines follow this order.
    order: ClassVar[int]
    # The export's trial types it analyses (empty for a section that reads no rows of its own).
    trial_types: ClassVar[tuple[str, ...]] = ()
    # Its tables' headings on the page (a table without one is headed by its name).
    titles: ClassVar[dict[str, str]] = {}
    # Columns shown on the page for some of its tables (the others are shown in slices).
    display_columns: ClassVar[dict[str, list[str]]] = {}
    # Column legends its tables need beyond the page's common ones (analysis.page.LEGEND).
    legend: ClassVar[dict[str, str]] = {}
    # Tables written to tables/*.csv and report.json but not shown on the page (a figure
    # shows them).
    hidden_tables: ClassVar[tuple[str, ...]] = ()

    def rows(self, responses: pd.DataFrame) -> pd.DataFrame:
        """Its rows that enter the statistics (catch trials left out)."""
        catch = responses["is_catch"].fillna(False).astype(bool)
        return responses[responses["trial_type"].isin(self.trial_types) & ~catch]

    def variant_tables(self, rows: pd.DataFrame, config: ReportConfig) -> Tables:
        """Tables computed twice, from its rows after exclusions and from all its rows; the
        report names the second ``<name>_no_exclusions``."""
        return {}

    def model_jobs(self, rows: pd.DataFrame, config: ReportConfig) -> list[tuple[Any, Any]]:
        """``(lme4.Job, label)`` per mixed model to fit in R on its rows after exclusions.

        All sections' jobs run in one background R run while the other tables are computed,
        side by side (fit_mixed.R starts a report's few ladders at once).
        """
        return []

    def model_tables(
        self, fits: list[tuple[Any, Any]], rows: pd.DataFrame, config: ReportConfig
    ) -> Tables:
        """Tables from its fitted models: ``fits`` is ``(label, lme4.MixedFit or None)`` in the
        order of :meth:`model_jobs`, ``rows`` its rows after exclusions."""
        return {}

    def tables(self, context: Context) -> Tables:
        """Its other tables (descriptive statistics, screening), only when its rows exist."""
        return {}

    def figures(self, tables: Tables, config: ReportConfig) -> list[tuple[str, Any]]:
        """``(heading, plotly figure)`` from the report's tables; titles are wrapped later."""
        return []

    def verdicts(self, tables: Tables, config: ReportConfig) -> list[dict[str, str]]:
        """One ``{"question", "condition", "verdict"}`` per plain sentence it concludes."""
        return []

    def analysed(self, tables: Tables) -> list[str]:
        """Sentences for "Who was analysed": how many listeners and answers its models used."""
        return []

    def models(self, tables: Tables) -> list[str]:
        """HTML lines for "Models fitted": formulas, estimation, and why that structure."""
        return []


_REGISTRY: dict[str, Section] = {}


def register(cls: type[Section]) -> type[Section]:
    """Class decorator: make a section known to the report."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"report section {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


_loaded = False


def all_sections() -> list[Section]:
    """Every registered section, in report order."""
    global _loaded
    if not _loaded:
        # Importing every module of the package runs its @register: no list of sections to keep.
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
    return sorted(_REGISTRY.values(), key=lambda section: section.order)


def p_text(value: float) -> str:
    """A p-value as a verdict sentence gives it: ``= 0.012`` or ``< 0.001``.

    >>> p_text(0.0123), p_text(0.0004)
    ('= 0.012', '< 0.001')
    """
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def mos_tables(responses: pd.DataFrame, trial_type: str, column: str) -> Tables:
    """``<trial_type>`` (MOS per condition) and ``<trial_type>_clips`` (per clip) of the rated
    rows of a trial type whose rating is ``column``; none when it has no rated rows.

    >>> rows = pd.DataFrame({"trial_type": "similarity", "is_catch": False,
    ...                      "participant": ["P1", "P2"], "condition": "good",
    ...                      "similarity": [5, 7]})
    >>> mos_tables(rows, "similarity", "similarity")["similarity"]["mos"].tolist()
    [6.0]
    """
    if column not in responses:
        return {}
    rows = trials_of_type(responses, trial_type)
    rows = rows[rows[column].notna()]
    if not len(rows):
        return {}
    tables = {trial_type: mos.mos_per_condition(rows, rating=column)}
    if "clip" in rows:
        tables[f"{trial_type}_clips"] = mos.mos_per_clip(rows, rating=column)
    return tables


def design_calibration(rows: pd.DataFrame, kind: str, unit: str = "source",
                       table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether the verdicts of this study's design are calibrated: its listeners, stimulus
    units and units each listener heard per condition (median), read against the simulated
    planning table of ``kind`` ("realism" or "ratings") by
    :func:`sightsound_stats.planning.calibration`, the rule the study designer marks designs
    by (``table``: the shipped one unless given)."""
    column = unit if unit in rows else "source"
    heard = rows.groupby(["participant", "condition"], observed=True)[column].nunique()
    table = planning.load_table(kind) if table is None else table
    return planning.calibration(table, kind, int(rows["participant"].nunique()),
                                int(rows[column].nunique()), float(heard.median()))
