"""10,000 reconnects in one process: open file descriptors, threads and memory, before and after.

One alias, one thread, through a FaultProxy in a child process (``proxy_process.py``, so
that the proxy's sockets and thread are not counted here). Each cycle runs ``SELECT
pg_backend_pid()`` and then loses the connection, alternately by ``pg_terminate_backend``
(from a second, direct connection) and by a proxy reset.
The next cycle's statement meets the dead connection and the engine replaces it; the backend
pid must change every cycle, so every cycle is counted as a reconnect only when it did.

Stock Django does the same cycle (2,000 times: a reconnect costs about 15 ms here, most of it
the server starting a backend) as a web app would see it: the statement after the loss
fails, ``close_old_connections()`` (what request_finished does) closes the broken
connection, and the next statement opens a new one. That is the baseline: what Python, the
driver and Django themselves keep per reconnect.

Read from /proc/self: fds (``fd/``), threads and RSS (``status``), after a warm-up of 200
cycles and then every ``--every`` cycles. The bound: no fd and no thread more than after
the warm-up, and RSS within 2 MB of it (allocator noise; a leak of even 200 bytes a
reconnect would show as 2 MB over 10,000).

    python benchmarks/leaks.py [--driver psycopg|psycopg2] [--cycles N] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 200
RSS_BOUND_KB = 2048


def process_figures() -> dict[str, int]:
    """Open fds, OS threads and resident memory (kB) of this process."""
    status = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": int(fields["Threads"].strip()),
        "rss_kb": int(fields["VmRSS"].split()[0]),
    }


def _setup(driver: str) -> tuple[Any, Any]:
    if driver == "psycopg2":
        sys.modules["psycopg"] = None  # type: ignore[assignment]
        sys.modules["psycopg_pool"] = None  # type: ignore[assignment]
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "src")]
    import logging

    logging.disable(logging.CRITICAL)  # a WARNING per loss, 10,000 times
    import django
    from django.conf import settings
    from proxy_process import ProxyProcess

    from django_postgresql_reconnect.testing import PostgresServer

    server = PostgresServer()
    server.start()
    proxies = ProxyProcess(server.host, server.port, count=2)

    def entry(engine: str, port: int) -> dict[str, Any]:
        data = server.database_settings(engine=engine, host=proxies.host, port=port)
        data.update({"CONN_MAX_AGE": None, "OPTIONS": {"sslmode": "disable"}})
        return data

    admin = server.database_settings(engine="django.db.backends.postgresql")
    admin["OPTIONS"] = {"sslmode": "disable"}
    settings.configure(
        DATABASES={
            "default": admin,
            "stock": entry("django.db.backends.postgresql", proxies.ports[0]),
            "engine": entry("django_postgresql_reconnect.backend", proxies.ports[1]),
        },
        INSTALLED_APPS=[],
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    return server, proxies


def measure(alias: str, proxy_index: int, proxies: Any, cycles: int, every: int) -> dict[str, Any]:
    """Run the cycles on ``alias``; return the reconnects and the figures along the way."""
    from django.db import close_old_connections, connections

    def backend_pid() -> int | None:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                return int(cursor.fetchone()[0])
        except Exception:
            if alias == "engine":
                raise  # the engine must not fail a read after a loss
            close_old_connections()  # stock: what request_finished does after a failed request
            connections[alias].close_if_unusable_or_obsolete()
            return None

    def lose(number: int, pid: int) -> None:
        if number % 2:
            proxies.reset(proxy_index)
        else:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        # Wait for the goodbye (FATAL and FIN, or RST) to reach the idle socket, so that the
        # next statement meets a dead connection rather than racing the kill.
        select.select([connections[alias].connection.fileno()], [], [], 5.0)

    def cycle(number: int, last: int | None) -> tuple[int | None, bool]:
        pid = backend_pid()
        if pid is None:  # stock: this statement failed; the next one connects again
            pid = backend_pid()
        assert pid is not None, f"{alias}: no connection after a failure"
        lose(number, pid)
        return pid, pid != last

    pid: int | None = None
    reconnects = 0
    for number in range(WARM_UP):
        pid, _ = cycle(number, pid)
    gc.collect()
    points = [{"cycle": 0, **process_figures()}]
    started = time.monotonic()
    for number in range(1, cycles + 1):
        pid, changed = cycle(number, pid)
        reconnects += changed
        if number % every == 0 or number == cycles:
            gc.collect()
            points.append({"cycle": number, **process_figures()})
    elapsed = time.monotonic() - started
    first, last = points[0], points[-1]
    return {
        "alias": alias,
        "cycles": cycles,
        "reconnects": reconnects,
        "seconds": round(elapsed, 1),
        "per_reconnect_ms": round(elapsed / cycles * 1e3, 2),
        "points": points,
        "fd_growth": last["fds"] - first["fds"],
        "thread_growth": last["threads"] - first["threads"],
        "rss_growth_kb": last["rss_kb"] - first["rss_kb"],
        "within_bound": last["fds"] <= first["fds"]
        and last["threads"] <= first["threads"]
        and last["rss_kb"] - first["rss_kb"] <= RSS_BOUND_KB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--cycles", type=int, default=10_000, help="the engine's (10,000)")
    parser.add_argument(
        "--stock-cycles", type=int, default=2_000, help="the stock baseline's (2,000)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    server, proxies = _setup(args.driver)
    try:
        results = [
            measure("stock", 0, proxies, args.stock_cycles, max(1, args.stock_cycles // 4)),
            measure("engine", 1, proxies, args.cycles, max(1, args.cycles // 5)),
        ]
    finally:
        from django.db import connections

        connections.close_all()
        proxies.close()
        server.close()
    report = {
        "driver": args.driver,
        "warm_up": WARM_UP,
        "rss_bound_kb": RSS_BOUND_KB,
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"driver: {args.driver}; losses after {WARM_UP} warm-up cycles")
    for r in results:
        print(
            f"  {r['alias']:<7} {r['cycles']} cycles, {r['reconnects']} reconnects, "
            f"{r['per_reconnect_ms']} ms each; "
            f"fds {r['fd_growth']:+d}, threads {r['thread_growth']:+d}, "
            f"RSS {r['rss_growth_kb']:+d} kB"
        )
        for point in r["points"]:
            print(
                f"    after {point['cycle']:>6}: fds {point['fds']}, threads "
                f"{point['threads']}, RSS {point['rss_kb']} kB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
