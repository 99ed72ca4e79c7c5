"""Per-statement cost of the engine on a healthy connection, against stock Django.

Both backends run in one process on the same driver and server, interleaved call by call
(so drift, CPU frequency and server caches hit both alike). The ratio is the median time of
an engine call over the median time of a stock call; the noise floor is the same ratio for
stock against a second stock connection: a ratio within the noise floor is no measurable cost.

Measured twice: on loopback, where a round trip costs a few tens of microseconds and the
engine's flat cost shows most, and with about 0.3 ms added to each round trip (a FaultProxy
per alias, in a child process, delaying each chunk ``--latency`` seconds each way), closer to
a database in the same data centre. The added round trip is measured, not assumed: the
median stock call through the proxies minus the median stock call on loopback.

    python benchmarks/overhead.py [--driver psycopg|psycopg2] [--rounds N] [--calls N]
                                  [--latency SECONDS] [--json]
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


LOOPBACK = ("default", "stock_b", "engine")
DELAYED = ("stock_rtt", "stock_rtt_b", "engine_rtt")
#: Percentiles of the per-call times kept for the distribution plot.
PERCENTILES = list(range(1, 100))


def _setup(driver: str, latency: float) -> tuple[Any, Any]:
    if driver == "psycopg2":
        sys.modules["psycopg"] = None  # type: ignore[assignment]
        sys.modules["psycopg_pool"] = None  # type: ignore[assignment]
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    import django
    from django.conf import settings
    from proxy_process import ProxyProcess

    from django_postgresql_reconnect.testing import PostgresServer

    server = PostgresServer()
    server.start()
    server.create_database("bench")

    proxies = ProxyProcess(server.host, server.port, count=len(DELAYED))
    for index in range(len(DELAYED)):
        proxies.latency(index, latency)

    def entry(engine: str, port: int | None = None) -> dict[str, Any]:
        data = server.database_settings(engine=engine, name="bench")
        if port is not None:
            data.update({"HOST": proxies.host, "PORT": str(port)})
        data.update({"CONN_MAX_AGE": None, "OPTIONS": {"sslmode": "disable"}})
        return data

    stock, engine = "django.db.backends.postgresql", "django_postgresql_reconnect.backend"
    settings.configure(
        DATABASES={
            "default": entry(stock),
            "stock_b": entry(stock),
            "engine": entry(engine),
            "stock_rtt": entry(stock, proxies.ports[0]),
            "stock_rtt_b": entry(stock, proxies.ports[1]),
            "engine_rtt": entry(engine, proxies.ports[2]),
        },
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.app.apps.TestAppConfig"],
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    from tests.app.models import Item

    Item.objects.create(name="bench", value=1)
    return server, proxies


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


def measure(
    rounds: int, calls: int, aliases: tuple[str, str, str], proxy_pid: int | None = None
) -> list[dict[str, Any]]:
    """Time every call alone, the three aliases taking turns call by call.

    Interleaving per call (not per batch) puts the three aliases under the same moment of
    server and machine load; the median of thousands of single calls ignores the outliers
    (a checkpoint, the scheduler) that make a batch's mean wander by several percent.
    """
    results = []
    stock_a, stock_b_alias, engine_alias = aliases
    timer = time.perf_counter_ns
    for name, factory in _workloads().items():
        funcs = {alias: factory(alias) for alias in aliases}
        for func in funcs.values():
            for _ in range(200):  # warm up: connections, caches, branch predictors
                func()
        pin(aliases, also=[proxy_pid] if proxy_pid else [])
        per_alias: dict[str, list[int]] = {alias: [] for alias in aliases}
        orders = [aliases[i:] + aliases[:i] for i in range(3)]
        for call_no in range(rounds * calls):
            for alias in orders[call_no % 3]:
                func = funcs[alias]
                started = timer()
                func()
                per_alias[alias].append(timer() - started)
        stock = statistics.median(per_alias[stock_a])
        engine = statistics.median(per_alias[engine_alias])
        stock_b = statistics.median(per_alias[stock_b_alias])
        results.append(
            {
                "workload": name,
                "stock_us": stock / 1e3,
                "engine_us": engine / 1e3,
                "ratio": engine / stock,
                "noise_floor": stock_b / stock,
                "calls": rounds * calls,
                "stock_percentiles_us": _percentiles(per_alias[stock_a]),
                "engine_percentiles_us": _percentiles(per_alias[engine_alias]),
            }
        )
    return results


def _percentiles(times_ns: list[int]) -> list[float]:
    ordered = sorted(times_ns)
    return [round(ordered[len(ordered) * p // 100] / 1e3, 1) for p in PERCENTILES]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--latency", type=float, default=0.00015, help="seconds added each way (0.00015)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    server, proxies = _setup(args.driver, args.latency)
    try:
        results = measure(args.rounds, args.calls, LOOPBACK)
        delayed = measure(args.rounds, args.calls, DELAYED, proxies.pid)
    finally:
        from django.db import connections

        connections.close_all()
        proxies.close()
        server.close()
    for near, far in zip(results, delayed, strict=True):
        far["added_round_trip_us"] = far["stock_us"] - near["stock_us"]
    report = {
        "driver": args.driver,
        "latency_each_way_s": args.latency,
        "percentiles": PERCENTILES,
        "results": results,
        "delayed": delayed,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"driver: {args.driver}, {args.rounds} rounds x {args.calls} calls, interleaved")
    for label, rows in (("loopback", results), ("added round trip", delayed)):
        print(f" {label}")
        for r in rows:
            added = f"  (+{r['added_round_trip_us']:.0f} us)" if "added_round_trip_us" in r else ""
            print(
                f"  {r['workload']:<28} stock {r['stock_us']:7.1f} us  engine "
                f"{r['engine_us']:7.1f} us  ratio {r['ratio']:.3f}  (noise floor "
                f"{r['noise_floor']:.3f}){added}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
