"""Owns the report's emotion-rating section (``emotion_rating`` rows): semantic agreement with
the reference, the rating LMMs fitted in R and their shifts, GEMS kappas, fit to the video, the
agreement figures and the rating lines of the verdicts, "Who was analysed" and "Models fitted"."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
from statsmodels.stats.multitest import multipletests

from analysis import agreement
from analysis.config import ReportConfig
from analysis.figures import error_bars
from analysis.rows import rating_trials
from analysis.sections import Context, Section, Tables, design_calibration, p_text, register


@register
class EmotionRating(Section):
    name = "emotion_rating"
    order = 20
    trial_types = ("emotion_rating",)
    titles = {
        "agreement": "Semantic agreement with the reference, after exclusions",
        "agreement_no_exclusions": "Semantic agreement, no exclusions",
        "rating_mixed_model": "Rating shifts against the reference: linear mixed model with "
        "listeners and stimuli as random effects (lme4 + lmerTest)",
        "gems_kappa": "GEMS words: Cohen's kappa with the reference per word",
        "fit": "Fit to video",
    }
    display_columns = {
        "rating_mixed_model": ["dimension", "condition", "coef", "ci_low", "ci_high", "df",
                               "pval", "pval_holm", "participants", "units"],
        "agreement": ["condition", "dimension", "units", "mean_diff", "pearson", "ccc", "icc2",
                      "alpha_interval", "gems_jaccard", "perm_pval_holm"],
        "agreement_no_exclusions": ["condition", "dimension", "units", "mean_diff", "pearson",
                                    "ccc", "icc2", "perm_pval_holm"],
    }
    legend = {
        "dimension": "rating scale (valence or arousal, 1-9)",
        "coef": "shift of the condition's mean rating from the reference (scale points)",
        "mean_diff": "mean over units of (condition - reference) unit means",
        "pearson": "Pearson correlation of unit means with the reference's",
        "ccc": "Lin's concordance correlation with the reference",
        "icc2": "ICC(2,1), absolute agreement with the reference",
        "alpha_interval": "Krippendorff's alpha (interval)",
        "gems_jaccard": "mean Jaccard index of the characteristic GEMS words",
        "perm_pval_holm": "permutation p-value, condition carries the reference's emotion "
        "better than the mismatched control (Holm)",
    }
    hidden_tables = ("unit_means",)

    def rows(self, responses: pd.DataFrame) -> pd.DataFrame:
        return rating_trials(responses)

    def variant_tables(self, rows: pd.DataFrame, config: ReportConfig) -> Tables:
        if not len(rows):
            return {}
        return {"agreement": agreement.summarize(
            rows,
            unit=config.unit,
            n_boot=config.n_boot,
            n_permutations=config.n_permutations,
            alpha=config.alpha,
            seed=config.seed,
        )}

    def model_jobs(self, rows: pd.DataFrame, config: ReportConfig) -> list[tuple[Any, Any]]:
        from analysis import lme4

        jobs = []
        for dimension in agreement.DIMENSIONS if len(rows) else ():
            job, conditions = lme4.rating_job(rows, dimension, unit=config.unit,
                                              reference=agreement.REFERENCE)
            jobs.append((job, ("rating", conditions, dimension)))
        return jobs

    def model_tables(
        self, fits: list[tuple[Any, Any]], rows: pd.DataFrame, config: ReportConfig
    ) -> Tables:
        """``rating_mixed_model``: shifts against the reference per dimension
        (:func:`analysis.agreement.rating_shifts`), Holm across conditions within a dimension."""
        shifts = []
        for (_, conditions, dimension), fit in fits:
            table = agreement.rating_shifts(fit, conditions, dimension, config.unit)
            table.insert(table.columns.get_loc("pval") + 1, "pval_holm",
                         multipletests(table["pval"], method="holm")[1])
            shifts.append(table)
        if not shifts:
            return {}
        shifts_table = pd.concat(shifts, ignore_index=True)
        # The ratings planning table was simulated for valence; every dimension is fitted by
        # the same model and ladder, so the same rule covers them.
        status = design_calibration(rows, "ratings", config.unit)
        shifts_table["exploratory"] = not status["calibrated"]
        shifts_table["calibration"] = status["reason"]
        return {"rating_mixed_model": shifts_table}

    def tables(self, context: Context) -> Tables:
        ratings = self.rows(context.kept)
        if not len(ratings):
            return {}
        unit = context.config.unit
        means = (
            ratings.groupby([unit, "condition"], observed=True)[list(agreement.DIMENSIONS)]
            .mean()
            .astype(float)
        )
        return {
            "gems_kappa": agreement.gems_kappa_table(ratings, unit).reset_index(),
            "fit": agreement.fit_ratings(ratings),
            "unit_means": means.reset_index(),
        }

    def figures(self, tables: Tables, config: ReportConfig) -> list[tuple[str, Any]]:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        figures = []
        if "unit_means" in tables:
            means = tables["unit_means"]
            reference = means[means["condition"] == agreement.REFERENCE].set_index(config.unit)
            figure = make_subplots(rows=1, cols=2, subplot_titles=list(agreement.DIMENSIONS))
            for col, dimension in enumerate(agreement.DIMENSIONS, start=1):
                for condition, rows in means[means["condition"] != agreement.REFERENCE].groupby(
                    "condition"
                ):
                    figure.add_trace(
                        go.Scatter(
                            x=reference[dimension].reindex(rows[config.unit]),
                            y=rows[dimension],
                            mode="markers",
                            name=str(condition),
                            legendgroup=str(condition),
                            showlegend=col == 1,
                            text=rows[config.unit],
                        ),
                        row=1,
                        col=col,
                    )
                figure.add_trace(
                    go.Scatter(
                        x=[1, 9],
                        y=[1, 9],
                        mode="lines",
                        showlegend=False,
                        line={"dash": "dash", "color": "grey"},
                    ),
                    row=1,
                    col=col,
                )
            figure.update_layout(
                title=f"Mean rating per {config.unit}: generated (y) vs reference (x)")
            figures.append(("Semantic agreement", figure))
        if "fit" in tables:
            fit = tables["fit"]
            figure = go.Figure(
                go.Bar(
                    x=fit["condition"],
                    y=fit["mean_fit"],
                    error_y=error_bars(fit, "mean_fit"),
                )
            )
            figure.update_layout(title="Fit to the video (1-7, 95% CI)", yaxis_range=[1, 7])
            figures.append(("Fit to video", figure))
        return figures

    def verdicts(self, tables: Tables, config: ReportConfig) -> list[dict[str, str]]:
        """Ratings: a shift against the reference (Satterthwaite t, Holm within a dimension).
        Semantic agreement: the permutation test against the mismatched control, when the study
        has one."""
        records = []
        shifts = tables.get("rating_mixed_model")
        for row in shifts.itertuples() if shifts is not None else ():
            prefix = ""
            if getattr(row, "exploratory", False):
                prefix = (f"EXPLORATORY, not at the nominal {config.alpha:.0%} (this design's "
                          "verdicts are not calibrated; why: Models fitted): ")
            numbers = (f"{row.coef:+.2f} points, 95 % CI {row.ci_low:+.2f} to "
                       f"{row.ci_high:+.2f}")
            if row.pval_holm < config.alpha:
                direction = "higher" if row.coef > 0 else "lower"
                text = (f"rated {direction} in {row.dimension} than the reference ({numbers}; "
                        f"Holm p {p_text(row.pval_holm)})")
            else:
                text = f"no shift in {row.dimension} shown against the reference ({numbers})"
            records.append({"question": f"rating shift ({row.dimension})",
                            "condition": row.condition,
                            "verdict": f"{row.condition}: {prefix}{text}."})
        agree = tables.get("agreement")
        if agree is not None and "perm_pval_holm" in agree:
            tested = agree.drop_duplicates("condition").dropna(subset=["perm_pval_holm"])
            for row in tested.itertuples():
                if row.perm_pval_holm < config.alpha:
                    text = ("carries the emotion of the real recording better than music of "
                            "another performance")
                else:
                    text = ("not shown to carry the emotion of the real recording better than "
                            "music of another performance")
                records.append({"question": "semantic agreement", "condition": row.condition,
                                "verdict": f"{row.condition}: {text} (permutation test, Holm p "
                                           f"{p_text(row.perm_pval_holm)}, {row.units} units)."})
        return records

    def analysed(self, tables: Tables) -> list[str]:
        shifts = tables.get("rating_mixed_model")
        if shifts is None or not len(shifts):
            return []
        return [f"Analysed in the rating models: {int(shifts['participants'].iloc[0])} "
                f"participants, {int(shifts['units'].iloc[0])} stimulus units."]

    def models(self, tables: Tables) -> list[str]:
        shifts = tables.get("rating_mixed_model")
        if shifts is None or not len(shifts):
            return []
        return [
            f"Ratings ({html.escape(row['dimension'])}): <code>"
            f"{html.escape(row['formula'])}</code>, {row['estimation']} (lme4::lmer), "
            "treatment contrasts against the reference; t tests with Satterthwaite df "
            f"(lmerTest). Random-effect structure: {html.escape(row['model'])}. Why: "
            f"{html.escape(row['model_choice'])}."
            + (f" Calibration: {html.escape(row['calibration'])}." if "calibration" in row
               else "")
            for _, row in shifts.drop_duplicates("dimension").iterrows()
        ]

