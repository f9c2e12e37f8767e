"""Pairwise preference (2AFC) statistics: the Bradley-Terry model.

No 2AFC trial type exists in the study app yet, so the API works on plain tables:

* a square *wins matrix* (``wins[i, j]`` = times ``i`` was preferred to ``j``), as a DataFrame
  with the same labels on rows and columns or as a numpy array with ``labels``; or
* a *long table* with one row per choice and columns ``winner`` and ``loser`` (optionally a count
  column ``n``). :func:`choices_to_pairs` builds it from trial rows that hold the two conditions
  shown (``condition_a``, ``condition_b``) and the answer (``answer`` = ``A`` or ``B``).

The export's ``fit_preference`` rows (which of two clips fits the muted performance video better,
plus a strength of preference 1-3) have exactly those columns: :func:`preference_choices` turns
them into one row per choice (winner, loser, strength), :func:`pair_preferences` tests each pair
(exact binomial test) and :func:`bradley_terry` scales all conditions at once.

Reference: Bradley, R. A. & Terry, M. E. (1952) Biometrika 39, 324-345; the MM algorithm of
Hunter, D. R. (2004) MM algorithms for generalized Bradley-Terry models, Annals of Statistics 32,
384-406; standard errors from the Fisher information (Agresti 2002, Categorical Data Analysis,
2nd ed., section 10.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests


@dataclass
class BradleyTerryResult:
    """Bradley-Terry fit.

    ``table`` has one row per item: ``wins``, ``comparisons``, ``worth`` (normalized to sum 1),
    ``log_worth`` (centred: mean 0) with ``se``, and ``log_worth_ref``/``se_ref`` relative to the
    reference item (its value is 0, as in R's BradleyTerry2 and Agresti's tables).
    ``lr_test`` is the likelihood-ratio test of "all strengths equal" (``g2``, ``df``, ``pval``);
    ``deviance`` is the residual deviance against the saturated model (one probability per pair),
    with ``deviance_df`` degrees of freedom.
    """

    table: pd.DataFrame
    lr_test: dict[str, float]
    deviance: float
    deviance_df: int
    loglik: float
    iterations: int
    reference: str
    covariance: pd.DataFrame = field(repr=False)


def wins_matrix(
    pairs: pd.DataFrame, winner: str = "winner", loser: str = "loser", count: str | None = None
) -> pd.DataFrame:
    """Square wins matrix from a long table of choices (one row per choice, or counted rows).

    >>> pairs = pd.DataFrame({"winner": ["a", "a", "b"], "loser": ["b", "b", "a"]})
    >>> wins_matrix(pairs).to_numpy().tolist()
    [[0.0, 2.0], [1.0, 0.0]]
    """
    labels = sorted(set(pairs[winner].astype(str)) | set(pairs[loser].astype(str)))
    weights = pairs[count].astype(float) if count else pd.Series(1.0, index=pairs.index)
    table = (
        pd.DataFrame({"w": pairs[winner].astype(str), "l": pairs[loser].astype(str), "n": weights})
        .groupby(["w", "l"])["n"]
        .sum()
    )
    matrix = table.unstack(fill_value=0.0).reindex(index=labels, columns=labels, fill_value=0.0)
    matrix = matrix.astype(float)
    matrix.index.name = matrix.columns.name = None
    return matrix


def choices_to_pairs(
    trials: pd.DataFrame,
    option_a: str = "condition_a",
    option_b: str = "condition_b",
    answer: str = "answer",
) -> pd.DataFrame:
    """Long winner/loser table from 2AFC trial rows (``answer`` is ``A`` or ``B``).

    Rows without a valid answer are dropped.

    >>> rows = pd.DataFrame({"condition_a": ["x", "y"], "condition_b": ["y", "x"],
    ...                      "answer": ["A", "A"]})
    >>> choices_to_pairs(rows).to_dict("records")
    [{'winner': 'x', 'loser': 'y'}, {'winner': 'y', 'loser': 'x'}]
    """
    choice = trials[answer].astype(str).str.upper()
    valid = choice.isin(["A", "B"])
    a = trials.loc[valid, option_a].astype(str).to_numpy()
    b = trials.loc[valid, option_b].astype(str).to_numpy()
    first = (choice[valid] == "A").to_numpy()
    return pd.DataFrame({"winner": np.where(first, a, b), "loser": np.where(first, b, a)})


def preference_choices(
    trials: pd.DataFrame,
    option_a: str = "condition_a",
    option_b: str = "condition_b",
    answer: str = "answer",
    strength: str = "preference_strength",
    conditions: str = "conditions",
) -> pd.DataFrame:
    """One row per 2AFC choice: ``winner``, ``loser`` (the Bradley-Terry input, as from
    :func:`choices_to_pairs`), the two options in presentation order, ``strength`` and
    ``participant`` when the rows have them.

    Made for the export's ``fit_preference`` rows: ``condition_a``/``condition_b`` name the
    conditions in slots A and B and ``answer`` is ``A`` or ``B``. Where ``condition_a`` or
    ``condition_b`` is missing (column or value) they are read from ``conditions`` (``"a|b"``, in
    presentation order). Rows without a valid answer or without two conditions are dropped.

    >>> rows = pd.DataFrame({"participant": ["P1", "P2", "P3"],
    ...                      "conditions": ["x|y", "y|x", "x|y"], "answer": ["A", "A", "b"],
    ...                      "preference_strength": [3, 1, 2]})
    >>> preference_choices(rows)[["participant", "winner", "loser", "strength"]].to_dict(
    ...     "records")
    [{'participant': 'P1', 'winner': 'x', 'loser': 'y', 'strength': 3.0}, \
{'participant': 'P2', 'winner': 'y', 'loser': 'x', 'strength': 1.0}, \
{'participant': 'P3', 'winner': 'y', 'loser': 'x', 'strength': 2.0}]
    """
    columns = ["participant", "option_a", "option_b", "winner", "loser", "strength"]
    if answer not in trials.columns or not len(trials):
        return pd.DataFrame(columns=columns)
    split = (
        trials[conditions].astype("string").str.split("|", n=1, expand=True)
        if conditions in trials.columns
        else pd.DataFrame(index=trials.index)
    )

    def slot(column: str, position: int) -> pd.Series:
        named = (
            trials[column].astype("string")
            if column in trials.columns
            else pd.Series(pd.NA, index=trials.index, dtype="string")
        )
        if position in split.columns:
            named = named.fillna(split[position].astype("string").str.strip())
        return named.replace("", pd.NA)

    table = pd.DataFrame(
        {
            "participant": trials["participant"].astype("string")
            if "participant" in trials.columns
            else pd.NA,
            "option_a": slot(option_a, 0),
            "option_b": slot(option_b, 1),
            "answer": trials[answer].astype("string").str.strip().str.upper(),
            "strength": pd.to_numeric(trials[strength], errors="coerce").astype(float)
            if strength in trials.columns
            else np.nan,
        },
        index=trials.index,
    )
    valid = table["answer"].isin(["A", "B"]).fillna(False)
    valid &= table["option_a"].notna() & table["option_b"].notna()
    table = table[valid.astype(bool)]
    pairs = choices_to_pairs(table, "option_a", "option_b", "answer")
    table = table.assign(winner=pairs["winner"].to_numpy(), loser=pairs["loser"].to_numpy())
    return table[columns].reset_index(drop=True)


def pair_preferences(
    choices: pd.DataFrame,
    winner: str = "winner",
    loser: str = "loser",
    strength: str = "strength",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per pair of conditions: how often the first-named one was preferred, with an exact test.

    ``choices`` has one row per choice (``winner``, ``loser``, optionally ``strength``), e.g.
    from :func:`preference_choices`. Each unordered pair is named ``first`` / ``second`` in
    alphabetical order. Columns: ``n`` choices, ``first_wins``, ``share_first`` with its exact
    Clopper-Pearson interval (``ci_low``, ``ci_high``), ``pval`` of the exact two-sided binomial
    test of "no preference" (share 0.5; ``scipy.stats.binomtest``), ``pval_holm`` (Holm across
    the pairs), and the mean strength of preference over all choices (``mean_strength``) and
    over those won by each side (``mean_strength_first``, ``mean_strength_second``).

    Worked example: x is preferred to y in 8 of 10 choices. Two-sided exact p =
    P(K >= 8) + P(K <= 2) = 2 (45 + 10 + 1) / 1024 = 0.109375:

    >>> choices = pd.DataFrame({"winner": ["x"] * 8 + ["y"] * 2, "loser": ["y"] * 8 + ["x"] * 2,
    ...                         "strength": [2] * 8 + [1] * 2})
    >>> row = pair_preferences(choices).iloc[0]
    >>> row["first"], row["second"], int(row["n"]), float(row["share_first"]), float(row["pval"])
    ('x', 'y', 10, 0.8, 0.109375)
    >>> float(row["mean_strength"]), float(row["mean_strength_first"])
    (1.8, 2.0)

    Reference: Clopper & Pearson (1934) Biometrika 26, 404-413; Holm (1979) Scand J Statist 6,
    65-70; David, H. A. (1988) The Method of Paired Comparisons, 2nd ed., ch. 1.
    """
    columns = [
        "first",
        "second",
        "n",
        "first_wins",
        "share_first",
        "ci_low",
        "ci_high",
        "pval",
        "pval_holm",
        "mean_strength",
        "mean_strength_first",
        "mean_strength_second",
    ]
    if not len(choices):
        return pd.DataFrame(columns=columns)
    won = choices[winner].astype(str).to_numpy()
    lost = choices[loser].astype(str).to_numpy()
    level = (
        pd.to_numeric(choices[strength], errors="coerce").astype(float).to_numpy()
        if strength in choices.columns
        else np.full(len(choices), np.nan)
    )
    first = np.minimum(won, lost)
    second = np.maximum(won, lost)
    records = []
    for a, b in sorted({(x, y) for x, y in zip(first, second, strict=True) if x != y}):
        rows = (first == a) & (second == b)
        first_won = rows & (won == a)
        n, k = int(rows.sum()), int(first_won.sum())
        test = stats.binomtest(k, n, 0.5)
        interval = test.proportion_ci(confidence_level=confidence, method="exact")
        records.append(
            {
                "first": a,
                "second": b,
                "n": n,
                "first_wins": k,
                "share_first": k / n,
                "ci_low": float(interval.low),
                "ci_high": float(interval.high),
                "pval": float(test.pvalue),
                "mean_strength": _nanmean(level[rows]),
                "mean_strength_first": _nanmean(level[first_won]),
                "mean_strength_second": _nanmean(level[rows & ~first_won]),
            }
        )
    table = pd.DataFrame.from_records(records)
    if len(table):
        table["pval_holm"] = multipletests(table["pval"].to_numpy(), method="holm")[1]
    return table.reindex(columns=columns)


def bradley_terry(
    wins: pd.DataFrame | np.ndarray,
    labels: list[str] | None = None,
    reference: str | None = None,
    tol: float = 1e-12,
    max_iter: int = 100_000,
) -> BradleyTerryResult:
    """Maximum-likelihood Bradley-Terry strengths, P(i beats j) = p_i / (p_i + p_j).

    ``wins`` is a square wins matrix (``wins[i, j]`` = times i preferred to j) or a long table
    with ``winner`` and ``loser`` columns (and optionally ``n``). Fitted by Hunter's (2004) MM
    iteration ``p_i <- W_i / sum_j n_ij / (p_i + p_j)``, which increases the likelihood at every
    step and converges whenever the MLE exists (every item's comparison graph strongly
    connected: each item both won and lost against the rest; otherwise a ``ValueError``).
    Standard errors come from the inverse Fisher information: for ``log_worth_ref`` the
    information with the reference row and column removed; for the centred ``log_worth`` its
    Moore-Penrose inverse. ``reference`` defaults to the first label.

    Worked example: a beats b 3 times of 4, so P(a beats b) = 0.75 and the log-odds
    log(3) = 1.0986 is the strength difference:

    >>> fit = bradley_terry(pd.DataFrame([[0, 3], [1, 0]], index=["a", "b"], columns=["a", "b"]),
    ...                     reference="b")
    >>> row = fit.table.loc["a"]
    >>> round(float(row["log_worth_ref"]), 4), round(float(row["se_ref"]), 4)
    (1.0986, 1.1547)
    >>> round(fit.lr_test["g2"], 4), fit.lr_test["df"]
    (1.0465, 1)

    (SE = sqrt(1 / (n p (1 - p))) = sqrt(1 / (4 * 0.75 * 0.25)); G2 = 2 [3 log 0.75 +
    log 0.25 - 4 log 0.5].)
    """
    matrix = _as_matrix(wins, labels)
    names = [str(label) for label in matrix.index]
    w = matrix.to_numpy(dtype=float)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
        raise ValueError("wins must be a square matrix of at least two items")
    if (w < 0).any() or (np.diag(w) != 0).any():
        raise ValueError("wins must be non-negative with a zero diagonal")
    k = len(names)
    n = w + w.T
    _check_connected(w, names)
    total_wins = w.sum(axis=1)
    p = np.ones(k)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported below)
        denominator = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = total_wins / denominator
        new /= new.sum()
        change = np.max(np.abs(np.log(new) - np.log(p)))
        p = new
        if change < tol:
            break
    log_worth = np.log(p)
    log_worth -= log_worth.mean()
    reference = names[0] if reference is None else str(reference)
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not among the items {names}")
    r = names.index(reference)

    prob = 1.0 / (1.0 + np.exp(-(log_worth[:, None] - log_worth[None, :])))
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    information = -(n * prob * prob.T)
    np.fill_diagonal(information, 0.0)
    np.fill_diagonal(information, -information.sum(axis=1))
    covariance = np.linalg.pinv(information)
    keep = [i for i in range(k) if i != r]
    cov_ref = np.zeros((k, k))
    cov_ref[np.ix_(keep, keep)] = np.linalg.inv(information[np.ix_(keep, keep)])

    with np.errstate(divide="ignore", invalid="ignore"):
        loglik = float(np.sum(np.where(w > 0, w * np.log(prob), 0.0)))
        saturated = np.where(n > 0, w / n, 0.0)
        loglik_saturated = float(np.sum(np.where(w > 0, w * np.log(saturated), 0.0)))
    loglik_equal = float(-np.log(2.0) * n[upper].sum())
    g2 = 2.0 * (loglik - loglik_equal)
    pairs_compared = int(((n > 0) & upper).sum())
    table = pd.DataFrame(
        {
            "wins": total_wins,
            "comparisons": n.sum(axis=1),
            "worth": p / p.sum(),
            "log_worth": log_worth,
            "se": np.sqrt(np.clip(np.diag(covariance), 0, None)),
            "log_worth_ref": log_worth - log_worth[r],
            "se_ref": np.sqrt(np.diag(cov_ref)),
        },
        index=pd.Index(names, name="item"),
    )
    return BradleyTerryResult(
        table=table,
        lr_test={"g2": g2, "df": k - 1, "pval": float(stats.chi2.sf(g2, k - 1))},
        deviance=2.0 * (loglik_saturated - loglik),
        deviance_df=pairs_compared - (k - 1),
        loglik=loglik,
        iterations=iterations,
        reference=reference,
        covariance=pd.DataFrame(covariance, index=names, columns=names),
    )


def preference_table(fit: BradleyTerryResult, confidence: float = 0.95) -> pd.DataFrame:
    """The fit as one flat table for the report: items by strength, plus the LR test columns.

    Adds Wald intervals ``estimate -+ z se`` for the centred log-worth (``ci_low``,
    ``ci_high``) and for the log-worth relative to the reference (``ci_low_ref``,
    ``ci_high_ref``; the reference itself is 0 with SE 0).

    >>> fit = bradley_terry(pd.DataFrame([[0, 3], [1, 0]], index=["a", "b"], columns=["a", "b"]))
    >>> table = preference_table(fit).round(4)
    >>> table[["item", "log_worth", "se", "ci_low", "ci_high"]].to_dict("records")[0]
    {'item': 'a', 'log_worth': 0.5493, 'se': 0.5774, 'ci_low': -0.5823, 'ci_high': 1.6809}

    (log(3) / 2 = 0.5493; SE = 1.1547 / 2; z(0.975) = 1.96.)
    """
    table = fit.table.sort_values("log_worth", ascending=False).reset_index()
    z = stats.norm.ppf(0.5 + confidence / 2)
    table = table.assign(
        ci_low=table["log_worth"] - z * table["se"],
        ci_high=table["log_worth"] + z * table["se"],
        ci_low_ref=table["log_worth_ref"] - z * table["se_ref"],
        ci_high_ref=table["log_worth_ref"] + z * table["se_ref"],
    )
    return table.assign(
        reference=fit.reference,
        lr_g2=fit.lr_test["g2"],
        lr_df=fit.lr_test["df"],
        lr_pval=fit.lr_test["pval"],
    )


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _as_matrix(wins: pd.DataFrame | np.ndarray, labels: list[str] | None) -> pd.DataFrame:
    if isinstance(wins, pd.DataFrame) and {"winner", "loser"} <= set(wins.columns):
        matrix = wins_matrix(wins, count="n" if "n" in wins.columns else None)
        if labels is not None:
            matrix = matrix.reindex(index=labels, columns=labels, fill_value=0.0)
        return matrix
    if isinstance(wins, pd.DataFrame):
        if list(map(str, wins.index)) != list(map(str, wins.columns)):
            raise ValueError("a wins matrix needs the same labels on rows and columns")
        return wins.astype(float)
    array = np.asarray(wins, dtype=float)
    names = labels if labels is not None else [str(i) for i in range(array.shape[0])]
    return pd.DataFrame(array, index=names, columns=names)


def _check_connected(w: np.ndarray, names: list[str]) -> None:
    """The MLE exists iff the directed "i beat j" graph is strongly connected (Hunter 2004)."""
    k = len(names)
    beat = w > 0

    def reach(adjacency: np.ndarray) -> np.ndarray:
        seen = np.zeros(k, dtype=bool)
        seen[0] = True
        frontier = [0]
        while frontier:
            node = frontier.pop()
            for other in np.flatnonzero(adjacency[node] & ~seen):
                seen[other] = True
                frontier.append(int(other))
        return seen

    if not (reach(beat).all() and reach(beat.T).all()):
        raise ValueError(
            "no finite Bradley-Terry fit: some items never win or never lose "
            "against the rest (the comparison graph is not strongly connected)"
        )
