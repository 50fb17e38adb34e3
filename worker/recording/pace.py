"""How often a training writes its progress: often at first, then backing off to a bound.

A person watching a training that just started wants its first epochs at once; one watching a
training an hour in does not need its progress four times a second. A fleet of N trainings
that each wrote every 0.25 s would ask one PostgreSQL for 4·N (8·N with the heartbeat) commits
a second; with the interval backing off to ``bound_s`` it asks for about N / ``bound_s``, and
the progress read through the API is at most ``bound_s`` plus an epoch old.

The schedule: ``start_s`` for the first write, then each interval ``growth`` times the one
before, up to ``bound_s``. A write that took long (a loaded database) stretches the next
interval so that writing fills at most ``duty`` of the training's wall clock, never past
``bound_s``: a slow database gets fewer writes, not a queue of them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Pace:
    """The interval before a training's next progress write.

    Args:
        start_s (float): The first interval (``KERASYARD_REPORT_INTERVAL_S``).
        bound_s (float): The longest interval (``KERASYARD_REPORT_INTERVAL_MAX_S``); a bound
            below ``start_s`` is taken as ``start_s``.
        growth (float): Each interval is this times the one before.
        duty (float): Share of the wall clock writes may fill (the stretch on slow writes).
    """

    start_s: float
    bound_s: float
    growth: float = 1.5
    duty: float = 0.05
    _scheduled: float = dataclasses.field(default=-1.0, init=False)
    _stretch: float = dataclasses.field(default=0.0, init=False)

    @property
    def interval(self) -> float:
        """Seconds until the next write."""
        scheduled = self.start_s if self._scheduled < 0 else self._scheduled
        return min(max(scheduled, self._stretch), self.bound)

    @property
    def bound(self) -> float:
        return max(self.bound_s, self.start_s)

    def wrote(self, took_s: float = 0.0) -> float:
        """A write is done (it took ``took_s``); returns the interval before the next one."""
        if self._scheduled < 0:
            self._scheduled = self.start_s
        self._scheduled = min(self._scheduled * self.growth, self.bound)
        self._stretch = took_s / self.duty if self.duty > 0 else 0.0
        return self.interval

    def schedule(self, writes: int) -> list[float]:
        """The intervals of the first ``writes`` writes when each takes no time (the docs and
        tests read it)."""
        probe = Pace(self.start_s, self.bound_s, self.growth, self.duty)
        out = [probe.interval]
        for _ in range(writes - 1):
            out.append(probe.wrote())
        return out
