"""Owns the report's audio-video fit rating section (``fit_rating`` rows, 1-7 fit of a clip to
the muted performance video): MOS per condition and per clip."""

from __future__ import annotations

from analysis.sections import Context, Section, Tables, mos_tables, register


@register
class FitRating(Section):
    name = "fit_rating"
    order = 60
    trial_types = ("fit_rating",)
    titles = {
        "fit_rating": "Audio-video fit (1-7): MOS per condition",
        "fit_rating_clips": "Audio-video fit: MOS per clip",
    }

    def tables(self, context: Context) -> Tables:
        return mos_tables(context.kept, "fit_rating", "fit")
