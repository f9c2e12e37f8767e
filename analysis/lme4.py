"""Mixed models fitted by R's lme4 in a subprocess: data out as CSV, results back as JSON.

Why R: statsmodels has no maximum-likelihood GLMM with crossed random effects (its variational
Bayes GLMM gave standard errors 2.5-4x too small, issue 15), and its crossed linear mixed model
takes minutes on 1,000 listeners. lme4 (Bates, Maechler, Bolker & Walker 2015, J Stat Softw
67(1)) fits both in seconds. No R object crosses the boundary: :func:`run_jobs` writes each data
set as a CSV with plain codes, runs ``Rscript analysis/r/fit_mixed.R`` once for all jobs, and
reads one JSON file back.

Random-effect structures are tried in the order of a *ladder* (``ABX_LADDER``,
``RATING_LADDER``): the first fit that converges and is not singular is used. A singular
linear mixed model is refitted with a second optimiser first (bobyqa; Nelder-Mead if bobyqa
fails), and the fit with the lower criterion is kept (``MixedFit.optimizer``). A singular fit
names its degenerate terms (a variance of zero or a correlation of +-1); the same structure
without them is tried next, and a later structure is skipped only when it would reach the same
singular optimum (it keeps a degenerate term and drops nothing else). If nothing qualifies,
the last fit that converged is used and the result says so (``MixedFit.reason``).
References: Barr, Levy, Scheepers & Tily (2013), J Mem Lang 68:255 (keep it maximal); Bates,
Kliegl, Vasishth & Baayen (2015), arXiv:1506.04967, and Matuschek et al. (2017), J Mem Lang
94:305 (reduce what the data cannot support).

Missing R, lme4, lmerTest or jsonlite is an error naming the Debian packages; there is no
fallback to another fitting method.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sightsound_stats.ladders import ABX_LADDER, RATING_LADDER, Ladder

DEBIAN_PACKAGES = "r-base-core r-cran-lme4 r-cran-lmertest r-cran-glmmtmb r-cran-jsonlite"
SCRIPT = Path(__file__).with_name("r") / "fit_mixed.R"

# The ladders (ABX_LADDER, RATING_LADDER) live in sightsound_stats, which the app's
# preregistration states them from.


class RUnavailableError(RuntimeError):
    """Rscript or one of the R packages the mixed models need is missing."""


@dataclass
class Job:
    """One model family fitted to one data set (or to each part of it, split by ``by``).

    ``data`` has columns ``participant``, ``unit``, ``condition`` and the response (and ``n``,
    the weights, for an aggregated binomial response); ``levels`` orders the conditions (the
    first is the reference level of treatment contrasts).
    """

    data: pd.DataFrame
    family: str  # "binomial" (glmer, Laplace ML) or "gaussian" (lmerTest::lmer)
    response: str
    fixed: str
    ladder: Ladder
    levels: list[str]
    reml: bool = True
    by: str | None = None


@dataclass
class MixedFit:
    """What came back from R for one fit."""

    formula: str
    model: str
    reason: str
    attempts: list[dict]
    coefficients: pd.DataFrame  # term, estimate, se, df (NaN for GLMMs), statistic
    variance: pd.DataFrame  # grp, var1, var2, vcov, sdcor (as.data.frame(VarCorr(fit)))
    nobs: int
    groups: dict[str, int]
    loglik: float
    reml: bool
    singular: bool
    converged: bool
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    # The optimiser of the fit used: nloptwrap, or a second one that reached a lower
    # criterion after a singular fit (fit_mixed.R, check_singular_fit).
    optimizer: str = "nloptwrap"


MISSING_PACKAGES_STATUS = 3  # fit_mixed.R's exit status when lme4, lmerTest or jsonlite is missing


def rscript() -> str:
    """The path of Rscript; :class:`RUnavailableError` naming the Debian packages if none."""
    found = shutil.which("Rscript")
    if found is None:
        raise RUnavailableError(
            "the mixed models need R: Rscript was not found on PATH. Install the Debian "
            f"packages: apt-get install {DEBIAN_PACKAGES}"
        )
    return found


def run_jobs(jobs: list[Job], cores: int = 1, timeout: float = 3600) -> list[dict]:
    """Fit every job in one Rscript run; return per job ``{key: MixedFit | None}``.

    ``key`` is the value of the job's ``by`` column, or ``None`` for an unsplit job. A ``None``
    fit means no structure of the ladder could be fitted (``fit_failures`` says why).
    """
    return start_jobs(jobs, cores).result(timeout)


class PendingFits:
    """An Rscript run started by :func:`start_jobs`; :meth:`result` waits for it.

    The report starts R first and computes its other tables while the models fit, so the
    Python statistics and R's start-up (about a second to load lme4 and lmerTest) cost no wall
    time of their own. :meth:`cancel` (or leaving a ``with`` block) stops R and removes the
    scratch folder; :meth:`result` does both itself.
    """

    def __init__(self, jobs: list[Job], cores: int) -> None:
        executable = rscript()
        self._scratch = tempfile.TemporaryDirectory(prefix="sightsound-lme4-")
        folder = Path(self._scratch.name)
        spec = {"cores": int(cores), "jobs": []}
        for index, job in enumerate(jobs):
            path = folder / f"job{index}.csv"
            job.data.to_csv(path, index=False)
            spec["jobs"].append({
                "id": str(index), "data": str(path), "family": job.family,
                "response": job.response, "fixed": job.fixed, "reml": job.reml, "by": job.by,
                "levels": list(job.levels),
                "ladder": [{"name": name, "terms": list(terms)} for name, terms in job.ladder],
            })
        (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        self._out = folder / "result.json"
        # stderr to a file, not a pipe: nobody reads a pipe while Python works, and a full
        # pipe would stall R. A session of its own, so that cancel() stops R's forked
        # workers (parallel::mclapply) with it.
        self._stderr = open(folder / "stderr.txt", "w+", encoding="utf-8")  # noqa: SIM115
        self._started = time.perf_counter()
        self._process = subprocess.Popen(
            [executable, str(SCRIPT), str(folder / "spec.json"), str(self._out)],
            stdout=subprocess.DEVNULL, stderr=self._stderr, text=True, start_new_session=True,
        )
        # Units and participants in each data set (or part): a model without a unit term
        # reports no unit count of its own, yet every unit was analysed.
        self._counts = [_level_counts(job) for job in jobs]

    def result(self, timeout: float = 3600) -> list[dict]:
        """Wait for R and read its fits (see :func:`run_jobs`)."""
        try:
            returncode = self._process.wait(timeout=timeout)
            seconds = time.perf_counter() - self._started
            if returncode == MISSING_PACKAGES_STATUS:
                self._stderr.seek(0)
                lines = self._stderr.read().strip().splitlines()
                raise RUnavailableError(
                    "the mixed models need the R packages lme4, lmerTest and jsonlite; missing: "
                    f"{lines[-1] if lines else '?'}. Install the Debian packages: apt-get "
                    f"install {DEBIAN_PACKAGES}"
                )
            if returncode != 0 or not self._out.exists():
                self._stderr.seek(0)
                raise RuntimeError(
                    f"Rscript {SCRIPT.name} failed:\n{self._stderr.read()[-3000:]}")
            result = json.loads(self._out.read_text(encoding="utf-8"))
        finally:
            self.cancel()
        fits = [
            {fit["key"]: _mixed_fit(fit, seconds) for fit in job["fits"]}
            for job in result["jobs"]
        ]
        for job_fits, counts in zip(fits, self._counts, strict=True):
            for key, fit in job_fits.items():
                if fit is not None:
                    fit.extra.update(counts.get(None if key is None else str(key), {}))
        return fits

    def cancel(self) -> None:
        """Stop R if it still runs and remove the scratch folder (idempotent)."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._stderr.close()
        self._scratch.cleanup()

    def __enter__(self) -> PendingFits:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _level_counts(job: Job) -> dict[str | None, dict[str, Any]]:
    """``{part: {"data_participants": P, "data_units": U, "data_units_by_condition": {code:
    U_c}}}``; part ``None`` for an unsplit job. ``U_c``, the stimulus units a condition was
    heard on, bounds that condition's degrees of freedom (:func:`analysis.realism.component_df`).
    """
    columns = ["participant", "unit", "condition"]
    parts = ({None: job.data[columns]} if job.by is None else
             {str(key): part for key, part in job.data.groupby(job.by)[columns]})
    return {key: {"data_participants": int(part["participant"].nunique()),
                  "data_units": int(part["unit"].nunique()),
                  "data_units_by_condition": {str(code): int(n) for code, n in
                                              part.groupby("condition", observed=True)["unit"]
                                              .nunique().items()}}
            for key, part in parts.items()}


def start_jobs(jobs: list[Job], cores: int = 1) -> PendingFits:
    """Start fitting ``jobs`` in one Rscript run in the background; see :class:`PendingFits`."""
    return PendingFits(jobs, cores)


def _mixed_fit(raw: dict, seconds: float) -> MixedFit | None:
    attempts = raw["attempts"]
    if raw.get("chosen") is None:
        return None
    chosen = attempts[raw["chosen"] - 1]
    summary = raw["summary"]
    coefficients = pd.DataFrame({
        "term": _as_list(summary["term"]),
        "estimate": _floats(summary["estimate"]),
        "se": _floats(summary["se"]),
        "df": _floats(summary["df"]),
        "statistic": _floats(summary["statistic"]),
    })
    varcorr = summary["varcorr"]
    variance = pd.DataFrame({key: _as_list(varcorr[key]) for key in ("grp", "var1", "var2")})
    variance["vcov"] = _floats(varcorr["vcov"])
    variance["sdcor"] = _floats(varcorr["sdcor"])
    return MixedFit(
        formula=chosen["formula"],
        model=chosen["name"],
        reason=describe_attempts(attempts, raw["chosen"] - 1),
        attempts=attempts,
        coefficients=coefficients,
        variance=variance,
        nobs=int(summary["nobs"]),
        groups={k: int(v) for k, v in summary["ngrps"].items()},
        loglik=float(summary["loglik"]),
        reml=bool(summary["reml"]),
        singular=bool(chosen["singular"]),
        converged=bool(chosen["converged"]),
        seconds=seconds,
        optimizer=str(chosen.get("optimizer") or "nloptwrap"),
    )


def describe_attempts(attempts: list[dict], chosen: int) -> str:
    """One sentence per attempt, ending with the one used, e.g. ``"maximal: singular (...)"``.

    >>> describe_attempts([
    ...     {"name": "maximal", "status": "singular", "degenerate": ["(1 | unit)"], "notes": []},
    ...     {"name": "simple", "status": "accepted", "degenerate": [], "notes": []}], 1)
    'maximal: singular, degenerate (1 | unit); simple: accepted'
    """
    parts = []
    for index, attempt in enumerate(attempts):
        text = f"{attempt['name']}: {attempt['status']}"
        if attempt.get("degenerate"):
            text += ", degenerate " + ", ".join(attempt["degenerate"])
        if attempt.get("started_from_previous"):
            text += " (started from the previous fit's estimates)"
        if attempt.get("optimizers_tried"):
            text += f" ({optimizer_check(attempt)})"
        elif index == chosen and attempt.get("optimizer"):
            text += f" (optimiser {attempt['optimizer']})"
        if attempt["status"] in ("not converged", "error", "skipped") and attempt.get("notes"):
            text += f" ({'; '.join(str(n) for n in attempt['notes'])[:200]})"
        if index == chosen and attempt["status"] != "accepted":
            text += " -> used anyway: no structure converged without a singular fit"
        parts.append(text)
    return "; ".join(parts)


def optimizer_check(attempt: dict) -> str:
    """What the second optimiser found after a singular fit, and which fit was kept.

    >>> optimizer_check({"optimizer": "bobyqa", "optimizers_tried": [
    ...     {"optimizer": "nloptwrap", "converged": True, "singular": True,
    ...      "criterion": 56538.320},
    ...     {"optimizer": "bobyqa", "converged": True, "singular": False,
    ...      "criterion": 56537.932}]})
    'criterion: nloptwrap 56538.320 singular, bobyqa 56537.932; kept the bobyqa fit'

    A structure nested in one whose singular optimum the second optimiser confirmed, reaching
    that optimum, is not refitted (fit_mixed.R, covered_by):

    >>> optimizer_check({"optimizer": "nloptwrap", "optimizers_tried": [
    ...     {"optimizer": "nloptwrap", "converged": True, "singular": True,
    ...      "criterion": 165867.0353, "covered_by": "y ~ a + (1 | b)"}]})
    'criterion 165867.035: the singular optimum confirmed for y ~ a + (1 | b), not refitted'
    """
    tried = attempt["optimizers_tried"]
    if len(tried) == 1 and tried[0].get("covered_by"):
        return (f"criterion {float(tried[0]['criterion']):.3f}: the singular optimum confirmed "
                f"for {tried[0]['covered_by']}, not refitted")
    found = []
    for check in tried:
        if not check.get("converged") or check.get("criterion") is None:
            found.append(f"{check['optimizer']} did not converge")
        else:
            state = " singular" if check.get("singular") else ""
            found.append(f"{check['optimizer']} {float(check['criterion']):.3f}{state}")
    return f"criterion: {', '.join(found)}; kept the {attempt['optimizer']} fit"


def _floats(values: list | float | None) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in _as_list(values)], dtype=float)


def _as_list(value: object) -> list:
    # jsonlite's auto_unbox writes a length-1 vector as a scalar.
    return value if isinstance(value, list) else [value]


def code_levels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes for a grouping column and the names they stand for (CSV-safe)."""
    codes, names = pd.factorize(values.astype(str), sort=True)
    return codes, [str(n) for n in names]


def abx_job(
    abx: pd.DataFrame,
    unit: str = "source",
    conditions: list[str] | None = None,
    by: str | None = None,
    ladder: Ladder = ABX_LADDER,
) -> tuple[Job, list[str]]:
    """The realism GLMM ``correct ~ 0 + condition + (random part)`` as a :class:`Job`.

    Answers are aggregated to binomial cells (participant x unit x condition); the likelihood
    is that of one Bernoulli row per answer up to a constant, so estimates are the same.
    Returns the job and the condition names in the order of the codes ``c0, c1, ...``.
    """
    conditions = conditions or sorted(abx["condition"].astype(str).unique())
    code = {name: f"c{i}" for i, name in enumerate(conditions)}
    keys = ["participant", "unit", "condition"] + ([by] if by else [])
    frame = pd.DataFrame({
        "participant": code_levels(abx["participant"])[0],
        "unit": code_levels(abx[unit])[0],
        "condition": abx["condition"].astype(str).map(code).to_numpy(),
        "correct": abx["correct"].astype(float).to_numpy(),
    })
    if by:
        frame[by] = abx[by].to_numpy()
    cells = frame.groupby(keys, sort=True)["correct"].agg(k="sum", n="size").reset_index()
    cells["y"] = cells["k"] / cells["n"]
    job = Job(data=cells.drop(columns="k"), family="binomial", response="y",
              fixed="0 + condition", ladder=ladder, levels=[code[c] for c in conditions],
              reml=False, by=by)
    return job, conditions


def rating_job(
    ratings: pd.DataFrame,
    dimension: str,
    unit: str = "source",
    reference: str = "reference",
    by: str | None = None,
    reml: bool = True,
    ladder: Ladder = RATING_LADDER,
) -> tuple[Job, list[str]]:
    """The rating LMM ``rating ~ condition + (random part)``, reference as baseline level."""
    rows = ratings.dropna(subset=[dimension])
    names = sorted(c for c in rows["condition"].astype(str).unique() if c != reference)
    conditions = [reference, *names]
    code = {name: f"c{i}" for i, name in enumerate(conditions)}
    frame = pd.DataFrame({
        "participant": code_levels(rows["participant"])[0],
        "unit": code_levels(rows[unit])[0],
        "condition": rows["condition"].astype(str).map(code).to_numpy(),
        "y": rows[dimension].astype(float).to_numpy(),
    })
    if by:
        frame[by] = rows[by].to_numpy()
    job = Job(data=frame, family="gaussian", response="y", fixed="condition", ladder=ladder,
              levels=[code[c] for c in conditions], reml=reml, by=by)
    return job, conditions


def term_condition(term: str, conditions: list[str]) -> str | None:
    """Condition name of an lme4 fixed-effect term such as ``conditionc2`` (None otherwise).

    >>> term_condition("conditionc1", ["reference", "sys_A"]), term_condition("(Intercept)", [])
    ('sys_A', None)
    """
    if not term.startswith("conditionc"):
        return None
    return conditions[int(term[len("conditionc"):])]


def formula_text(fit: MixedFit, response: str, unit: str) -> str:
    """The fitted formula with the real names of the response and the stimulus unit.

    Codes are used inside R (``y``, ``unit``); a reader wants ``correct`` and ``source``.
    """
    text = fit.formula.replace("unit", unit)
    return text.replace("y ~", f"{response} ~", 1)
