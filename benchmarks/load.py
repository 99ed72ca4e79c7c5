"""32 threads on one alias through a 3 s outage and then a server restart.

The harness of ``recovery.py`` (``fault_lab.py``, ``experiment.py``, ``worker.py``): one
worker process with 32 threads, each with its own connection (as Django gives each thread)
to the same alias, each running a job (a read, then an INSERT) every 20 ms, which keeps the
2-core machine busy. Two faults in turn: the server stopped for 3 s and started again, then
a fast restart. Each column runs alone, so that the columns do not compete for the CPU.

For each column and fault: the failed calls, those of them reported as outcome unknown (a
write in flight when the server went away: documented, and whether one is in flight is
chance), the failures beyond those, rows lost or duplicated, and for each thread the
seconds from the server being up to its first success after its last failure (median and
slowest thread). The promise: every thread works again within 0.5 s.

    python benchmarks/load.py [--driver psycopg|psycopg2] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1] / "src"),
]

import fault_lab as lab  # noqa: E402
from experiment import Phase, run_phase  # noqa: E402

THREADS = 32
BEFORE = 1.0
AFTER = 3.0
OUTAGE = 3.0
PROMISE = 0.5


def run(driver: str, *, threads: int, v120: bool) -> dict[str, Any]:
    columns = lab.columns_for(driver, ["stock_hc", "v120", "engine"], v120=v120)
    results: dict[str, Any] = {}
    timelines: dict[str, Any] = {}
    for column in columns:
        the_lab = lab.Lab.open([column.key], outage=OUTAGE)
        try:
            (process,) = lab.start_columns(
                the_lab, [column], driver=driver, threads=threads, job="read-write"
            )
            try:
                phases = [
                    run_phase(the_lab, [process], lab.BY_NAME[name], before=BEFORE, after=AFTER)
                    for name in ("outage", "restart")
                ]
            finally:
                process.close()
        finally:
            the_lab.close()
        results[column.key] = {
            "label": column.label,
            "faults": {p.title: figures(p, column.key, threads) for p in phases},
        }
        timelines[column.key] = {p.title: p.as_json(timelines=True) for p in phases}
    return {
        "driver": driver,
        "threads": threads,
        "promise_s": PROMISE,
        "columns": results,
        "phases": timelines,
    }


def figures(phase: Phase, key: str, threads: int) -> dict[str, Any]:
    score = phase.scores[key]
    calls = [c for c in phase.calls[key] if c["e"] <= phase.ended]
    per_thread: list[float | None] = []
    for thread in range(threads):
        mine = [c for c in calls if c["t"] == thread]
        since = max([phase.fault_end, *(c["e"] for c in mine if not c["ok"])])
        ok = [c["e"] for c in mine if c["ok"] and c["e"] >= since]
        per_thread.append(min(ok) - phase.fault_end if ok else None)
    known = [s for s in per_thread if s is not None]
    window = phase.ended - phase.began
    return {
        "calls": score.calls,
        "calls_per_s": round(score.calls / window, 1),
        "failed": score.failed,
        "outcome_unknown": score.outcome_unknown,
        "unknown_applied": score.unknown_applied,
        "failed_beyond_unknown": score.failed - score.outcome_unknown,
        "errors": score.errors,
        "lost": score.lost,
        "duplicated": score.duplicated,
        "median_thread_recovery_s": round(statistics.median(known), 3) if known else None,
        "slowest_thread_recovery_s": round(max(known), 3) if len(known) == threads else None,
        "threads_recovered": len(known),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-v120", action="store_true", help="leave out 1.2.0")
    args = parser.parse_args()
    logging.getLogger("django_postgresql_reconnect.testing").setLevel(logging.CRITICAL)
    report = run(args.driver, threads=args.threads, v120=lab.v120_ready() and not args.no_v120)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"driver: {args.driver}; {args.threads} threads on one alias")
    for column in report["columns"].values():
        for fault, r in column["faults"].items():
            slowest = r["slowest_thread_recovery_s"]
            print(
                f"  {column['label']:<22} {fault:<18} calls {r['calls']:>6}  failed "
                f"{r['failed']:>5} (outcome unknown {r['outcome_unknown']}, beyond "
                f"{r['failed_beyond_unknown']})  lost {r['lost']}  duplicated "
                f"{r['duplicated']}  recovery median {r['median_thread_recovery_s']} s, "
                f"slowest {'never' if slowest is None else slowest} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
