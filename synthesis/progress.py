"""Progress of long steps: a tqdm bar on a terminal, plain periodic lines in a log file.

tqdm's bars are disabled when stderr is not a terminal (`disable=None`), which left a run whose
output goes to a log silent for hours. There, `Progress` writes a line such as
`clips: 12/48 (25%), 3.1 min elapsed, about 9.3 min left` at most every `PLAIN_LINE_SECONDS`,
and always at the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

PLAIN_LINE_SECONDS = 30.0  # tests set it to 0 to see every step


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class Progress:
    """`update()` / `close()` like tqdm; a bar on a terminal, otherwise plain lines."""

    def __init__(self, total: int, desc: str, unit: str, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.started = time.perf_counter()
        self.last_line: float | None = None
        self.printed = -1
        is_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: Any = (
            tqdm(total=total, desc=desc, unit=unit, file=self.stream) if is_terminal else None
        )

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.perf_counter()
        if self.last_line is None or now - self.last_line >= PLAIN_LINE_SECONDS:
            self._line(now)

    def _line(self, now: float) -> None:
        self.last_line, self.printed = now, self.done
        elapsed = now - self.started
        share = self.done / self.total if self.total else 1.0
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}s ({share:.0%}), "
        text += f"{_minutes(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {_minutes(elapsed / self.done * (self.total - self.done))} left"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.printed != self.done or self.last_line is None:
            self._line(time.perf_counter())  # the final count, unless the last line showed it
