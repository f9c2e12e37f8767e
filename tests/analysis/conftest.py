"""Shared fixtures: one simulated study with known truth, written in the export format."""

from pathlib import Path

import pytest

from analysis.load import read_export
from analysis.report import ReportConfig, analyse
from analysis.simulate import Truth, simulate_export

TRUTH = Truth(
    abx_accuracy={"at_chance": 0.5, "distinguishable": 0.85},
    keeps_emotion=("keeps_emotion",),
    loses_emotion=("loses_emotion",),
)


@pytest.fixture(scope="session")
def simulated_export_paths(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("export")
    return simulate_export(out, participants=80, abx_trials=24, rating_trials=24, sources=12,
                           truth=TRUTH, failed_screening_share=0.06, failed_catch_share=0.06,
                           seed=13)


@pytest.fixture(scope="session")
def simulated_export(simulated_export_paths):
    return read_export(*simulated_export_paths)


@pytest.fixture(scope="session")
def simulated_tables(simulated_export):
    config = ReportConfig(n_boot=500, n_permutations=500, seed=3)
    return analyse(simulated_export, config)
