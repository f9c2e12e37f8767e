"""Power planning: analytic answers agree with simulations of the design."""

import pytest

from analysis import power


def test_abx_power_is_alpha_at_chance_and_grows_with_participants():
    assert power.abx_power(0.5, 40, 20) == pytest.approx(0.05, abs=1e-9)
    values = [power.abx_power(0.58, n, 20) for n in (10, 20, 40, 80)]
    assert values == sorted(values)


@pytest.mark.parametrize(("accuracy", "participants", "trials"), [(0.6, 20, 20), (0.56, 40, 30)])
def test_abx_analytic_matches_simulation(accuracy, participants, trials):
    # icc chosen to match the simulated listener spread (see the power module docstring).
    sd = 0.4
    icc = sd**2 * accuracy * (1 - accuracy)
    analytic = power.abx_power(accuracy, participants, trials, icc=icc)
    simulated = power.simulate_abx_power(accuracy, participants, trials, participant_sd=sd,
                                         n_simulations=3000, seed=1)
    assert simulated == pytest.approx(analytic, abs=0.05)


def test_simulated_abx_power_is_alpha_under_the_null():
    assert power.simulate_abx_power(0.5, 30, 20, n_simulations=4000, seed=2) == pytest.approx(
        0.05, abs=0.015)


def test_participants_needed_is_the_smallest_sufficient_number():
    needed = power.abx_participants_needed(0.6, trials=20, power=0.8)
    assert power.abx_power(0.6, needed, 20) >= 0.8 > power.abx_power(0.6, needed - 1, 20)
    rating = power.rating_participants_needed(0.5, trials=6, power=0.8)
    assert power.rating_power(0.5, rating, 6) >= 0.8 > power.rating_power(0.5, rating - 1, 6)


def test_rating_analytic_matches_simulation():
    analytic = power.rating_power(0.5, 30, 6)
    simulated = power.simulate_rating_power(0.5, 30, 6, n_simulations=3000, seed=3)
    # Rounding to the 9-point scale adds a little noise the analytic answer ignores.
    assert simulated == pytest.approx(analytic, abs=0.06)


def test_power_grid_shape():
    grid = power.power_grid(0.6, [10, 20], [10, 20], n_simulations=300)
    assert len(grid) == 4
    assert {"power_analytic", "power_simulated"} <= set(grid.columns)
