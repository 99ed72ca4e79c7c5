"""Recovery from real faults: failed calls and time to recover, this engine against the others.

The experiment of ``fault_lab.py`` and ``experiment.py`` (the demo's too), with every column:

- stock: Django's PostgreSQL backend in a plain loop (a worker, a management command);
- stock + health checks: CONN_HEALTH_CHECKS, with request_started and request_finished sent
  around each job to emulate a request cycle, since Django runs its health check only then;
- 1.2.0: django-postgresql-reconnect 1.2.0 with @decorator on each job, from its own
  virtualenv (``.bench-venvs/v120``); psycopg2 only, as 1.2.0 is; left out when not installed;
- engine: this package with its defaults, in a plain loop.

Each column is one worker process (``worker.py``) whose thread runs a job (a read, then an
INSERT) every 20 ms through the column's own FaultProxy. Every fault of ``fault_lab.FAULTS`` in
turn, each with 1 s of calls before it and 2 s after it (24 s for the silent drop, which
needs root).

    python benchmarks/recovery.py [--driver psycopg|psycopg2] [--json] [--no-silent]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1] / "src"),
]

import fault_lab as lab  # noqa: E402
from experiment import run_phase, skipped_phase  # noqa: E402

BEFORE = 1.0
AFTER = 2.0
OUTAGE = 3.0


def run(driver: str, *, silent: bool, v120: bool) -> dict[str, Any]:
    columns = lab.columns_for(driver, ["stock", "stock_hc", "v120", "engine"], v120=v120)
    faults = [f for f in lab.FAULTS if silent or not f.silent]
    the_lab = lab.Lab.open([c.key for c in columns], outage=OUTAGE)
    silent_skip = "skipped (--no-silent)"
    try:
        if silent:
            silent_skip = the_lab.open_silent_link() or ""
        processes = lab.start_columns(the_lab, columns, driver=driver)
        try:
            phases = [
                skipped_phase(fault, the_lab, silent_skip)
                if fault.silent and silent_skip
                else run_phase(the_lab, processes, fault, before=BEFORE, after=AFTER)
                for fault in faults
            ]
        finally:
            for process in processes:
                process.close()
    finally:
        the_lab.close()
    return {
        "driver": driver,
        "columns": {c.key: c.label for c in columns},
        "column_texts": {c.key: c.describe() for c in columns},
        "before_s": BEFORE,
        "after_s": AFTER,
        "silent_drop": silent_skip or "run",
        "phases": [phase.as_json(timelines=True) for phase in phases],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-silent", action="store_true", help="skip the silent drop")
    parser.add_argument("--no-v120", action="store_true", help="leave out 1.2.0")
    args = parser.parse_args()
    # The proxy logs every refused upstream connection during the outage: not news here.
    logging.getLogger("django_postgresql_reconnect.testing").setLevel(logging.CRITICAL)
    report = run(
        args.driver, silent=not args.no_silent, v120=lab.v120_ready() and not args.no_v120
    )
    if args.json:
        import json

        print(json.dumps(report))
        return 0
    print(f"driver: {args.driver}; failed calls / seconds to recover")
    for phase in report["phases"]:
        if phase["skipped"]:
            print(f"  {phase['title']:<24} {phase['skipped']}")
            continue
        cells = []
        for key, s in phase["columns"].items():
            seconds = s["recovered_after"]
            when = "never" if seconds is None else f"{seconds:.2f}"
            cells.append(f"{key}: {s['failed']} / {when}")
        print(f"  {phase['title']:<24} " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
