"""Recovery from real faults: failed calls and time to recover, this engine against the others.

Each column is a worker process (``recovery_worker.py``) running a loop of one read and one
write, every 20 ms, through its own ``FaultProxy`` to one throwaway server:

- stock: Django's PostgreSQL backend in a plain loop (a worker, a management command);
- stock + health checks: the same with CONN_HEALTH_CHECKS, and with request_started and
  request_finished sent around each call to emulate a request cycle, since Django runs its
  health check only then;
- 1.2.0: django-postgresql-reconnect 1.2.0 with @decorator on each call, from its own
  virtualenv (``.bench-venvs/v120``); psycopg2 only, as 1.2.0 is; left out when not installed;
- engine: this package with its defaults, in a plain loop.

The faults come one after another, each followed by a quiet window: a terminated backend,
a server restart, a TCP reset at the proxy, a 3 s outage (the server stopped, then started),
and, as root, a silent drop: a firewall that forgets the flows (``SilentLink.drop_flow``) with
the workers connected straight to a server in a network namespace.

For each fault and column: the calls that raised, and the time from the end of the fault to
the first successful call after the last failure ("never" when the window ended on a failure
or a call still hanging).

    python benchmarks/recovery.py [--driver psycopg|psycopg2] [--json] [--no-silent]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "recovery_worker.py"
V120_PYTHON = ROOT / ".bench-venvs" / "v120" / "bin" / "python"

#: Seconds of calls after each fault before the next one.
WINDOW = 2.0
OUTAGE = 3.0
#: A silent drop is found by timeouts (tcp_user_timeout is 20 s in the engine's defaults).
SILENT_WINDOW = 24.0
WARM_CALLS = 20


@dataclass
class Column:
    key: str
    label: str
    python: str
    flags: list[str]
    engine: str


def columns(driver: str) -> list[Column]:
    here = sys.executable
    stock = "django.db.backends.postgresql"
    engine = "django_postgresql_reconnect.backend"
    found = [
        Column("stock", "stock", here, [], stock),
        Column(
            "stock_hc",
            "stock + health checks",
            here,
            ["--health-checks", "--request-signals"],
            stock,
        ),
    ]
    if driver == "psycopg2" and V120_PYTHON.exists():
        found.append(
            Column("v120", "1.2.0", str(V120_PYTHON), ["--reconnect", "--decorator"], engine)
        )
    found.append(Column("engine", "engine", here, [], engine))
    return found


@dataclass
class Worker:
    column: Column
    process: subprocess.Popen[str]
    calls: list[tuple[float, float, str]] = field(default_factory=list)
    in_flight: float | None = None
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            if parts[:1] == ["begin"]:
                self.in_flight = float(parts[1])
            elif parts[:1] == ["end"]:
                self.calls.append((float(parts[1]), float(parts[2]), parts[3]))
                self.in_flight = None

    def read_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())


def start_workers(
    cols: list[Column], driver: str, where: dict[str, tuple[str, int]]
) -> list[Worker]:
    workers = []
    for column in cols:
        host, port = where[column.key]
        command = [
            column.python,
            str(WORKER),
            f"--name=bench-{column.key}",
            f"--engine={column.engine}",
            f"--host={host}",
            f"--port={port}",
            f"--driver={'psycopg2' if column.key == 'v120' else driver}",
            *column.flags,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")} if column.key != "v120" else None
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        worker = Worker(column, process)
        threading.Thread(target=worker.read, daemon=True).start()
        threading.Thread(target=worker.read_errors, daemon=True).start()
        workers.append(worker)
    deadline = time.monotonic() + 30
    while any(sum(c[2] == "ok" for c in w.calls) < WARM_CALLS for w in workers):
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(
                    f"worker {worker.column.key} exited: " + "\n".join(worker.stderr)
                )
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not warm up in 30 s")
        time.sleep(0.05)
    return workers


def stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.stdin is not None:
            with contextlib.suppress(OSError):
                worker.process.stdin.close()
    for worker in workers:
        try:
            worker.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            worker.process.kill()  # hung in a call that only the kernel's timers would end
            worker.process.wait()


def outcome(worker: Worker, start: float, end: float, until: float) -> dict[str, Any]:
    """Failed calls in [start, until) and seconds from ``end`` to recovery."""
    calls = [c for c in worker.calls if start <= c[1] < until]
    failed = [c for c in calls if c[2] != "ok"]
    errors = collections.Counter(c[2] for c in failed)
    last_failure = max((c[1] for c in failed), default=start)
    recovered = next(
        (c[1] for c in calls if c[2] == "ok" and c[1] >= max(end, last_failure)), None
    )
    in_flight = worker.in_flight
    hung = in_flight is not None and in_flight < until - 1.0
    if recovered is None or (calls and calls[-1][2] != "ok") or hung:
        recovery = None
    else:
        recovery = max(0.0, recovered - end)
    return {"failed": len(failed), "errors": dict(errors), "recovery_s": recovery, "hung": hung}


def run_proxy_faults(driver: str, cols: list[Column]) -> dict[str, dict[str, Any]]:
    from django_postgresql_reconnect.testing import FaultProxy, PostgresServer

    results: dict[str, dict[str, Any]] = {}
    with PostgresServer() as server:
        prepare(server)
        proxies = {c.key: FaultProxy(server.host, server.port) for c in cols}
        for proxy in proxies.values():
            proxy.start()
        workers = start_workers(cols, driver, {k: (p.host, p.port) for k, p in proxies.items()})
        try:

            def terminate() -> None:
                server.terminate_backends()

            def restart() -> None:
                server.restart("fast")

            def reset() -> None:
                for proxy in proxies.values():
                    proxy.reset_all()

            def outage() -> None:
                server.stop("fast")
                time.sleep(OUTAGE)
                server.start()

            faults = [
                ("backend terminated", terminate),
                ("server restart", restart),
                ("TCP reset", reset),
                (f"{OUTAGE:.0f} s outage", outage),
            ]
            for name, inject in faults:
                start = time.monotonic()
                inject()
                end = time.monotonic()
                time.sleep(WINDOW)
                until = time.monotonic()
                results[name] = {w.column.key: outcome(w, start, end, until) for w in workers}
        finally:
            stop_workers(workers)
            for proxy in proxies.values():
                proxy.stop()
    return results


def run_silent_drop(driver: str, cols: list[Column]) -> dict[str, dict[str, Any]]:
    from django_postgresql_reconnect.testing import SilentLink

    with SilentLink() as link:
        server = link.start_server()
        prepare(server)
        workers = start_workers(cols, driver, {c.key: (link.host, link.port) for c in cols})
        try:
            rows = server.execute(
                "SELECT client_port FROM pg_stat_activity WHERE application_name LIKE 'bench-%'"
            )
            start = time.monotonic()
            for (port,) in rows:
                link.drop_flow(int(port))
            end = time.monotonic()
            time.sleep(SILENT_WINDOW)
            until = time.monotonic()
            result = {w.column.key: outcome(w, start, end, until) for w in workers}
        finally:
            stop_workers(workers)
    return {"silent drop (flow forgotten)": result}


def prepare(server: Any) -> None:
    server.start()
    server.create_database("bench")
    server.execute(
        "CREATE TABLE bench_item (id bigserial PRIMARY KEY, worker text, n int)", dbname="bench"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default=os.environ.get("DPR_TEST_DRIVER", "psycopg"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-silent", action="store_true", help="skip the silent drop")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import logging

    # The proxy logs every refused upstream connection during the outage: not news here.
    logging.getLogger("django_postgresql_reconnect.testing").setLevel(logging.CRITICAL)
    cols = columns(args.driver)
    results = run_proxy_faults(args.driver, cols)
    silent = "skipped"
    if args.no_silent:
        silent = "skipped (--no-silent)"
    elif os.geteuid() != 0:
        silent = "skipped (needs root)"
    else:
        results.update(run_silent_drop(args.driver, cols))
        silent = "run"
    report = {
        "driver": args.driver,
        "columns": {c.key: c.label for c in cols},
        "v120": "run" if any(c.key == "v120" for c in cols) else "not run",
        "silent_drop": silent,
        "window_s": WINDOW,
        "silent_window_s": SILENT_WINDOW,
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"driver: {args.driver}; failed calls / seconds to recover")
    for fault, by_column in results.items():
        cells = []
        for key, result in by_column.items():
            seconds = result["recovery_s"]
            cells.append(
                f"{key}: {result['failed']} / {'never' if seconds is None else f'{seconds:.2f}'}"
            )
        print(f"  {fault:<30} " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
