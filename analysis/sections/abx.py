"""Owns the report's realism section (``abx`` rows): the pooled descriptive tables, the realism
GLMM fitted in R and its verdicts, per-listener accuracy, the ABX figures and the realism lines
of "Who was analysed" and "Models fitted"."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from analysis import realism
from analysis.config import ReportConfig
from analysis.figures import error_bars
from analysis.rows import abx_trials
from analysis.sections import Context, Section, Tables, design_calibration, p_text, register


@register
class Realism(Section):
    name = "abx"
    order = 10
    trial_types = ("abx",)
    titles = {
        "realism_glmm": "Realism verdicts: logistic mixed model (lme4, all participants)",
        "realism": "Realism (ABX), pooled answers: descriptive only (answers treated as "
        "independent), after exclusions",
        "realism_no_exclusions": "Realism (ABX), pooled answers, descriptive, no exclusions",
    }
    display_columns = {
        "realism_glmm": ["condition", "accuracy", "ci_low", "ci_high", "df", "dprime",
                         "pval_holm", "tost_pval_holm", "marginal_accuracy", "exploratory"],
        "realism": ["condition", "n", "participants", "accuracy", "cp_low", "cp_high",
                    "pval_holm", "tost_pval_holm", "dprime", "share_above_chance"],
        "realism_no_exclusions": ["condition", "n", "participants", "accuracy", "cp_low",
                                  "cp_high", "pval_holm", "tost_pval_holm", "dprime"],
    }
    legend = {
        "accuracy": "proportion of correct ABX answers (mixed model: of a typical listener on "
        "a typical stimulus)",
        "dprime": "ABX sensitivity d' (differencing model) implied by the accuracy",
        "dprime_low": "d' at the lower end of the accuracy interval",
        "dprime_high": "d' at the upper end of the accuracy interval",
        "tost_pval_holm": "equivalence (TOST) p-value that accuracy lies within 0.5 +- margin "
        "x (1 - lapse share), i.e. within the margin even if that share of listeners answered "
        "at random (pooled tables: 0.5 +- margin); Holm-corrected",
        "equivalent_if_all_listened": "the equivalence verdict if every listener listened "
        "(TOST at 0.5 +- margin, Holm); the report states the lapse-robust one",
        "exploratory": "the design's verdicts are not calibrated (rule: docs/analysis.md, "
        "Calibration design by design): read them as exploratory, not at the nominal 5 %",
        "marginal_accuracy": "population-average accuracy over listeners and stimuli (point "
        "estimate; closer to 0.5 than a typical listener's)",
        "n": "answers",
        "cp_low": "exact Clopper-Pearson 95% interval, lower end (pooled answers)",
        "cp_high": "exact Clopper-Pearson 95% interval, upper end (pooled answers)",
        "share_above_chance": "share of listeners individually above chance (one-sided exact "
        "test)",
    }
    hidden_tables = ("participants",)

    def rows(self, responses: pd.DataFrame) -> pd.DataFrame:
        return abx_trials(responses)

    def variant_tables(self, rows: pd.DataFrame, config: ReportConfig) -> Tables:
        if not len(rows):
            return {}
        return {"realism": realism.summarize(rows, config.equivalence_margin, config.alpha)}

    def model_jobs(self, rows: pd.DataFrame, config: ReportConfig) -> list[tuple[Any, Any]]:
        from analysis import lme4

        if not len(rows):
            return []
        job, conditions = lme4.abx_job(rows, unit=config.unit)
        return [(job, ("abx", conditions, None))]

    def model_tables(
        self, fits: list[tuple[Any, Any]], rows: pd.DataFrame, config: ReportConfig
    ) -> Tables:
        """``realism_glmm``: the verdicts per condition (:func:`analysis.realism.glmm_verdicts`)."""
        tables: Tables = {}
        for (_, conditions, _), fit in fits:
            if fit is None:
                raise RuntimeError(
                    "no random-effect structure of the realism GLMM could be fitted")
            fit.extra["answers"] = len(rows)
            table = realism.glmm_verdicts(
                fit, conditions, config.unit, config.equivalence_margin, config.alpha,
                lapse_share=config.lapse_share,
            )
            status = design_calibration(rows, "realism", config.unit)
            table["exploratory"] = not status["calibrated"]
            table["calibration"] = status["reason"]
            table["inference"] = (
                "Wald t on the logit, df Welch-Satterthwaite capped at sources - 1; "
                f"equivalence robust to {config.lapse_share:.0%} random responders; "
                + ("calibrated by simulation for this design" if status["calibrated"]
                   else "exploratory: " + status["reason"].removeprefix("exploratory: ")))
            tables["realism_glmm"] = table
        return tables

    def tables(self, context: Context) -> Tables:
        rows = self.rows(context.kept)
        return {"participants": realism.participant_accuracy(rows)} if len(rows) else {}

    def figures(self, tables: Tables, config: ReportConfig) -> list[tuple[str, Any]]:
        import plotly.graph_objects as go

        figures = []
        if "realism_glmm" in tables:
            table = tables["realism_glmm"]
            figure = go.Figure(
                go.Bar(x=table["condition"], y=table["accuracy"],
                       error_y=error_bars(table, "accuracy"))
            )
            margin = config.equivalence_margin
            figure.add_hrect(
                y0=0.5 - margin, y1=0.5 + margin, opacity=0.15, line_width=0, fillcolor="green"
            )
            figure.add_hline(y=0.5, line_dash="dash")
            figure.update_layout(
                title="ABX accuracy of a typical listener (mixed model, 95% Wald CI; shaded: "
                "equivalence margin)",
                yaxis_range=[0, 1],
                yaxis_title="accuracy",
            )
            figures.append(("ABX accuracy", figure))
        if "participants" in tables:
            people = tables["participants"]
            figure = go.Figure(
                [
                    go.Box(x=rows["accuracy"], name=str(condition), boxpoints="all")
                    for condition, rows in people.groupby("condition")
                ]
            )
            figure.update_layout(title="Per-participant ABX accuracy", xaxis_title="accuracy")
            figures.append(("Listeners", figure))
        return figures

    def verdicts(self, tables: Tables, config: ReportConfig) -> list[dict[str, str]]:
        """"distinguishable" (one-sided Wald t test of the GLMM logit > 0, Holm) and
        "equivalent within +-margin" (Wald t TOST on the GLMM at the margin shrunk for the
        lapse share, Holm); prefixed "exploratory" for a design the calibration rule does not
        cover."""
        margin = config.equivalence_margin
        records = []
        glmm = tables.get("realism_glmm")
        for row in glmm.itertuples() if glmm is not None else ():
            prefix = ""
            if getattr(row, "exploratory", False):
                prefix = (f"EXPLORATORY, not at the nominal {config.alpha:.0%} (this design's "
                          "verdicts are not calibrated; why: Models fitted): ")
            numbers = (f"accuracy {row.accuracy:.2f}, 95 % CI {row.ci_low:.2f}-{row.ci_high:.2f}; "
                       f"d' {row.dprime:.2f} ({row.dprime_low:.2f} to {row.dprime_high:.2f})")
            if row.distinguishable and row.equivalent:
                text = (f"listeners could tell it from the real recording, but only slightly "
                        f"({numbers}; above chance, Holm p {p_text(row.pval_holm)}, yet within "
                        f"+/-{margin:.2f} of chance)")
            elif row.distinguishable:
                text = (f"listeners could tell it from the real recording ({numbers}; Holm "
                        f"p {p_text(row.pval_holm)})")
            elif row.equivalent:
                text = (f"listeners could not tell it from the real recording ({numbers}; "
                        f"equivalent within +/-{margin:.2f} even if up to "
                        f"{row.lapse_share:.0%} of listeners answered at random, Holm TOST p "
                        f"{p_text(row.tost_pval_holm)})")
            elif getattr(row, "equivalent_if_all_listened", False):
                text = (f"inconclusive: equivalent within +/-{margin:.2f} only if every "
                        f"listener listened, not if {row.lapse_share:.0%} answered at random "
                        f"({numbers}; Holm TOST p {p_text(row.tost_pval_holm)})")
            else:
                text = (f"inconclusive: neither shown distinguishable from the real recording "
                        f"nor shown equivalent within +/-{margin:.2f} ({numbers})")
            records.append({"question": "realism (ABX)", "condition": row.condition,
                            "verdict": f"{row.condition}: {prefix}{text}."})
        return records

    def analysed(self, tables: Tables) -> list[str]:
        glmm = tables.get("realism_glmm")
        if glmm is None or not len(glmm):
            return []
        return [f"Analysed in the realism model: {int(glmm['participants'].iloc[0])} "
                f"participants, {int(glmm['answers'].iloc[0])} ABX answers, "
                f"{int(glmm['units'].iloc[0])} stimulus units."]

    def models(self, tables: Tables) -> list[str]:
        glmm = tables.get("realism_glmm")
        if glmm is None or not len(glmm):
            return []
        row = glmm.iloc[0]
        return [
            f"Realism: <code>{html.escape(row['formula'])}</code>, binomial (logit), Laplace "
            "maximum likelihood (lme4::glmer), all participants; intervals and tests are Wald "
            "on the logit scale with t quantiles on Welch-Satterthwaite degrees of freedom "
            f"capped at the sources - 1 (here {row['df']:.0f}), the interval transformed to "
            "accuracy and d'; equivalence must hold within the margin shrunk by "
            f"{row['lapse_share']:.0%} (listeners who may answer at random unflagged). "
            f"Calibration: {html.escape(row['calibration'])}. Random-effect "
            f"structure: {html.escape(row['model'])}. Why: {html.escape(row['model_choice'])}."
        ]

