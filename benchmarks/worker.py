"""The one worker loop of every fault experiment: threads that read and write, timed call by call.

Run by ``fault_lab.ColumnProcess`` (for the recovery, breaker and load benchmarks and the demo),
once per column, possibly in another virtualenv (1.2.0's), so it imports nothing but the
standard library, Django and the driver. Each thread has its own connection, as Django gives
each thread; a job, as a queue worker would run it, counts this worker's rows and then inserts
one with a unique token, both in autocommit (``--job read`` leaves out the INSERT).

Commands on stdin, one JSON object a line:

    {"cmd": "start", "phase": P, "alias": A}   start the threads on alias A, tagging rows with P
    {"cmd": "stop"}                             stop them; answered by {"event": "stopped", ...}
    {"cmd": "quit"}

Events and calls on stdout, one JSON object a line: ``{"event": "ready", ...}`` once set up,
then per call ``{"p": phase, "t": thread, "s": start, "e": end, "ok": bool, "w": INSERT sent,
"tok": token, "k": exception class, "m": its first line}`` (times from ``time.monotonic()``,
which is CLOCK_MONOTONIC and so shared by every process of the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

#: The table every worker writes, made by ``fault_lab.prepare_database``.
TABLE = "lab_call"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--column", required=True, help="the worker's name in its rows")
    parser.add_argument("--driver", choices=["psycopg", "psycopg2"], default="psycopg")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--job", choices=["read-write", "read"], default="read-write")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds between jobs")
    parser.add_argument(
        "--request-cycle",
        action="store_true",
        help="send request_started/request_finished around each job, as a request would",
    )
    parser.add_argument(
        "--decorator", action="store_true", help="wrap each job in @django_postgresql_reconnect"
    )
    parser.add_argument("--log", action="store_true", help="the engine's log on stderr")
    args = parser.parse_args()
    if args.driver == "psycopg2":
        # Django picks its driver at import: hide psycopg 3 as tests/_driver.py does.
        sys.modules["psycopg"] = None  # type: ignore[assignment]
        sys.modules["psycopg_pool"] = None  # type: ignore[assignment]
    out = Output()
    import logging

    if args.log:
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(message)s")
        logging.getLogger("django_postgresql_reconnect").setLevel(logging.INFO)
    else:
        logging.disable(logging.CRITICAL)  # 1.2.0 logs a traceback per reconnect
    try:
        import django
        from django.conf import settings

        settings.configure(
            DATABASES=json.loads(os.environ["LAB_DATABASES"]),
            INSTALLED_APPS=[],
            USE_TZ=True,
            LOGGING_CONFIG=None,
        )
        django.setup()
        if args.driver == "psycopg2":
            import psycopg2 as driver
        else:
            import psycopg as driver  # type: ignore[no-redef]
    except Exception as error:
        out.send({"event": "failed", "error": f"{type(error).__name__}: {error}"})
        return 1
    out.send(
        {
            "event": "ready",
            "django": django.get_version(),
            "driver": f"{driver.__name__} {driver.__version__.split()[0]}",
            "pid": os.getpid(),
        }
    )
    threads: list[JobThread] = []
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "start":
            threads = [
                JobThread(args, number, command["phase"], command["alias"], out)
                for number in range(args.threads)
            ]
            for thread in threads:
                thread.start()
        elif command["cmd"] == "stop":
            for thread in threads:
                thread.stopping.set()
            deadline = time.monotonic() + 2.0
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            hung = [t.in_call_since for t in threads if t.is_alive() and t.in_call_since]
            threads = []
            out.send({"event": "stopped", "hung_since": hung})
        elif command["cmd"] == "quit":
            break
    sys.stdout.flush()
    os._exit(0)  # without waiting for a thread hung on a dropped flow


class Output:
    """One JSON object a line on stdout, from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._lock:
            sys.stdout.write(line)
            sys.stdout.flush()


class JobThread(threading.Thread):
    """Run jobs on one alias until stopped, reporting every call."""

    def __init__(
        self, args: argparse.Namespace, number: int, phase: str, alias: str, out: Output
    ) -> None:
        super().__init__(name=f"job-{number}", daemon=True)
        self.args = args
        self.number = number
        self.phase = phase
        self.alias = alias
        self.out = out
        self.stopping = threading.Event()
        self.in_call_since: float | None = None
        self.insert_sent = False
        self.token = ""

    def run(self) -> None:
        from django.core.signals import request_finished, request_started
        from django.db import connections

        job: Callable[[], None] = self.job
        if self.args.decorator:
            import django_postgresql_reconnect  # 1.2.0: its documented per-task check

            job = django_postgresql_reconnect.decorator(job)
        try:
            while not self.stopping.is_set():
                self.token = uuid.uuid4().hex
                self.insert_sent = False
                started = self.in_call_since = time.monotonic()
                record: dict[str, Any] = {"p": self.phase, "t": self.number, "s": started}
                try:
                    if self.args.request_cycle:
                        request_started.send(sender=None)
                    try:
                        job()
                    finally:
                        if self.args.request_cycle:
                            request_finished.send(sender=None)
                except Exception as error:
                    lines = str(error).strip().splitlines()
                    record.update(ok=False, k=type(error).__name__, m=lines[0] if lines else "")
                else:
                    record["ok"] = True
                record.update(e=time.monotonic(), w=self.insert_sent, tok=self.token)
                self.in_call_since = None
                self.out.send(record)
                self.stopping.wait(self.args.pace)
        finally:
            with contextlib.suppress(Exception):
                connections[self.alias].close()

    def job(self) -> None:
        from django.db import connections

        worker = self.args.column
        with connections[self.alias].cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM {TABLE} WHERE worker = %s AND phase = %s",
                [worker, self.phase],
            )
            cursor.fetchone()
            if self.args.job == "read":
                return
            self.insert_sent = True
            cursor.execute(
                f"INSERT INTO {TABLE} (worker, phase, token) VALUES (%s, %s, %s)",
                [worker, self.phase, self.token],
            )


if __name__ == "__main__":
    raise SystemExit(main())
