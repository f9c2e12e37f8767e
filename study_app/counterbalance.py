"""Latin-square assignment of conditions to segments, shared by every trial type that gives each
participant one condition per segment. Pure: no Flask, no database."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    segment: int  # position in the block's segment list
    condition: int  # position in the block's condition list
    round: int  # 0 for the first pass over the segments, 1 for the repeat, ...
    turn: int  # how many earlier participants had the same list


def latin_square_cells(
    n_segments: int, n_conditions: int, trials: int, assignment_index: int
) -> list[Cell]:
    """The (segment, condition) cells of one participant's block.

    List L = assignment_index mod k gives segment i the condition (i + L + round) mod k, so each
    list holds every condition equally often and successive participants cycle through the k
    lists. When a participant gets fewer trials than there are segments, each successive
    participant of a list starts further along the segments, so the segments are used evenly.

    >>> [(c.segment, c.condition) for c in latin_square_cells(3, 3, 3, 1)]
    [(0, 1), (1, 2), (2, 0)]
    """
    list_index = assignment_index % n_conditions
    turn = assignment_index // n_conditions
    start = (turn * trials) % n_segments
    cells = [
        Cell(i, (i + list_index + r) % n_conditions, r, turn)
        for r in range(math.ceil(trials / n_segments))
        for i in ((start + offset) % n_segments for offset in range(n_segments))
    ]
    return cells[:trials]
