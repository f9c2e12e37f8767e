"""Bias and interval coverage of the between-set distances on simulated embedding sets.

Prints the tables of docs/analysis.md (*Distances between sets of clips*): two sets of N
clips drawn from N(0, I) in 128 and 8 dimensions, either the same distribution or the
generated set's mean shifted by ``--shift`` standard deviations along one axis. For each it
reports the plain Frechet distance and its percentile bootstrap interval, FAD-inf with its
jackknife interval (:func:`analysis.objective.fad_infinity`) and the unbiased MMD^2 with its
permutation test and interval (:func:`analysis.objective.mmd_summary`). The truth is 0 for
equal distributions; under the shift it is ``shift^2`` for the Frechet distance and, for
MMD^2 at the bandwidth ``h`` the data chose, ``2 c (1 - exp(-shift^2 / (2 (h^2 + 2))))`` with
``c = (h^2 / (h^2 + 2))^(d/2)`` (Gaussian expectations of the Gaussian kernel).

    OPENBLAS_NUM_THREADS=1 nice -n 10 python scripts/simulate_set_distances.py [--runs 200]

FAD-inf's jackknife costs ~1,400 Frechet distances per set pair, so it runs on fewer of the
runs at N = 128 and 512 (the table says how many).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis import objective

SIZES = (10, 32, 128, 512)


def mmd_truth(bandwidth: float, shift: float, dim: int) -> float:
    """Population MMD^2 of N(0, I) and N(shift e_1, I) under the Gaussian kernel."""
    h2 = bandwidth**2
    return 2 * (h2 / (h2 + 2)) ** (dim / 2) * (1 - np.exp(-shift**2 / (2 * (h2 + 2))))


def fad_runs(size: int, dim: int, runs: int, shifted: bool) -> int:
    """How many runs also compute FAD-inf (its jackknife is slow at N >= 128 in 128-d)."""
    if dim <= 16 or size <= 32:
        return runs if not shifted else runs // 2
    cap = {128: 30, 512: 10}[size]
    return min(runs, cap if not shifted else cap // 2)


def simulate(dim: int, size: int, shift: float, runs: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    permutations = 1000 if size <= 128 else 300
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(float(value))

    n_fad = fad_runs(size, dim, runs, shift > 0)
    fd_truth = shift**2
    for run in range(runs):
        reference = rng.normal(size=(size, dim))
        generated = rng.normal(size=(size, dim))
        generated[:, 0] += shift
        gen, ref = list(generated), list(reference)
        fd = objective.frechet_distance(generated, reference)
        low, high = objective._frechet_bootstrap(gen, ref, 200, run)
        add("fd", fd)
        add("fd_cover", low <= fd_truth <= high)
        mmd = objective.mmd_summary(gen, ref, n_permutations=permutations, seed=run)
        truth = mmd_truth(mmd["mmd_bandwidth"], shift, dim)
        add("mmd", mmd["mmd2"])
        add("mmd_err", mmd["mmd2"] - truth)
        add("mmd_reject", mmd["mmd_pval"] < 0.05)
        add("mmd_cover", mmd["mmd2_ci_low"] <= truth <= mmd["mmd2_ci_high"])
        # the two intervals the reported one combines, for the record
        add("mmd_cover_perm", mmd["mmd2_perm_ci_low"] <= truth <= mmd["mmd2_perm_ci_high"])
        add("mmd_cover_jack", abs(mmd["mmd2"] - truth) <= 1.959964 * mmd["mmd2_se"])
        if run < n_fad:
            inf = objective.fad_infinity(gen, ref, seed=run)
            add("fad_inf", inf["fad_inf"])
            add("fad_cover", inf["fad_inf_ci_low"] <= fd_truth <= inf["fad_inf_ci_high"])
            add("fad_extrapolable", inf["fad_inf_extrapolable"])
            share = inf["fad_inf_bias"] / fd if fd > 0 else 1.0
            add("flag", (not inf["fad_inf_extrapolable"]) or share > objective.FRECHET_BIAS_SHARE
                or size <= dim)
    summary = {key: float(np.mean(values)) for key, values in rows.items()}
    summary["fad_runs"] = n_fad
    summary["mmd_sd"] = float(np.std(rows["mmd"]))
    summary["fad_sd"] = float(np.std(rows["fad_inf"])) if "fad_inf" in rows else float("nan")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--shift", type=float, default=2.0)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 8])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args()
    started = time.perf_counter()
    for scenario, shift in (("equal distributions", 0.0), (f"mean shift {args.shift:g} SD",
                                                             args.shift)):
        print(f"\n{scenario}: {args.runs} runs per row (FAD-inf on the first `fad runs`)\n")
        print("| d | N | mean FD | FD boot. cover | mean FAD-inf (SD) | FAD-inf cover | "
              "extrapolable | FD flag on | mean MMD^2 - truth (SD) | MMD cover | "
              "perm. / jackknife cover | MMD p<0.05 | fad runs |")
        print("|" + "---|" * 13)
        for dim in args.dims:
            for size in args.sizes:
                s = simulate(dim, size, shift, args.runs, seed=1000 * dim + size)
                print(f"| {dim} | {size} | {s['fd']:.3g} | {s['fd_cover']:.0%} | "
                      f"{s.get('fad_inf', float('nan')):.3g} ({s['fad_sd']:.2g}) | "
                      f"{s.get('fad_cover', float('nan')):.0%} | "
                      f"{s.get('fad_extrapolable', float('nan')):.0%} | "
                      f"{s.get('flag', float('nan')):.0%} | "
                      f"{s['mmd_err']:.2g} ({s['mmd_sd']:.2g}) | {s['mmd_cover']:.1%} | "
                      f"{s['mmd_cover_perm']:.0%} / {s['mmd_cover_jack']:.0%} | "
                      f"{s['mmd_reject']:.1%} | {s['fad_runs']} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
