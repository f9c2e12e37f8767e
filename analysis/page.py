"""Owns report.html: the page's parts in order (verdicts, the plan, who was analysed, models,
figures, tables), how a table is shown (chosen columns or slices, a legend per column) and the
style; the sections (:mod:`analysis.sections`) supply their lines, figures, titles and legends.

Sized to read at 1280 px (and narrower) without sideways scrolling: long words (formulas,
column names, condition ids) may break, wide tables scroll inside their own box rather than
widening the page, and figures take the width of the column.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from analysis import deviations
from analysis.config import ReportConfig
from analysis.figures import figure_html, wrap_title
from analysis.load import Export
from analysis.sections import Section, Tables, all_sections

# Plain, readable at 1280 px: a text column of at most 1200 px, tables that scroll inside
# their own box if they must, words that break rather than widen the page.
STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 16px;"
    "line-height:1.4;overflow-wrap:anywhere}"
    "h1{margin-bottom:4px}section{margin:0 0 18px}"
    ".tablebox{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;font-size:12px;margin-top:6px}td,th{border:1px solid "
    "#ccc;padding:2px 6px;text-align:right;overflow-wrap:normal}"
    ".legend,.note{font-size:11px;color:#444}li{margin:4px 0}"
    "code{font-size:12px}"
)
# Tables shown in slices of at most MAX_COLUMNS columns unless a section chooses the columns
# (all columns are in tables/*.csv and report.json); at most MAX_ROWS rows.
MAX_COLUMNS = 10
MAX_ROWS = 60
# The report's own tables; each section adds the titles of its tables.
TITLES = {"exclusions": "Exclusions", "verdicts": "Verdicts"}
# Tables on no section's page part: the verdicts (listed first) and the plan (its own part).
HIDDEN = ("verdicts", "deviations")
# Columns that many tables share; each section adds the legend of its own columns.
LEGEND = {
    "condition": "generated condition",
    "ci_low": "lower end of the 95% interval",
    "ci_high": "upper end of the 95% interval",
    "pval": "p-value of the test (see the table's title)",
    "pval_holm": "p-value, Holm-corrected across conditions (realism: one-sided, accuracy > "
    "0.5; ratings: two-sided, shift = 0, within a dimension)",
    "participants": "listeners in the analysis",
    "units": "stimulus units (sources or segments)",
    "df": "degrees of freedom of the t test (ratings: Satterthwaite, lmerTest; realism: "
    "Welch-Satterthwaite from the variance components, at most the condition's sources - 1)",
    "rule": "exclusion rule (export flag)",
    "reason": "what the rule means",
    "level": "participant: all their rows go; row: only that answer goes",
    "rows": "rows the rule removes on its own (rules overlap; 'any' is the union)",
}


def table_titles(sections: list[Section] | None = None) -> dict[str, str]:
    """Every table's heading: the report's and the sections'."""
    titles = dict(TITLES)
    for section in all_sections() if sections is None else sections:
        titles.update(section.titles)
    return titles


def display_columns(sections: list[Section] | None = None) -> dict[str, list[str]]:
    """The chosen columns of the tables whose section chooses them."""
    chosen: dict[str, list[str]] = {}
    for section in all_sections() if sections is None else sections:
        chosen.update(section.display_columns)
    return chosen


def column_legend(sections: list[Section] | None = None) -> dict[str, str]:
    """Every column's legend; a column two sections define differently is an error."""
    legend = dict(LEGEND)
    for section in all_sections() if sections is None else sections:
        for column, text in section.legend.items():
            if legend.setdefault(column, text) != text:
                raise ValueError(f"section {section.name!r} redefines the legend of {column!r}")
    return legend


def sample_sizes(export: Export, tables: Tables) -> list[str]:
    """Sentences: enrolled (study.json), in the export, analysed (each section's models), and
    each exclusion rule.

    The exclusion rules are read from the exclusions table, so rules added to
    :mod:`analysis.exclusions` appear here without a change.
    """
    study = export.study.get("study", {})
    in_export = export.responses["participant"].nunique()
    lines = []
    started, completed = study.get("participants_started"), study.get("participants_completed")
    if started is not None or completed is not None:
        lines.append(f"Enrolled (study.json): {started} started, {completed} completed.")
    lines.append(f"In the export: {in_export} participants, {len(export.responses)} rows.")
    for section in all_sections():
        lines.extend(section.analysed(tables))
    exclusions = tables.get("exclusions")
    if exclusions is not None:
        parts = [f"{row.rule} ({row.reason}): {row.participants} participants, {row.rows} rows"
                 for row in exclusions.itertuples()]
        lines.append("Exclusions: " + "; ".join(parts) + ".")
    return lines


def model_descriptions(tables: Tables) -> list[str]:
    """Fitted formulas, how they were fitted, and why that random-effect structure (HTML)."""
    return [line for section in all_sections() for line in section.models(tables)]


def figures(tables: Tables, config: ReportConfig) -> list[tuple[str, Any]]:
    """Every section's figures, in report order, their titles wrapped for a phone's width."""
    return [(name, wrap_title(figure)) for section in all_sections()
            for name, figure in section.figures(tables, config)]


def plan_html(export: Export, tables: Tables) -> str:
    """The "As planned / Deviations" section (right after the verdicts), or, for an export
    without a plan, one line saying so inside the verdicts section."""
    record = export.preregistration
    if record is None:
        return f"<p id='no-preregistration'>{html.escape(deviations.NO_PLAN_LINE)}</p>"
    table = tables["deviations"]
    parts = ["<section id='preregistration'><h2>As planned / Deviations</h2>",
             f"<p>{html.escape(deviations.summary_line(record, table))}</p>"]
    # Deviations first, then the amendments, then what went as planned.
    for status, heading in ((deviations.DEVIATION, "Deviations"),
                            (deviations.AMENDMENT, "Amendments"),
                            (deviations.AS_PLANNED, "As planned")):
        rows = table[table["status"] == status]
        if not len(rows) and status != deviations.DEVIATION:
            continue
        parts.append(f"<h3>{heading}</h3><ul>")
        if not len(rows):
            parts.append("<li>None.</li>")
        for row in rows.itertuples():
            text = (f"{row.item}: {row.analysed}" if status == deviations.AMENDMENT else
                    f"{row.item}: planned {row.planned}; analysed {row.analysed}")
            parts.append(f"<li class='{status.replace(' ', '-')}'>{html.escape(text)}"
                         + (f" ({html.escape(row.note)})" if row.note else "") + "</li>")
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def table_html(name: str, table: pd.DataFrame, chosen: list[str] | None = None,
               legend: dict[str, str] | None = None) -> str:
    """A table that fits the page: the ``chosen`` columns (or slices of MAX_COLUMNS), then a
    legend of its columns (a column without one points to docs/analysis.md)."""
    legend_of = column_legend() if legend is None else legend
    shown = [c for c in (chosen or []) if c in table]
    frames = [table[shown]] if shown else []
    if not shown:
        keys = [c for c in table.columns[:2] if table[c].dtype == object
                or str(table[c].dtype) == "string"][:1]
        rest = [c for c in table.columns if c not in keys]
        step = MAX_COLUMNS - len(keys)
        frames = [table[keys + rest[i:i + step]] for i in range(0, max(len(rest), 1), step)]
    parts = []
    for frame in frames:
        body = frame.head(MAX_ROWS)
        parts.append("<div class='tablebox'>" + body.to_html(
            index=False, float_format=_format_number, na_rep="") + "</div>")
    if len(table) > MAX_ROWS:
        parts.append(f"<p class='note'>First {MAX_ROWS} of {len(table)} rows; all in "
                     f"tables/{html.escape(name)}.csv.</p>")
    if shown and len(shown) < len(table.columns):
        parts.append(f"<p class='note'>{len(table.columns) - len(shown)} more columns in "
                     f"tables/{html.escape(name)}.csv.</p>")
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    lines = [f"<b>{html.escape(str(c))}</b>: {html.escape(legend_of[c])}"
             for c in columns if c in legend_of]
    unknown = [str(c) for c in columns if c not in legend_of]
    if unknown:
        lines.append(f"{html.escape(', '.join(unknown))}: see docs/analysis.md")
    parts.append("<p class='legend'>" + "; ".join(lines) + "</p>")
    return "\n".join(parts)


def render(export: Export, tables: Tables, config: ReportConfig) -> str:
    """The page: one ``<section>`` per part, the verdicts first."""
    sections = all_sections()
    title = html.escape(str(export.study.get("study", {}).get("title", "SightSound study")))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{title}: report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        "<section id='verdicts'><h2>Verdicts</h2><ul>",
    ]
    verdicts = tables.get("verdicts")
    if verdicts is not None:
        parts.extend(f"<li>{html.escape(v)}</li>" for v in verdicts["verdict"])
    parts.append("</ul><p>Equivalence margin &plusmn;" f"{config.equivalence_margin}; alpha "
                 f"{config.alpha}; Holm correction across conditions; seed {config.seed}.</p>")
    parts.append(plan_html(export, tables) + "</section>" if export.preregistration is None
                 else "</section>" + plan_html(export, tables))
    parts.append("<section id='analysed'><h2>Who was analysed</h2><ul>")
    parts.extend(f"<li>{html.escape(line)}</li>" for line in sample_sizes(export, tables))
    parts.append("</ul></section><section id='models'><h2>Models fitted</h2><ul>")
    parts.extend(f"<li>{line}</li>" for line in model_descriptions(tables))
    parts.append("</ul></section>")
    for index, (name, figure) in enumerate(figures(tables, config)):
        parts.append(f"<section class='figure'><h2>{html.escape(name)}</h2>")
        parts.append(figure_html(figure, first=index == 0))
        parts.append("</section>")
    titles, chosen, legend = table_titles(sections), display_columns(sections), column_legend(
        sections)
    hidden = {*HIDDEN, *(name for section in sections for name in section.hidden_tables)}
    for name, table in tables.items():
        if name in hidden:
            continue
        parts.append(f"<section class='table' id='table-{html.escape(name)}'>"
                     f"<h2>{html.escape(titles.get(name, name))}</h2>")
        parts.append(table_html(name, table, chosen.get(name), legend))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _format_number(value: float) -> str:
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"
