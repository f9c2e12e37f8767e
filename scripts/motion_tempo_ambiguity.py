"""Calibration of the motion tempo's metrical ambiguity (`synthesis.features.tempo_reading`).

Simulated motion energy at 25 Hz, 10 s segments: a 40 ms burst per stroke, every other stroke
`weight` as strong, timing jitter and sensor noise (`accented_motion`, which
`tests/synthesis/test_synthesis_units.py` uses too), at 90-180 BPM, where half the tempo is
still inside 40-240 BPM. Per weight: how often the true tempo is the first candidate,
one of the two, flagged ambiguous, the estimated weaker-stroke ratio (5th-95th percentile) and
the median relative error of the candidate nearest the truth. Prints the table of
docs/synthesis.md (Motion tempo ambiguity).

    .venv/bin/python scripts/motion_tempo_ambiguity.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthesis.features import onset_envelope, tempo_reading  # noqa: E402

TEMPI = (90, 105, 120, 135, 150, 165, 180)
WEIGHTS = (1.0, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1)
SEEDS = range(10)


def accented_motion(bpm: float, weight: float, seed: int, rate: float = 25.0) -> np.ndarray:
    """Frame-difference-like motion energy: a 40 ms burst per stroke, every other stroke
    `weight` as strong, 10 ms timing jitter, a slow sway and sensor noise, 10 s."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(10 * rate)) / rate
    beat = 60.0 / bpm
    energy = 0.02 * (1 + np.sin(2 * np.pi * 0.13 * time))
    for index, start in enumerate(np.arange(rng.uniform(0, beat), 10.0, beat)):
        strength = 1.0 if index % 2 == 0 else weight
        energy += strength * np.exp(-0.5 * ((time - start - rng.normal(0, 0.01)) / 0.04) ** 2)
    return np.clip(energy + 0.02 * rng.standard_normal(len(time)), 0.0, None)


def main() -> None:
    print("| weaker stroke | true tempo first | true tempo in the two | flagged ambiguous "
          "| estimated ratio (5-95 %) | median error |")
    print("|---|---|---|---|---|---|")
    for weight in WEIGHTS:
        first = pair = flagged = total = 0
        ratios, errors = [], []
        for bpm in TEMPI:
            for seed in SEEDS:
                reading = tempo_reading(onset_envelope(accented_motion(bpm, weight, seed), 25.0),
                                        25.0)
                total += 1
                if reading is None:
                    continue
                found = [reading.bpm] + ([reading.alternative_bpm]
                                         if reading.alternative_bpm else [])
                error = min(abs(value - bpm) / bpm for value in found)
                first += abs(reading.bpm - bpm) <= 0.03 * bpm
                pair += error <= 0.03
                flagged += reading.ambiguous
                errors.append(error)
                if reading.weaker_ratio is not None:
                    ratios.append(reading.weaker_ratio)
        low, high = np.percentile(ratios, [5, 95])
        print(f"| {weight:g} | {first / total:.0%} | {pair / total:.0%} | {flagged / total:.0%} "
              f"| {low:.2f}-{high:.2f} | {100 * np.median(errors):.1f} % |")


if __name__ == "__main__":
    main()
