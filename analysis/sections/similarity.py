"""Owns the report's similarity section (``similarity`` rows, 1-7 similarity to the labelled
reference): MOS per condition and per clip."""

from __future__ import annotations

from analysis.sections import Context, Section, Tables, mos_tables, register


@register
class Similarity(Section):
    name = "similarity"
    order = 50
    trial_types = ("similarity",)
    titles = {
        "similarity": "Similarity to the reference (1-7): MOS per condition",
        "similarity_clips": "Similarity to the reference: MOS per clip",
    }

    def tables(self, context: Context) -> Tables:
        return mos_tables(context.kept, "similarity", "similarity")
