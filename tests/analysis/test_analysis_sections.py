"""The report's registry of sections (issue 25): one section per analysed trial type, each in a
module that says what it owns; the analysis package has no import cycle, and the report depends
on its sections, never the reverse."""

from __future__ import annotations

import ast
import importlib
import pathlib

from import_cycles import cycles, import_graph

import export_contract
from analysis.sections import Section, all_sections

ANALYSIS = pathlib.Path(__file__).resolve().parents[2] / "analysis"
# Trial types whose rows only screen listeners and have no part of the report of their own (the
# exclusions table counts what they flag).
SCREENING_ONLY = {"headphone_check"}


def test_one_section_per_analysed_trial_type():
    sections = all_sections()
    claimed = [trial_type for section in sections for trial_type in section.trial_types]
    assert sorted(claimed) == sorted(set(export_contract.EXPORTED_TRIAL_TYPES) - SCREENING_ONLY)
    assert len({section.name for section in sections}) == len(sections)
    orders = [section.order for section in sections]
    assert orders == sorted(set(orders))  # a place each, in report order
    # the objective metrics are the one section that reads no trial type of its own
    assert [s.name for s in sections if not s.trial_types] == ["objective"]


def test_each_section_module_says_what_it_owns_and_registers_one_section():
    for path in sorted((ANALYSIS / "sections").glob("*.py")):
        module = importlib.import_module(f"analysis.sections.{path.stem}".replace(".__init__", ""))
        assert (module.__doc__ or "").startswith("Owns "), path.name
        if path.stem == "__init__":
            continue
        registered = [value for value in vars(module).values()
                      if isinstance(value, type) and issubclass(value, Section)
                      and value is not Section]
        assert len(registered) == 1, path.name
    for name in ("config", "exclusions", "figures", "load", "page", "report", "rows",
                 "validation"):
        assert importlib.import_module(f"analysis.{name}").__doc__.startswith("Owns "), name


def test_no_import_cycle_and_sections_never_import_the_report():
    graph = import_graph(ANALYSIS)
    assert "analysis.sections.acr" in graph
    assert cycles(graph) == []
    for name, imported in graph.items():
        if name.startswith("analysis.sections"):
            assert not imported & {"analysis.report", "analysis.page"}, name
    # the statistics modules know nothing of the report, its page or its sections
    for name in ("realism", "agreement", "mos", "mushra", "preference"):
        assert not {t for t in graph[f"analysis.{name}"]
                    if t.startswith(("analysis.sections", "analysis.report", "analysis.page"))}


def test_the_page_knows_no_trial_type():
    """Titles, shown columns and legends of the trial types' tables are their sections'."""
    source = (ANALYSIS / "page.py").read_text(encoding="utf-8")
    strings = {node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    for section in all_sections():
        assert not strings & set(section.titles), section.name
