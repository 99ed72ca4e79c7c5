"""Turn one phase's calls and the rows the server holds into the figures of the table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Score:
    engine: str
    calls: int
    failed: int
    outcome_unknown: int  # failed writes reported as "may or may not have happened"
    unknown_applied: int  # of the failed writes, those whose row is there (once)
    hung_for: float | None  # a call still blocked when the phase ended, for this long
    recovered_after: float | None  # seconds from the fault to working again; None: never
    lost: int  # acknowledged inserts whose row is missing
    duplicated: int  # extra copies of rows (a write applied twice)
    first_error: str | None

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0

    def as_json(self) -> dict[str, Any]:
        figures = asdict(self)
        for key in ("hung_for", "recovered_after"):
            if figures[key] is not None:
                figures[key] = round(figures[key], 3)
        return figures


def score(
    engine: str,
    records: list[dict[str, Any]],
    *,
    fault_at: float,
    injected_at: float,
    ended_at: float,
    hung_since: float | None,
    rows: dict[str, int],
) -> Score:
    """Score one engine's phase; ``rows`` maps each token of that phase to its row count.

    Recovery is timed from ``fault_at`` to the end of the first success that began once the
    injection was complete (``injected_at``: some faults take a moment to bite, and a call
    that slipped through before then proves nothing) and after the last failure. A call
    stalled by the fault therefore counts until it returns.
    """
    calls = [r for r in records if r["end"] <= ended_at]
    failures = [r for r in calls if not r["ok"]]
    since = max([injected_at, *(r["end"] for r in failures if r["end"] >= fault_at)])
    successes = sorted(r["end"] for r in calls if r["ok"] and r["start"] >= since)
    recovered = None if hung_since is not None or not successes else successes[0] - fault_at
    failed_writes = [r for r in failures if r.get("insert_sent")]
    return Score(
        engine=engine,
        calls=len(calls) + (hung_since is not None),
        failed=len(failures) + (hung_since is not None),
        outcome_unknown=sum(bool(r.get("outcome_unknown")) for r in failures),
        unknown_applied=sum(rows.get(r["token"], 0) == 1 for r in failed_writes),
        hung_for=None if hung_since is None else ended_at - hung_since,
        recovered_after=recovered,
        lost=sum(rows.get(r["token"], 0) == 0 for r in calls if r["acked"]),
        duplicated=sum(count - 1 for count in rows.values() if count > 1),
        first_error=min(failures, key=lambda r: r["end"])["error"] if failures else None,
    )
