"""When to try connecting again: backoff with jitter, deadlines, the breaker, the wake-up call.

Plain Python with no Django import. Deadlines are absolute ``time.monotonic()`` values passed
around, not timeouts, so that nested waits can never add up past what the caller allowed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Backoff", "Breaker", "BreakerOpen", "Deadline", "Wakeup"]


@dataclass(frozen=True)
class Deadline:
    """A moment on the monotonic clock by which one call must be done reconnecting."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def passed(self) -> bool:
        return time.monotonic() >= self.at


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped.

    Full jitter (a uniform draw between 0 and the exponential bound) spreads the reconnect
    attempts of many workers that lost the same server at the same moment, so that a server
    that comes back is not hit by all of them at once.
    """

    initial: float = 0.05
    maximum: float = 1.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delays(self) -> Iterator[float]:
        """Yield the pause before each retry, forever; the caller stops at its deadline."""
        bound = self.initial
        while True:
            yield self.rng.uniform(0, bound)
            bound = min(self.maximum, bound * self.multiplier)


class Wakeup:
    """Wakes the threads that wait to retry a connection as soon as one of them got one.

    Without it a thread that drew a long pause would sleep it out after the server came back.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._rings = 0

    @property
    def rings(self) -> int:
        return self._rings

    def wait(self, seconds: float, seen: int) -> None:
        """Sleep up to ``seconds``, less if it rang since ``seen`` (a value of ``rings``)."""
        with self._condition:
            if self._rings == seen:
                self._condition.wait(seconds)

    def ring(self) -> None:
        with self._condition:
            self._rings += 1
            self._condition.notify_all()


class BreakerOpen(Exception):
    """Raised by :meth:`Breaker.admit` while the breaker fails calls fast."""

    def __init__(self, down_for: float, probe_every: float) -> None:
        super().__init__(down_for, probe_every)
        self.down_for = down_for
        self.probe_every = probe_every


# Breaker states, for observers.
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    """A circuit breaker shared by every thread of a process that connects to one alias.

    Once a caller spent its whole deadline failing to connect, the database is down for
    everyone: other callers then fail at once instead of each waiting out their own deadline
    (threads would pile up, requests would queue). While it is open, one caller at a time is
    let through as a probe, at most every ``probe_every`` seconds, so that a server that comes
    back is used within that interval however long it was down. The probe makes one attempt;
    the others keep failing fast until a probe succeeds.
    """

    def __init__(
        self,
        probe_every: float,
        *,
        clock: Callable[[], float] | None = None,
        on_change: Callable[[str, float], None] | None = None,
    ) -> None:
        self.probe_every = probe_every
        self._clock: Callable[[], float] = clock or time.monotonic
        self._on_change = on_change
        self._lock = threading.Lock()
        self._open = False
        self._opened_at = 0.0
        self._next_probe = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if not self._open:
            return CLOSED
        return HALF_OPEN if self._probing else OPEN

    @property
    def down_for(self) -> float:
        """Seconds since the breaker opened (0 when closed)."""
        return self._clock() - self._opened_at if self._open else 0.0

    def admit(self) -> bool:
        """Let a connection attempt through, or raise :class:`BreakerOpen`.

        Returns True when the caller is the probe: it must make a single attempt, report it
        with :meth:`record_success` or :meth:`record_failure`, and call :meth:`probe_done` in
        a ``finally`` clause, so that no exception (a task's time limit, KeyboardInterrupt)
        leaves the breaker waiting for a probe that will never report.
        """
        if not self._open:  # read without the lock: the common case costs nothing
            return False
        with self._lock:
            if self._closed_meanwhile():
                return False
            now = self._clock()
            if self._probing or now < self._next_probe:
                raise BreakerOpen(now - self._opened_at, self.probe_every)
            self._probing = True
            self._next_probe = now + self.probe_every
        self._notify(HALF_OPEN)
        return True

    def _closed_meanwhile(self) -> bool:
        return not self._open

    def probe_done(self) -> None:
        with self._lock:
            self._probing = False

    def record_success(self) -> None:
        if not self._open:
            return
        with self._lock:
            was_down = self._clock() - self._opened_at
            self._open = False
            self._probing = False
        self._notify(CLOSED, was_down)

    def record_failure(self) -> None:
        """Open the breaker (or keep it open): a whole deadline or a probe failed."""
        if self.probe_every <= 0:
            return  # the breaker is disabled
        with self._lock:
            now = self._clock()
            opening = not self._open
            if opening:
                self._open = True
                self._opened_at = now
            self._next_probe = now + self.probe_every
            self._probing = False
        if opening:
            self._notify(OPEN)

    def reset(self) -> None:
        """Close without a word (a new process after fork(), a test's fresh start)."""
        with self._lock:
            self._open = False
            self._probing = False

    def _notify(self, state: str, seconds: float | None = None) -> None:
        if self._on_change is not None:
            self._on_change(state, self.down_for if seconds is None else seconds)
