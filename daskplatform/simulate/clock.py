"""A simulated clock: actions run in time order and nothing sleeps, so a whole day takes
a fraction of a second and the same inputs always give the same day."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False)
class Timer:
    """An action due at a time; cancelled, it is skipped when its time comes."""

    action: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self._due: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # ties run in the order they were set

    def at(self, when: float, action: Callable[[], None]) -> Timer:
        """Run ``action`` at ``when`` (now, if that has passed)."""
        timer = Timer(action)
        heapq.heappush(self._due, (max(when, self.now), next(self._order), timer))
        return timer

    def run(self, until: float, elapse: Callable[[float, float], None]) -> None:
        """Run every action due up to ``until``; ``elapse(start, end)`` is told of each
        stretch of time before the state changes again, so figures can be integrated."""
        while self._due and self._due[0][0] <= until:
            when, _, timer = heapq.heappop(self._due)
            if timer.cancelled:
                continue
            if when > self.now:
                elapse(self.now, when)
                self.now = when
            timer.action()
        if until > self.now:
            elapse(self.now, until)
            self.now = until
