"""The worked examples in the docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["analysis.load", "analysis.realism", "analysis.agreement", "analysis.power",
           "analysis.objective"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0


def test_analysis_imports_no_app_or_torch():
    import subprocess
    import sys

    code = ("import sys, analysis, analysis.report, analysis.objective, analysis.simulate; "
            "print(sorted(m for m in ('study_app', 'flask', 'torch', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
