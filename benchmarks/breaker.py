"""The breaker through a long outage: fast failures while the server is down, fast recovery after.

The harness of ``recovery.py`` (``fault_lab.py``, ``experiment.py``, ``worker.py``) with one
fault, the server stopped for 20 s, against 4 threads per column looping reads (one
connection each). For each column:

- the calls that failed during the outage, their median and 90th-percentile time: once the
  engine's breaker opened (a caller spent its whole DEADLINE, 10 s by default) they should
  fail at once instead of each waiting out a deadline;
- for each thread, the seconds from the server being up again to its first success: the
  breaker probes at most every BREAKER_PROBE_INTERVAL (0.5 s), so this stays under 1 s
  whatever the outage's length.

Columns: stock (a plain loop), stock + health checks (a request cycle: a new connection per
request once the old one failed), 1.2.0 (psycopg2, when ``.bench-venvs/v120`` exists), engine.

    python benchmarks/breaker.py [--driver psycopg|psycopg2] [--outage SECONDS] [--json]
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

THREADS = 4
BEFORE = 1.0
AFTER = 3.0
#: The promise: every thread works again within this long of the server being up.
PROMISE = 1.0


def run(driver: str, *, outage: float, v120: bool) -> dict[str, Any]:
    columns = lab.columns_for(driver, ["stock", "stock_hc", "v120", "engine"], v120=v120)
    the_lab = lab.Lab.open([c.key for c in columns], outage=outage)
    try:
        processes = lab.start_columns(the_lab, columns, driver=driver, threads=THREADS, job="read")
        try:
            phase = run_phase(
                the_lab, processes, lab.BY_NAME["outage"], before=BEFORE, after=AFTER
            )
        finally:
            for process in processes:
                process.close()
    finally:
        the_lab.close()
    return {
        "driver": driver,
        "outage_s": outage,
        "threads": THREADS,
        "promise_s": PROMISE,
        "columns": {c.key: figures(phase, c.key) | {"label": c.label} for c in columns},
        "phase": phase.as_json(timelines=True),
    }


def figures(phase: Phase, key: str) -> dict[str, Any]:
    calls = phase.calls[key]
    down = [c for c in calls if c["s"] >= phase.injected and c["e"] <= phase.fault_end]
    failing = sorted(c["e"] - c["s"] for c in down if not c["ok"])
    first_success = []
    for thread in range(THREADS):
        ok = [c["e"] for c in calls if c["t"] == thread and c["ok"] and c["e"] >= phase.fault_end]
        first_success.append(round(min(ok) - phase.fault_end, 3) if ok else None)
    known = [s for s in first_success if s is not None]
    return {
        "failing_calls": len(failing),
        "failing_median_ms": round(statistics.median(failing) * 1e3, 2) if failing else None,
        "failing_p90_ms": round(failing[int(len(failing) * 0.9)] * 1e3, 2) if failing else None,
        "longest_call_s": round(max((c["e"] - c["s"] for c in calls), default=0.0), 2),
        "first_success_s": first_success,
        "all_recovered_s": max(known) if len(known) == THREADS else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--outage", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-v120", action="store_true", help="leave out 1.2.0")
    args = parser.parse_args()
    logging.getLogger("django_postgresql_reconnect.testing").setLevel(logging.CRITICAL)
    report = run(args.driver, outage=args.outage, v120=lab.v120_ready() and not args.no_v120)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"driver: {args.driver}; {args.outage:.0f} s outage under {THREADS} threads of reads")
    for r in report["columns"].values():
        firsts = ", ".join("never" if s is None else f"{s:.2f}" for s in r["first_success_s"])
        print(
            f"  {r['label']:<22} failing calls {r['failing_calls']:>6}, median "
            f"{r['failing_median_ms']} ms, p90 {r['failing_p90_ms']} ms, longest "
            f"{r['longest_call_s']} s; first success after server-up (s): {firsts}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
