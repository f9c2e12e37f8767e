"""No import cycle in study_app, analysis, export_contract, sightsound_stats or demo_set (imports
inside functions count), and the packages keep apart: the app never imports analysis, analysis
never imports the app, and what they share (export contract, statistics) imports neither."""

from __future__ import annotations

import ast
import pathlib

import pytest
from import_cycles import cycles, import_graph

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "package", ["study_app", "analysis", "export_contract", "sightsound_stats", "demo_set"]
)
def test_no_import_cycle_in_the_package(package):
    graph = import_graph(ROOT / package)
    assert f"{package}" in graph  # it read the package
    assert cycles(graph) == []


def _imported_top_levels(package: str) -> set[str]:
    """The top-level names every module of `package` imports, anywhere in its source."""
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_the_app_and_the_analysis_share_only_the_export_contract():
    assert "analysis" not in _imported_top_levels("study_app")
    assert "study_app" not in _imported_top_levels("analysis")
    assert "export_contract" in _imported_top_levels("study_app")
    assert "export_contract" in _imported_top_levels("analysis")
    assert "sightsound_stats" in _imported_top_levels("study_app")
    assert "sightsound_stats" in _imported_top_levels("analysis")
    for shared in ("export_contract", "sightsound_stats"):
        assert not _imported_top_levels(shared) & {"study_app", "analysis", "synthesis"}
