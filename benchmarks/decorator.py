"""Cost of the 1.2.0 guards on a healthy connection: the decorator and the middleware.

Each guarded call is timed against the same call unguarded, in one process on the same driver
and server, interleaved call by call (so drift, CPU frequency and server caches hit both
alike; async calls block by block, an event loop per block); a round's figure is the median
call of its block. The ratio is the median over rounds of guarded time / plain time; the
noise floor is the same ratio for the plain call against a second, identical plain call: a
ratio within the noise floor is no measurable cost. The issue asks for 1.02 at most.

    python benchmarks/decorator.py [--driver psycopg|psycopg2] [--rounds N] [--calls N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
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
ALIAS = "engine"


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
            ALIAS: entry("django_postgresql_reconnect.backend"),
        },
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.app.apps.TestAppConfig"],
        USE_TZ=True,
        SECRET_KEY="bench",
        ROOT_URLCONF="tests.urls",
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    from tests.app.models import Item

    Item.objects.create(name="bench", value=1)
    return server


# --- What is timed: each workload is (plain, plain again, guarded) ----------------------------


def _decorator_workloads() -> dict[str, tuple[Callable[[], object], ...]]:
    from tests.app.models import Item

    import django_postgresql_reconnect

    manager = Item.objects.using(ALIAS)

    def plain() -> object:
        return manager.get(name="bench")

    def plain_again() -> object:
        return manager.get(name="bench")

    @django_postgresql_reconnect.decorator
    def bare() -> object:
        return manager.get(name="bench")

    @django_postgresql_reconnect.decorator(using=ALIAS)
    def with_using() -> object:
        return manager.get(name="bench")

    reconnect = django_postgresql_reconnect.reconnect

    def block() -> object:
        with reconnect():
            return manager.get(name="bench")

    return {
        "@decorator, ORM get()": (plain, plain_again, bare),
        "@decorator(using=...), ORM get()": (plain, plain_again, with_using),
        "with reconnect(): ORM get()": (plain, plain_again, block),
    }


def _middleware_workload() -> dict[str, tuple[Callable[[], object], ...]]:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    def handler(middleware: list[str]) -> Callable[[], object]:
        with override_settings(MIDDLEWARE=middleware):
            app = WSGIHandler()
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/items/count",
            "QUERY_STRING": f"using={ALIAS}",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
        }

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            if not status.startswith("200"):
                raise AssertionError(status)

        def call() -> object:
            response = app(dict(environ), start_response)
            response.close()
            return response

        return call

    plain = handler([])
    return {
        "WSGI request, middleware": (
            plain,
            handler([]),
            handler(["django_postgresql_reconnect.middleware"]),
        )
    }


def _async_workload() -> dict[str, tuple[Callable[[], object], ...]]:
    """Async functions, timed as a batch of awaits inside one running loop per block."""
    from tests.app.models import Item

    import django_postgresql_reconnect

    manager = Item.objects.using(ALIAS)

    async def plain() -> object:
        return await manager.aget(name="bench")

    @django_postgresql_reconnect.decorator
    async def guarded() -> object:
        return await manager.aget(name="bench")

    return {"async @decorator, ORM aget()": (plain, plain, guarded)}


def _time_block(func: Callable[[], object], calls: int) -> float:
    """The median time of one call over a block of ``calls`` calls.

    A median rather than a mean: on a shared machine a few calls are preempted, and their
    outliers would swamp a difference of a few microseconds.
    """
    times: list[float] = []
    clock = time.perf_counter
    if inspect.iscoroutinefunction(func):

        async def batch() -> None:
            for _ in range(calls):
                started = clock()
                await func()  # type: ignore[misc]
                times.append(clock() - started)

        asyncio.run(batch())
    else:
        for _ in range(calls):
            started = clock()
            func()
            times.append(clock() - started)
    return statistics.median(times)


def measure(rounds: int, calls: int, *, with_async: bool = True) -> list[dict[str, Any]]:
    workloads = {**_decorator_workloads(), **_middleware_workload()}
    if with_async:
        workloads.update(_async_workload())
    results = []
    names = ["plain", "plain_again", "guarded"]
    for name, funcs in workloads.items():
        for func in funcs:
            _time_block(func, 200)  # warm up: connections, caches, branch predictors
        pin([ALIAS])
        per: dict[str, list[float]] = {n: [] for n in names}
        labelled = list(zip(names, funcs, strict=True))
        orders = [labelled[i:] + labelled[:i] for i in range(3)]
        if inspect.iscoroutinefunction(funcs[0]):
            # An event loop per block: the variants take turns block by block.
            for round_no in range(rounds):
                for label, func in orders[round_no % 3]:
                    per[label].append(_time_block(func, calls))
        else:
            # Every call timed alone, the variants taking turns call by call; each "round"
            # is then a block of single-call times, compared by their medians below.
            clock = time.perf_counter
            for _round in range(rounds):
                times: dict[str, list[float]] = {n: [] for n in names}
                for call_no in range(calls):
                    for label, func in orders[call_no % 3]:
                        started = clock()
                        func()
                        times[label].append(clock() - started)
                for label in names:
                    per[label].append(statistics.median(times[label]))
        results.append(
            {
                "workload": name,
                "plain_us": statistics.median(per["plain"]) * 1e6,
                "guarded_us": statistics.median(per["guarded"]) * 1e6,
                "ratio": statistics.median(
                    g / p for g, p in zip(per["guarded"], per["plain"], strict=True)
                ),
                "noise_floor": statistics.median(
                    a / p for a, p in zip(per["plain_again"], per["plain"], strict=True)
                ),
            }
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--no-async", action="store_true", help="skip the async workload")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    server = _setup(args.driver)
    try:
        results = measure(args.rounds, args.calls, with_async=not args.no_async)
    finally:
        from asgiref.sync import async_to_sync, sync_to_async
        from django.db import connections

        # The async workload opened a connection in asgiref's executor thread.
        async_to_sync(sync_to_async(connections.close_all, thread_sensitive=True))()
        connections.close_all()
        server.close()
    if args.json:
        print(json.dumps({"driver": args.driver, "results": results}))
        return 0
    print(f"driver: {args.driver}, {args.rounds} rounds x {args.calls} calls, interleaved")
    for r in results:
        print(
            f"  {r['workload']:<34} plain {r['plain_us']:7.1f} us  guarded "
            f"{r['guarded_us']:7.1f} us  ratio {r['ratio']:.3f}  "
            f"(noise floor {r['noise_floor']:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
