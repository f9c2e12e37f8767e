"""MUSHRA (ITU-R BS.1534-3) scores: summaries, listener post-screening and a mixed model.

Input rows are the export's MUSHRA rows (``trial_type == "mushra"``), one per rated stimulus:
``participant``, ``trial_index`` (one screen), ``segment``, ``condition``, ``stimulus_role``
(``hidden_reference``, ``anchor``, ``condition``), ``mushra_score`` (0-100) and, from the app,
``mushra_post_screen_flag``. Post-screening is recomputed here from the hidden-reference scores
(the same rule as the app), so an analysis never depends on the flag having been set.

Reference: ITU-R BS.1534-3 (2015) Method for the subjective assessment of intermediate quality
level of audio systems; sections 4.1.2 (post-screening) and 9 (statistics: mean and 95%
confidence interval per condition from the Student t distribution).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.mos import t_interval

SCORE = "mushra_score"
ROLE = "stimulus_role"
HIDDEN_REFERENCE = "hidden_reference"
HIDDEN_REFERENCE_MIN = 90
MAX_FAILED_FRACTION = 0.15
SCORE_COLUMNS = ["n", "listeners", "mean", "sd", "ci_low", "ci_high", "median"]


def post_screening_flag(
    hidden_reference_scores: Sequence[float],
    threshold: float = HIDDEN_REFERENCE_MIN,
    max_fraction: float = MAX_FAILED_FRACTION,
) -> bool:
    """BS.1534-3 4.1.2: exclude a listener who rates the hidden reference below ``threshold``
    (90) in more than ``max_fraction`` (15 %) of the screens. No screens: not flagged.

    >>> post_screening_flag([100, 95, 92, 89, 100, 100, 100])   # 1/7 = 14.3 % below 90
    False
    >>> post_screening_flag([100, 95, 92, 89, 100, 100])        # 1/6 = 16.7 % below 90
    True
    >>> post_screening_flag([90, 90]), post_screening_flag([])  # 90 itself is not below 90
    (False, False)
    """
    scores = [float(s) for s in hidden_reference_scores if not pd.isna(s)]
    if not scores:
        return False
    below = sum(score < threshold for score in scores)
    return below / len(scores) > max_fraction


def mushra_trials(responses: pd.DataFrame) -> pd.DataFrame:
    """MUSHRA rows with a score (catch rows left out); empty when the export has none."""
    if "trial_type" not in responses or SCORE not in responses:
        return responses.iloc[0:0]
    keep = (responses["trial_type"] == "mushra") & responses[SCORE].notna()
    if "is_catch" in responses:
        keep &= ~responses["is_catch"].fillna(False).astype(bool)
    rows = responses[keep]
    return rows.assign(**{SCORE: pd.to_numeric(rows[SCORE]).astype(float)})


def post_screening(
    trials: pd.DataFrame,
    threshold: float = HIDDEN_REFERENCE_MIN,
    max_fraction: float = MAX_FAILED_FRACTION,
    screen: str = "trial_index",
) -> pd.DataFrame:
    """Per listener: screens, hidden-reference scores below ``threshold``, share, ``flagged``.

    A screen is one ``screen`` value (the trial index) of one participant; a screen with several
    hidden-reference rows counts once (its lowest score). Listeners without any hidden reference
    are listed with 0 screens and not flagged.

    >>> rows = pd.DataFrame({"participant": ["P1"] * 2 + ["P2"] * 2, "trial_index": [0, 1, 0, 1],
    ...                      "stimulus_role": ["hidden_reference"] * 4,
    ...                      "mushra_score": [100, 80, 95, 100]})
    >>> post_screening(rows)[["participant", "screens", "below", "flagged"]].to_dict("records")
    [{'participant': 'P1', 'screens': 2, 'below': 1, 'flagged': True}, \
{'participant': 'P2', 'screens': 2, 'below': 0, 'flagged': False}]
    """
    people = sorted(trials["participant"].astype(str).unique())
    hidden = trials[trials[ROLE] == HIDDEN_REFERENCE]
    per_screen = (
        hidden.assign(participant=hidden["participant"].astype(str))
        .groupby(["participant", screen])[SCORE]
        .min()
    )
    records = []
    for person in people:
        scores = per_screen.loc[person].to_numpy() if person in per_screen.index else np.array([])
        below = int((scores < threshold).sum())
        records.append(
            {
                "participant": person,
                "screens": int(len(scores)),
                "below": below,
                "share_below": below / len(scores) if len(scores) else float("nan"),
                "flagged": post_screening_flag(scores, threshold, max_fraction),
            }
        )
    return pd.DataFrame.from_records(
        records, columns=["participant", "screens", "below", "share_below", "flagged"]
    )


def apply_post_screening(
    trials: pd.DataFrame,
    threshold: float = HIDDEN_REFERENCE_MIN,
    max_fraction: float = MAX_FAILED_FRACTION,
) -> pd.DataFrame:
    """Rows of the listeners that pass BS.1534-3 post-screening.

    >>> rows = pd.DataFrame({"participant": ["P1", "P2"], "trial_index": [0, 0],
    ...                      "stimulus_role": ["hidden_reference"] * 2,
    ...                      "mushra_score": [50, 100]})
    >>> apply_post_screening(rows)["participant"].tolist()
    ['P2']
    """
    table = post_screening(trials, threshold, max_fraction)
    flagged = set(table.loc[table["flagged"], "participant"])
    return trials[~trials["participant"].astype(str).isin(flagged)]


def mushra_scores(
    trials: pd.DataFrame,
    by: str | Sequence[str] = ("stimulus_role", "condition"),
    post_screen: bool = True,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per condition (and role): n, listeners, mean, SD, t interval, median of the 0-100 scores.

    ``post_screen`` drops listeners flagged by :func:`post_screening_flag` first. The interval is
    BS.1534-3's: mean +- t(0.975, n - 1) s / sqrt(n) over all scores of the group.

    >>> rows = pd.DataFrame({"participant": ["P1", "P2", "P3", "P1", "P2", "P3"],
    ...                      "trial_index": [0] * 6,
    ...                      "stimulus_role": ["hidden_reference"] * 3 + ["condition"] * 3,
    ...                      "condition": ["reference"] * 3 + ["sys"] * 3,
    ...                      "mushra_score": [100, 100, 100, 40, 50, 60]})
    >>> table = mushra_scores(rows, by="condition")
    >>> table[["condition", "n", "mean", "sd", "median"]].to_dict("records")[1]
    {'condition': 'sys', 'n': 3, 'mean': 50.0, 'sd': 10.0, 'median': 50.0}
    >>> round(float(table.loc[1, "ci_low"]), 2), round(float(table.loc[1, "ci_high"]), 2)
    (25.16, 74.84)
    """
    if post_screen:
        trials = apply_post_screening(trials)
    keys = [by] if isinstance(by, str) else list(by)
    keys = [key for key in keys if key in trials.columns]
    records = []
    for key, rows in trials.groupby(keys, observed=True, sort=True):
        values = rows[SCORE].astype(float).dropna()
        mean, low, high = t_interval(values.to_numpy(), confidence)
        record = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        record.update(
            {
                "n": int(len(values)),
                "listeners": int(rows["participant"].nunique()),
                "mean": mean,
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "median": float(values.median()),
            }
        )
        records.append(record)
    return pd.DataFrame.from_records(records, columns=[*keys, *SCORE_COLUMNS])


def mushra_mixed_model(
    trials: pd.DataFrame,
    baseline: str = "reference",
    post_screen: bool = True,
    include_anchors: bool = False,
) -> pd.DataFrame:
    """Linear mixed model ``score ~ condition`` with listener random intercepts (MixedLM, REML).

    Documented choices: (1) listeners are the only random effect: each listener rates every
    condition of a screen, so condition contrasts are within-listener and a listener's general
    strictness is the main nuisance; segments are few and shared by all conditions, so a segment
    variance would be poorly estimated (as for the rating model in ``analysis.agreement``);
    (2) treatment contrasts against the hidden reference (condition ``baseline``), so every
    coefficient is "condition minus hidden reference" in score points; (3) anchors are left out
    by default (``include_anchors``): they are a check of the listeners' use of the scale, not a
    system under test. Post-screening (BS.1534-3) is applied first unless ``post_screen=False``.
    The ``listener_var`` and ``residual_var`` rows give the variance components.

    Worked example (statsmodels' MixedLM on a tiny balanced design where every listener rates
    the system exactly 30 points below the reference, plus listener offsets):

    >>> rows = pd.DataFrame({
    ...     "participant": [f"P{i}" for i in range(6) for _ in range(2)],
    ...     "trial_index": [0] * 12,
    ...     "stimulus_role": ["hidden_reference", "condition"] * 6,
    ...     "condition": ["reference", "sys"] * 6,
    ...     "mushra_score": [s for i in range(6) for s in (95 - i + (i % 2), 65 - i)]})
    >>> fit = mushra_mixed_model(rows, post_screen=False)
    >>> row = fit.set_index("term").loc["sys"]
    >>> round(float(row["estimate"]), 3)
    -30.5
    """
    import statsmodels.formula.api as smf

    if post_screen:
        trials = apply_post_screening(trials)
    if not include_anchors and ROLE in trials:
        trials = trials[trials[ROLE] != "anchor"]
    data = pd.DataFrame(
        {
            "score": trials[SCORE].astype(float).to_numpy(),
            "condition": trials["condition"].astype(str).to_numpy(),
            "participant": trials["participant"].astype(str).to_numpy(),
        }
    ).dropna()
    columns = ["term", "estimate", "se", "ci_low", "ci_high", "pval", "baseline", "listeners", "n"]
    levels = sorted(data["condition"].unique())
    if len(levels) < 2 or data["participant"].nunique() < 2:
        return pd.DataFrame(columns=columns)  # nothing to contrast (e.g. everyone screened out)
    if baseline not in levels:
        baseline = levels[0]
    model = smf.mixedlm(
        f"score ~ C(condition, Treatment({baseline!r}))", data, groups=data["participant"]
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(reml=True)
    ci = result.conf_int()
    records = []
    for name in result.fe_params.index:
        term = "intercept" if name == "Intercept" else name.split("[T.", 1)[-1].rstrip("]")
        records.append(
            {
                "term": term,
                "estimate": float(result.fe_params[name]),
                "se": float(result.bse_fe[name]),
                "ci_low": float(ci.loc[name, 0]),
                "ci_high": float(ci.loc[name, 1]),
                "pval": float(result.pvalues[name]),
            }
        )
    records.append({"term": "listener_var", "estimate": float(result.cov_re.iloc[0, 0])})
    records.append({"term": "residual_var", "estimate": float(result.scale)})
    table = pd.DataFrame.from_records(records, columns=columns)
    return table.assign(
        baseline=baseline, listeners=int(data["participant"].nunique()), n=len(data)
    )
