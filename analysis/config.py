"""Owns the report's analysis choices (:class:`ReportConfig`), shared by the report and its
sections; every one is written into report.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.exclusions import ExclusionConfig
from sightsound_stats.planning import LAPSE_SHARE


@dataclass
class ReportConfig:
    """Analysis choices; every one is written into report.json."""

    exclusions: ExclusionConfig = field(default_factory=ExclusionConfig)
    equivalence_margin: float = 0.1
    # The share of unflagged random responders an "equivalent" verdict must survive
    # (sightsound_stats.planning.LAPSE_SHARE, shared with the tables and the pre-registration;
    # 0 states equivalence as if every listener listened).
    lapse_share: float = LAPSE_SHARE
    alpha: float = 0.05
    unit: str = "source"
    n_boot: int = 2000
    n_permutations: int = 2000
    seed: int = 0
    # R processes for the mixed models (the realism GLMM and the two rating LMMs run side by
    # side). The models use every participant: no subsampling.
    r_cores: int = 2
