"""Backoff with jitter, deadlines and the circuit breaker: when to try connecting again.

Plain Python with no Django import. Deadlines are absolute ``time.monotonic()`` values passed
around, not timeouts, so that nested waits can never add up past what the caller allowed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Backoff", "Breaker", "BreakerOpen"]


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


class BreakerOpen(Exception):
    """Raised by :meth:`Breaker.admit` while the breaker fails calls fast."""

    def __init__(self, remaining: float, since: float) -> None:
        super().__init__(remaining, since)
        self.remaining = remaining
        self.since = since


class Breaker:
    """A circuit breaker shared by every thread that connects to one database alias.

    Once a caller spent its whole deadline failing to connect, the database is down for
    everyone: other callers then fail at once during the cool-down instead of each waiting out
    their own deadline (threads would pile up, requests would queue). After the cool-down one
    caller at a time probes with a single attempt; the others keep failing fast until a probe
    succeeds.
    """

    def __init__(self, cooldown: float, clock: Callable[[], float] | None = None) -> None:
        self.cooldown = cooldown
        self._clock: Callable[[], float] = clock or time.monotonic
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._opened_at = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def admit(self) -> bool:
        """Let a connection attempt through, or raise :class:`BreakerOpen`.

        Returns True when the caller is the one probe allowed after the cool-down: it must make
        a single attempt and report it with :meth:`record_success` or :meth:`record_failure`.
        """
        with self._lock:
            if self._open_until is None:
                return False
            now = self._clock()
            if now < self._open_until or self._probing:
                raise BreakerOpen(max(0.0, self._open_until - now), now - self._opened_at)
            self._probing = True
            return True

    def record_success(self) -> None:
        if self._open_until is None and not self._probing:
            return
        with self._lock:
            self._open_until = None
            self._probing = False

    def record_failure(self) -> None:
        """Open (or re-open) the breaker: a whole deadline or a probe failed."""
        if self.cooldown <= 0:
            return
        with self._lock:
            now = self._clock()
            if self._open_until is None:
                self._opened_at = now
            self._open_until = now + self.cooldown
            self._probing = False
