"""SightSound analysis: realism (ABX) and semantic agreement of generated music.

Modules: ``load`` (read the export; ``validation`` checks it against its contract,
``exclusions`` applies the exclusion rules, ``rows`` selects the rows a statistic reads), the
statistics (``realism``, ``agreement``, ``mos``, ``mushra``, ``preference``, ``power``),
``report`` (assembles the report from ``sections``, one module per trial type behind a
registry; ``page`` lays out report.html, ``figures`` holds the plotly conventions),
``objective`` (audio metrics over a stimulus set) and ``simulate`` (known-truth studies written in
the export format). See docs/analysis.md (Layout).
"""

from analysis import agreement, load, power, realism, report

__all__ = ["agreement", "load", "power", "realism", "report"]
