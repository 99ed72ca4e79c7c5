"""Round trips per request on a warm connection, counted at a FaultProxy in front of the server.

Each request is what Django does for one: request_started, one query, request_finished.
Columns: stock Django, stock with CONN_HEALTH_CHECKS, this engine, and this engine with its
middleware's check (``check_pgsql_connections()``) at the start of each request. Counted
twice: requests back to back, and one request after the connection sat idle for longer than
IDLE_CHECK_AFTER (2 s), when the engine makes its one round-trip check.

    python benchmarks/roundtrips.py [--driver psycopg|psycopg2] [--requests N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IDLE = 2.5  # seconds, more than the default IDLE_CHECK_AFTER


def _setup(driver: str) -> tuple[Any, dict[str, Any]]:
    if driver == "psycopg2":
        sys.modules["psycopg"] = None  # type: ignore[assignment]
        sys.modules["psycopg_pool"] = None  # type: ignore[assignment]
    sys.path[:0] = [str(ROOT / "src")]
    import logging

    logging.getLogger("django_postgresql_reconnect").setLevel(logging.ERROR)
    import django
    from django.conf import settings

    from django_postgresql_reconnect.testing import FaultProxy, PostgresServer

    server = PostgresServer()
    server.start()
    proxies = {
        alias: FaultProxy(server.host, server.port) for alias in ("stock", "stock_hc", "engine")
    }
    databases = {}
    for alias, proxy in proxies.items():
        proxy.start()
        engine = "django_postgresql_reconnect.backend" if alias == "engine" else None
        entry = server.database_settings(
            engine=engine or "django.db.backends.postgresql", host=proxy.host, port=proxy.port
        )
        entry.update(
            {
                "CONN_MAX_AGE": None,
                "CONN_HEALTH_CHECKS": alias == "stock_hc",
                "OPTIONS": {"sslmode": "disable"},
            }
        )
        databases[alias] = entry
    settings.configure(
        DATABASES={"default": databases["stock"], **databases}, INSTALLED_APPS=[], USE_TZ=True
    )
    django.setup()
    return server, proxies


def request(alias: str, *, middleware: bool) -> None:
    from django.core.signals import request_finished, request_started
    from django.db import connections

    from django_postgresql_reconnect import check_pgsql_connections

    request_started.send(sender=None)
    try:
        if middleware:
            check_pgsql_connections()
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        request_finished.send(sender=None)


def measure(proxies: dict[str, Any], requests: int) -> list[dict[str, Any]]:
    columns = [
        ("stock", "stock", False),
        ("stock + CONN_HEALTH_CHECKS", "stock_hc", False),
        ("engine", "engine", False),
        ("engine + middleware", "engine", True),
    ]
    results = []
    for label, alias, middleware in columns:
        proxy = proxies[alias]
        for _ in range(3):  # open and warm the connection
            request(alias, middleware=middleware)
        proxy.reset_counters()
        for _ in range(requests):
            request(alias, middleware=middleware)
        busy_trips, busy_statements = proxy.round_trips, proxy.statements
        results.append(
            {
                "column": label,
                "warm_round_trips": busy_trips / requests,
                "warm_statements": busy_statements[:2],
            }
        )
    time.sleep(IDLE)  # every connection now idle for longer than IDLE_CHECK_AFTER
    for result, (_, alias, middleware) in zip(results, columns, strict=True):
        if middleware:
            time.sleep(IDLE)  # the previous column's request used this connection
        proxy = proxies[alias]
        proxy.reset_counters()
        request(alias, middleware=middleware)
        result["idle_round_trips"] = proxy.round_trips
        result["idle_statements"] = proxy.statements
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    server, proxies = _setup(args.driver)
    try:
        results = measure(proxies, args.requests)
    finally:
        from django.db import connections

        connections.close_all()
        for proxy in proxies.values():
            proxy.stop()
        server.close()
    if args.json:
        print(json.dumps({"driver": args.driver, "results": results}))
        return 0
    print(f"driver: {args.driver}; round trips per request with one query")
    for r in results:
        print(
            f"  {r['column']:<28} warm {r['warm_round_trips']:.2f}"
            f"  after {IDLE} s idle {r['idle_round_trips']}  {r['idle_statements']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
