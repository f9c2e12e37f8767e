"""The worked examples in the docstrings are tests too: pytest runs them (`--doctest-modules` on
analysis/, sightsound_stats/ and study_app/, set in pyproject.toml). Here: the modules whose
examples the report's users read still have some, and the analysis keeps to its own imports."""

import doctest
import importlib

import pytest

MODULES = ["analysis.load", "analysis.realism", "analysis.agreement", "analysis.power",
           "analysis.objective", "analysis.cues", "analysis.transcription", "analysis.lme4",
           "analysis.calibration", "analysis.mushra", "analysis.preference", "analysis.mos",
           "analysis.validation", "analysis.exclusions", "analysis.rows", "analysis.figures",
           "analysis.sections", "sightsound_stats.planning"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_are_there(name):
    tests = doctest.DocTestFinder().find(importlib.import_module(name))
    assert sum(len(test.examples) for test in tests) > 0


def test_analysis_imports_no_app_or_torch():
    import subprocess
    import sys

    code = ("import sys, analysis, analysis.report, analysis.objective, analysis.simulate; "
            "print(sorted(m for m in ('study_app', 'flask', 'torch', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
