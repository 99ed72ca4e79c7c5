"""Run faults against columns of workers, phase by phase, and score what each column saw.

A phase: every column's threads start on their alias; ``before`` seconds of healthy calls;
the fault is injected; ``after`` seconds (at least the fault's own ``watch``) of watching;
the threads stop; the server is asked which rows each token left. The figures:

- failed: calls that raised, plus calls still hung when the phase ended;
- recovered: seconds from the end of the injection (the server back up after a restart or
  an outage, the fault in place else) to the end of the first successful call after the last
  failure; None ("never") when the phase ended on a failure or a hung call;
- lost: acknowledged INSERTs whose row is missing; duplicated: extra copies of a row;
- outcome unknown: failed writes the caller was told may or may not have happened.

Used by ``recovery.py``, ``breaker.py``, ``load.py`` and the demo; an observer (the demo's
live view, or ``Quiet``) hears of each step.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from fault_lab import ColumnProcess, Fault, Lab, fault_title

#: Class names of the errors that mean "the write may or may not have happened" (this engine's
#: StatementOutcomeUnknown and its CommitOutcomeUnknown subclass); by name, since the 1.2.0
#: worker has neither.
OUTCOME_UNKNOWN = frozenset({"StatementOutcomeUnknown", "CommitOutcomeUnknown"})
#: A call still running this long before the phase ended is hung.
HUNG_AFTER = 1.0
#: Bins of the timelines (seconds).
BIN = 0.1


@dataclass
class Score:
    column: str
    calls: int
    failed: int
    outcome_unknown: int  # failed writes reported as "may or may not have happened"
    unknown_applied: int  # of the failed writes, those whose row is there (once)
    hung_for: float | None  # a call still blocked when the phase ended, for this long
    recovered_after: float | None  # seconds from the end of the fault to working; None: never
    lost: int  # acknowledged inserts whose row is missing
    duplicated: int  # extra copies of rows (a write applied twice)
    first_error: str | None
    errors: dict[str, int] = field(default_factory=dict)  # exception class -> calls

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0

    def as_json(self) -> dict[str, Any]:
        figures = asdict(self)
        for key in ("hung_for", "recovered_after"):
            if figures[key] is not None:
                figures[key] = round(figures[key], 3)
        return figures


@dataclass
class Phase:
    """One fault against every column: when it happened, the calls and the scores."""

    fault: Fault
    title: str
    began: float  # threads started
    injected: float  # injection started
    fault_end: float  # injection done (the server back up, the fault in place)
    ended: float  # threads told to stop
    calls: dict[str, list[dict[str, Any]]]  # column key -> calls
    scores: dict[str, Score]
    skipped: str | None = None

    def timeline(self, column: str, *, bin_seconds: float = BIN) -> dict[str, Any]:
        """Calls per bin, ok and failed, by their end, from the start of the phase."""
        bins = int((self.ended - self.began) / bin_seconds) + 1
        ok, failed = [0] * bins, [0] * bins
        for call in self.calls.get(column, []):
            index = int((call["e"] - self.began) / bin_seconds)
            if 0 <= index < bins:
                (ok if call["ok"] else failed)[index] += 1
        return {"bin_s": bin_seconds, "ok": ok, "failed": failed}

    def as_json(self, *, timelines: bool = False) -> dict[str, Any]:
        if self.skipped:
            return {"fault": self.fault.name, "title": self.title, "skipped": self.skipped}
        document: dict[str, Any] = {
            "fault": self.fault.name,
            "title": self.title,
            "skipped": None,
            "injected_at_s": round(self.injected - self.began, 3),
            "fault_end_s": round(self.fault_end - self.began, 3),
            "length_s": round(self.ended - self.began, 3),
            "columns": {key: score.as_json() for key, score in self.scores.items()},
        }
        if timelines:
            document["timelines"] = {key: self.timeline(key) for key in self.scores}
        return document


class Observer(Protocol):
    def phase_started(self, title: str, counts: Callable[[], dict[str, tuple[int, int]]]) -> None:
        pass

    def fault_injected(self, title: str, what: str, seconds: float) -> None:
        pass

    def phase_done(self, title: str, scores: list[Score]) -> None:
        pass

    def phase_skipped(self, title: str, why: str) -> None:
        pass

    def waiting(self, description: str, seconds: float) -> None:
        """Seconds of the plan just spent (``description``: what is going on)."""


class Quiet(Observer):
    """An observer that says nothing: the protocol's own methods do nothing."""


def phase_seconds(fault: Fault, lab: Lab, *, before: float, after: float) -> float:
    """How long a phase of this fault takes, for a progress bar."""
    return before + max(after, fault.watch) + (lab.outage if fault.name == "outage" else 0.0)


def run_phase(
    lab: Lab,
    processes: list[ColumnProcess],
    fault: Fault,
    *,
    before: float,
    after: float,
    observer: Observer | None = None,
) -> Phase:
    """Inject one fault while every column works; return the phase, scored."""
    seen = observer or Quiet()
    title = fault_title(fault, lab.outage)
    suffix = "_silent" if fault.silent else ""
    began = time.monotonic()
    for process in processes:
        process.begin(fault.name, process.column.key + suffix)
    seen.phase_started(title, lambda: {p.column.key: p.counts(fault.name) for p in processes})
    _wait(seen, f"{title}: warming up", before)
    injected = time.monotonic()
    fault.inject(lab)
    fault_end = time.monotonic()
    seen.waiting(f"{title}: injecting", fault_end - injected)
    seen.fault_injected(title, fault.what, fault_end - injected)
    _wait(seen, f"{title}: watching", max(after, fault.watch))
    ended = time.monotonic()
    hung = {p.column.key: p.end() for p in processes}
    lab.heal()
    server = lab.silent_server if fault.silent else lab.server
    rows: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for worker, token, count in server.execute(
        f"SELECT worker, token, count(*) FROM lab_call WHERE phase = '{fault.name}'"
        " GROUP BY worker, token",
        dbname="lab",
    ):
        rows[worker][token] = int(count)
    calls = {p.column.key: p.of(fault.name) for p in processes}
    scores = {
        key: score(
            key,
            calls[key],
            fault_end=fault_end,
            ended=ended,
            hung_since=hung[key],
            rows=rows[key],
        )
        for key in calls
    }
    seen.phase_done(title, list(scores.values()))
    return Phase(fault, title, began, injected, fault_end, ended, calls, scores)


def skipped_phase(fault: Fault, lab: Lab, why: str, observer: Observer | None = None) -> Phase:
    title = fault_title(fault, lab.outage)
    (observer or Quiet()).phase_skipped(title, why)
    now = time.monotonic()
    return Phase(fault, title, now, now, now, now, {}, {}, skipped=why)


def _wait(observer: Observer, description: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        pause = min(0.1, left)
        time.sleep(pause)
        observer.waiting(description, pause)


def score(
    column: str,
    records: list[dict[str, Any]],
    *,
    fault_end: float,
    ended: float,
    hung_since: list[float],
    rows: dict[str, int],
) -> Score:
    """Score one column's phase; ``rows`` maps each token of that phase to its row count."""
    calls = [r for r in records if r["e"] <= ended]
    failures = [r for r in calls if not r["ok"]]
    hung = [since for since in hung_since if since < ended - HUNG_AFTER]
    since = max([fault_end, *(r["e"] for r in failures)])
    successes = sorted(r["e"] for r in calls if r["ok"] and r["e"] >= since)
    last_failed = bool(calls) and not max(calls, key=lambda r: r["e"])["ok"]
    recovered = None if hung or last_failed or not successes else successes[0] - fault_end
    failed_writes = [r for r in failures if r.get("w")]
    errors = collections.Counter(r["k"] for r in failures)
    if hung:
        errors["hung"] = len(hung)
    first = min(failures, key=lambda r: r["e"]) if failures else None
    return Score(
        column=column,
        calls=len(calls) + len(hung),
        failed=len(failures) + len(hung),
        outcome_unknown=sum(r["k"] in OUTCOME_UNKNOWN for r in failures),
        unknown_applied=sum(rows.get(r["tok"], 0) == 1 for r in failed_writes),
        hung_for=ended - min(hung) if hung else None,
        recovered_after=max(0.0, recovered) if recovered is not None else None,
        lost=sum(rows.get(r["tok"], 0) == 0 for r in calls if r["ok"] and r.get("w")),
        duplicated=sum(count - 1 for count in rows.values() if count > 1),
        first_error=f"{first['k']}: {first['m']}" if first else None,
        errors=dict(errors),
    )
