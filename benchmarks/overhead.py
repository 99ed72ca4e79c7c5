"""Per-statement cost of the engine on a healthy connection, against stock Django.

Both backends run in one process on the same driver and server, interleaved call by call
(so drift, CPU frequency and server caches hit both alike). The ratio is the median time of
an engine call over the median time of a stock call; the noise floor is the same ratio for
stock against a second stock connection: a ratio within the noise floor is no measurable cost.

    python benchmarks/overhead.py [--driver psycopg|psycopg2] [--rounds N] [--calls N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pinning import pin

ROOT = Path(__file__).resolve().parent.parent


def _setup(driver: str) -> Any:
    if driver == "psycopg2":
        sys.modules["psycopg"] = None  # type: ignore[assignment]
        sys.modules["psycopg_pool"] = None  # type: ignore[assignment]
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    import django
    from django.conf import settings

    from django_postgresql_reconnect.testing import PostgresServer

    server = PostgresServer()
    server.start()
    server.create_database("bench")

    def entry(engine: str) -> dict[str, Any]:
        data = server.database_settings(engine=engine, name="bench")
        data.update({"CONN_MAX_AGE": None, "OPTIONS": {"sslmode": "disable"}})
        return data

    settings.configure(
        DATABASES={
            "default": entry("django.db.backends.postgresql"),
            "stock_b": entry("django.db.backends.postgresql"),
            "engine": entry("django_postgresql_reconnect.backend"),
        },
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.app.apps.TestAppConfig"],
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    from tests.app.models import Item

    Item.objects.create(name="bench", value=1)
    return server


def _workloads() -> dict[str, Callable[[str], Callable[[], object]]]:
    from django.db import connections
    from tests.app.models import Item

    def orm_get(alias: str) -> Callable[[], object]:
        manager = Item.objects.using(alias)
        return lambda: manager.get(name="bench")

    def raw_select(alias: str) -> Callable[[], object]:
        connection = connections[alias]

        def call() -> object:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone()

        return call

    return {"ORM get() by unique field": orm_get, "raw cursor SELECT 1": raw_select}


def measure(rounds: int, calls: int) -> list[dict[str, Any]]:
    """Time every call alone, the three aliases taking turns call by call.

    Interleaving per call (not per batch) puts the three aliases under the same moment of
    server and machine load; the median of thousands of single calls ignores the outliers
    (a checkpoint, the scheduler) that make a batch's mean wander by several percent.
    """
    results = []
    aliases = ["default", "stock_b", "engine"]
    timer = time.perf_counter_ns
    for name, factory in _workloads().items():
        funcs = {alias: factory(alias) for alias in aliases}
        for func in funcs.values():
            for _ in range(200):  # warm up: connections, caches, branch predictors
                func()
        pin(aliases)
        per_alias: dict[str, list[int]] = {alias: [] for alias in aliases}
        orders = [aliases[i:] + aliases[:i] for i in range(3)]
        for call_no in range(rounds * calls):
            for alias in orders[call_no % 3]:
                func = funcs[alias]
                started = timer()
                func()
                per_alias[alias].append(timer() - started)
        stock = statistics.median(per_alias["default"])
        engine = statistics.median(per_alias["engine"])
        stock_b = statistics.median(per_alias["stock_b"])
        results.append(
            {
                "workload": name,
                "stock_us": stock / 1e3,
                "engine_us": engine / 1e3,
                "ratio": engine / stock,
                "noise_floor": stock_b / stock,
                "calls": rounds * calls,
            }
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    server = _setup(args.driver)
    try:
        results = measure(args.rounds, args.calls)
    finally:
        from django.db import connections

        connections.close_all()
        server.close()
    if args.json:
        print(json.dumps({"driver": args.driver, "results": results}))
        return 0
    print(f"driver: {args.driver}, {args.rounds} rounds x {args.calls} calls, interleaved")
    for r in results:
        print(
            f"  {r['workload']:<28} stock {r['stock_us']:7.1f} us  engine {r['engine_us']:7.1f}"
            f" us  ratio {r['ratio']:.3f}  (noise floor {r['noise_floor']:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
