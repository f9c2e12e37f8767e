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


# --------------------------------------------------------------------------------------------
# The `r` marker: tests that start Rscript (lme4, lmerTest, glmmTMB), left out of a quick run
# (`make test-fast`). Found by running this room with Rscript hidden: every test below, and every
# test using one of these fixtures, fails without R; every other test here passes without it.
R_FIXTURES = {"simulated_tables", "report_html"}
NEEDS_R = {
    "test_analysis_deviations.py": {
        "test_report_opens_with_as_planned_and_deviations",
        "test_report_without_a_plan_says_so_and_runs",
    },
    "test_analysis_frechet.py": {"test_report_shows_the_set_distances_with_mmd_first"},
    "test_analysis_lme4.py": {
        "test_a_singular_maximal_fit_does_not_skip_the_clip_term_the_data_support",
        "test_a_singular_rating_fit_is_refitted_with_a_second_optimiser_before_a_term_is_dropped",
        "test_a_nested_fit_at_a_confirmed_singular_optimum_is_not_refitted",
        "test_calibration_of_the_verdicts",
        "test_estimates_and_standard_errors_match_lme4_called_directly",
        "test_every_rating_job_of_one_r_run_equals_a_cold_lmertest_fit",
        "test_every_study_of_a_by_job_equals_a_cold_lmertest_fit",
        "test_glmm_on_300_listeners_is_fast_enough",
        "test_ladder_drops_what_the_data_cannot_support_and_says_why",
        "test_ladder_keeps_by_participant_condition_effects_when_listeners_differ_by_condition",
        "test_power_by_simulating_the_mixed_model",
        "test_refit_started_from_the_larger_fit_equals_a_cold_lme4_fit",
        "test_report_opens_with_plain_verdicts_models_and_sample_sizes",
        "test_report_stops_r_when_a_python_statistic_fails",
        "test_units_are_counted_when_the_chosen_structure_has_no_unit_term",
        "test_valence_and_arousal_of_a_40_by_8_export_equal_cold_lmertest_fits",
        "test_verdicts_on_known_truth",
    },
    "test_analysis_p808_2afc.py": {"test_an_old_export_without_the_new_columns_still_reports"},
    "test_analysis_power.py": {
        "test_rating_power_by_simulating_the_crossed_mixed_model",
        "test_rating_power_of_the_mixed_model_counts_the_clip_variance",
        "test_shipped_power_table_rows_come_from_the_simulation",
    },
    "test_analysis_report_browser.py": {
        "test_as_planned_and_deviations_come_right_after_the_verdicts",
    },
}


def pytest_collection_modifyitems(items):
    room = Path(__file__).resolve().parent
    for item in items:
        if room not in item.path.parents:
            continue
        names = NEEDS_R.get(item.path.name, ())
        if getattr(item, "originalname", item.name) in names or R_FIXTURES.intersection(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.r)
