"""One worker of the recovery benchmark: a loop of a read and a write, timed call by call.

Run by ``recovery.py``, once per column, possibly in another virtualenv (1.2.0's), so it
imports nothing but Django and the driver. Each call prints one line on stdout:

    begin <t>                      a call started (time.monotonic(), shared by all processes)
    end <t0> <t1> ok|<Exception>   it ended, successfully or with that exception

The loop ends when stdin closes.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

#: Pause between calls: a busy worker, not a flood.
PACE = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="application_name and row tag")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--dbname", default="bench")
    parser.add_argument("--driver", choices=["psycopg", "psycopg2"], default="psycopg")
    parser.add_argument("--health-checks", action="store_true", help="CONN_HEALTH_CHECKS")
    parser.add_argument(
        "--request-signals",
        action="store_true",
        help="send request_started/request_finished around each call, as a request would",
    )
    parser.add_argument("--reconnect", action="store_true", help="'RECONNECT': True")
    parser.add_argument(
        "--decorator", action="store_true", help="wrap each call in @django_postgresql_reconnect"
    )
    args = parser.parse_args()
    if args.driver == "psycopg2":
        # Django picks its driver at import: hide psycopg 3 as tests/_driver.py does.
        sys.modules["psycopg"] = None  # type: ignore[assignment]
        sys.modules["psycopg_pool"] = None  # type: ignore[assignment]

    import django
    from django.conf import settings

    entry = {
        "ENGINE": args.engine,
        "NAME": args.dbname,
        "USER": args.user,
        "PASSWORD": "",
        "HOST": args.host,
        "PORT": args.port,
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": args.health_checks,
        "OPTIONS": {"sslmode": "disable", "application_name": args.name},
    }
    if args.reconnect:
        entry["RECONNECT"] = True
    settings.configure(DATABASES={"default": entry}, INSTALLED_APPS=[], USE_TZ=True)
    django.setup()

    from django.core.signals import request_finished, request_started
    from django.db import connection

    def call(number: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM bench_item WHERE worker = %s", [args.name])
            cursor.fetchone()
            cursor.execute(
                "INSERT INTO bench_item (worker, n) VALUES (%s, %s)", [args.name, number]
            )

    if args.decorator:
        import django_postgresql_reconnect

        call = django_postgresql_reconnect.decorator(call)

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    number = 0
    while not stop.is_set():
        number += 1
        started = time.monotonic()
        print(f"begin {started:.6f}", flush=True)
        outcome = "ok"
        try:
            if args.request_signals:
                request_started.send(sender=None)
            try:
                call(number)
            finally:
                if args.request_signals:
                    request_finished.send(sender=None)
        except Exception as error:
            outcome = type(error).__name__
        print(f"end {started:.6f} {time.monotonic():.6f} {outcome}", flush=True)
        time.sleep(PACE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
