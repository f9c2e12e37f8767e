"""Owns the random-effect ladders of the report's mixed models: the structures the realism
GLMM and the rating LMMs try, top first (analysis/lme4.py fits them; the app's preregistration
states them in the plan, so the plan and the report cannot drift apart).

Each rung is (name, random-effect terms). ``unit`` is the stimulus grouping (source, or
segment/clip); ``unit:condition`` is one generated clip per unit and condition, the stimulus
variance a condition effect has to generalise over (Judd, Westfall & Kenny 2012, JPSP 103:54).
"""

from __future__ import annotations

Ladder = tuple[tuple[str, tuple[str, ...]], ...]

ABX_LADDER: Ladder = (
    ("maximal: correlated by-participant condition effects",
     ("(0 + condition | participant)", "(1 | unit)", "(1 | unit:condition)")),
    ("uncorrelated by-participant condition effects",
     ("(1 | participant)", "(1 | participant:condition)", "(1 | unit)",
      "(1 | unit:condition)")),
    ("correlated by-participant effects, no clip term",
     ("(0 + condition | participant)", "(1 | unit)")),
    ("uncorrelated by-participant effects, no clip term",
     ("(1 | participant)", "(1 | participant:condition)", "(1 | unit)")),
    ("intercepts for participant, unit and clip",
     ("(1 | participant)", "(1 | unit)", "(1 | unit:condition)")),
    ("intercepts for participant and unit", ("(1 | participant)", "(1 | unit)")),
    ("participant intercepts only", ("(1 | participant)",)),
)
# Ratings: listener-specific condition effects enter as the uncorrelated (compound-symmetry)
# participant:condition term from the start; an unstructured 4 x 4 covariance per listener is
# 10 parameters the usual design cannot support.
RATING_LADDER: Ladder = (
    ("participant and clip condition effects",
     ("(1 | participant)", "(1 | participant:condition)", "(1 | unit)",
      "(1 | unit:condition)")),
    ("clip condition effects, participant intercepts",
     ("(1 | participant)", "(1 | unit)", "(1 | unit:condition)")),
    ("participant condition effects, unit intercepts",
     ("(1 | participant)", "(1 | participant:condition)", "(1 | unit)")),
    ("intercepts for participant and unit", ("(1 | participant)", "(1 | unit)")),
    ("participant intercepts only", ("(1 | participant)",)),
)
