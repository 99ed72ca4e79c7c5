"""A worker that writes unique rows every 20 ms and readers beside it, judged by the table.

Used by the failover and PgBouncer scenarios: the threads run while a test breaks things;
afterwards ``Outcome`` compares what each caller was told with what the server holds.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connections

from tests.app.models import Item

INTERVAL = 0.02


@dataclass
class Call:
    kind: str  # "write" or "read"
    name: str
    started: float
    ended: float
    error: BaseException | None


@dataclass
class Workload:
    """Threads calling the database until ``stop()``; each keeps what it was told."""

    write_alias: str
    read_alias: str | None = None
    readers: int = 2
    prefix: str = "w"
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Workload:
        self._threads = [threading.Thread(target=self._write, name="writer")]
        if self.read_alias is not None:
            self._threads += [
                threading.Thread(target=self._read, name=f"reader-{i}")
                for i in range(self.readers)
            ]
        for thread in self._threads:
            thread.start()
        time.sleep(0.3)  # every thread has a warm connection before the fault
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), f"{thread.name} hung"

    def _loop(self, kind: str, call: Callable[[int], str]) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                started = time.monotonic()
                error: BaseException | None = None
                name = ""
                try:
                    name = call(n)
                except Exception as exc:
                    error = exc
                    name = f"{self.prefix}-{n}" if kind == "write" else ""
                with self._lock:
                    self.calls.append(Call(kind, name, started, time.monotonic(), error))
                time.sleep(INTERVAL)
        finally:
            connections.close_all()

    def _write(self) -> None:
        def write(n: int) -> str:
            name = f"{self.prefix}-{n}"
            Item.objects.using(self.write_alias).create(name=name)
            return name

        self._loop("write", write)

    def _read(self) -> None:
        def read(n: int) -> str:
            Item.objects.using(self.read_alias).count()
            return ""

        self._loop("read", read)

    def outcome(self, held: list[str], *, settled_at: float) -> Outcome:
        """Judge the calls against ``held`` (the names in the table, from the server)."""
        return Outcome(self.calls, Counter(held), settled_at)


@dataclass
class Outcome:
    calls: list[Call]
    held: Counter[str]
    settled_at: float
    """When the fault was over (the promotion done, the server back)."""

    @property
    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "write"]

    @property
    def lost(self) -> list[str]:
        """Acknowledged writes missing from the table."""
        return [c.name for c in self.writes if c.error is None and not self.held[c.name]]

    @property
    def duplicated(self) -> list[str]:
        return [name for name, count in self.held.items() if count > 1]

    @property
    def failed_after_settled(self) -> list[Call]:
        return [c for c in self.calls if c.error is not None and c.started > self.settled_at]

    @property
    def failed_reads(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "read" and c.error is not None]

    @property
    def first_write_after(self) -> float:
        """Seconds from the fault's end to the first acknowledged write after it."""
        done = [c.ended for c in self.writes if c.error is None and c.ended > self.settled_at]
        return min(done) - self.settled_at if done else float("inf")

    def errors(self) -> list[str]:
        return sorted({type(c.error).__name__ for c in self.calls if c.error is not None})

    def summary(self) -> str:
        late = [(c.kind, type(c.error).__name__) for c in self.failed_after_settled]
        return (
            f"{len(self.writes)} writes, lost {self.lost}, duplicated {self.duplicated}, "
            f"failed after the fault {late}, "
            f"failed reads {len(self.failed_reads)}, errors {self.errors()}, "
            f"first write {self.first_write_after:.3f} s after the fault"
        )
