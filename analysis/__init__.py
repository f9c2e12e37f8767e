"""SightSound analysis: realism (ABX) and semantic agreement of generated music.

Modules: ``load`` (read/validate the export, exclusions), ``realism``, ``agreement``, ``power``,
``report``, ``objective`` (audio metrics over a stimulus set) and ``simulate`` (known-truth
studies written in the export format). See docs/analysis.md.
"""

from analysis import agreement, load, power, realism, report

__all__ = ["agreement", "load", "power", "realism", "report"]
