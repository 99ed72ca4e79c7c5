"""The fault lab of every recovery experiment: a server, a proxy per column, faults, columns.

Shared by ``recovery.py``, ``breaker.py`` and ``load.py`` and by the demo (``demo/run.py``):
one fault list, one worker loop (``worker.py``), one 1.2.0 environment. ``experiment.py``
runs the phases and scores them.

The lab is one PostgreSQL server with a ``FaultProxy`` per column in front of it (so a reset
hits every column's connections), and, as root, a second server behind a ``SilentLink``
whose flows can vanish without a reset. A column is one worker process: Django with one
backend and one way of calling it (stock, stock with health checks, 1.2.0, this engine).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "worker.py"
DATABASE = "lab"

STOCK_BACKEND = "django.db.backends.postgresql"
ENGINE_BACKEND = "django_postgresql_reconnect.backend"

# -- the 1.2.0 environment ----------------------------------------------------------------------

#: django-postgresql-reconnect 1.2.0 has this package's name, needs psycopg2 and Django < 6:
#: it runs in a virtualenv of its own, made once and shared by the demo and the benchmarks.
V120_DIR = ROOT / ".bench-venvs" / "v120"
V120_PYTHON = V120_DIR / "bin" / "python"
V120_REQUIREMENTS = [
    "django-postgresql-reconnect==1.2.0",
    "Django>=4.2,<6",
    "psycopg2-binary>=2.9",
]
V120_STAMP = V120_DIR / "lab-installed.json"
INSTALL_TIMEOUT = 300


def prepare_v120() -> tuple[bool, str]:
    """Make sure the 1.2.0 environment exists; return (ready, what happened or why not)."""
    where = V120_DIR.relative_to(ROOT)
    if _read_json(V120_STAMP) == V120_REQUIREMENTS and V120_PYTHON.exists():
        return True, f"reused {where}"
    started = time.monotonic()
    V120_DIR.parent.mkdir(exist_ok=True)
    try:
        for command in (
            [sys.executable, "-m", "venv", "--clear", str(V120_DIR)],
            [
                str(V120_PYTHON),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *V120_REQUIREMENTS,
            ],
        ):
            subprocess.run(
                command, check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
            )
    except subprocess.CalledProcessError as error:
        lines = (error.stderr or error.stdout or "").strip().splitlines()
        return False, f"could not install 1.2.0: {lines[-1] if lines else error}"
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"could not install 1.2.0: {error}"
    V120_STAMP.write_text(json.dumps(V120_REQUIREMENTS))
    return True, f"installed into {where} in {time.monotonic() - started:.0f} s"


def v120_ready() -> bool:
    return _read_json(V120_STAMP) == V120_REQUIREMENTS and V120_PYTHON.exists()


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- columns ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One way of running Django against the server: a backend and how it is called."""

    key: str
    label: str
    backend: str
    health_checks: bool = False
    request_cycle: bool = False
    legacy: bool = False  # 1.2.0: its own venv, RECONNECT=True, its decorator on each job
    reconnect: dict[str, Any] | None = None  # the engine's RECONNECT, when not the default

    def describe(self) -> str:
        return COLUMN_TEXTS[self.key]


STOCK = Column("stock", "stock", STOCK_BACKEND)
STOCK_HC = Column(
    "stock_hc", "stock + health checks", STOCK_BACKEND, health_checks=True, request_cycle=True
)
V120 = Column("v120", "1.2.0", ENGINE_BACKEND, legacy=True)
ENGINE = Column("engine", "engine", ENGINE_BACKEND)

COLUMN_TEXTS = {
    "stock": "Django's PostgreSQL backend in a plain loop, like a Celery worker or a "
    "management command: nothing in Django replaces a broken connection outside the "
    "request cycle",
    "stock_hc": "CONN_HEALTH_CHECKS = True, with request_started and request_finished sent "
    "around each job to emulate a request: Django runs its health check only then",
    "v120": "django-postgresql-reconnect 1.2.0, RECONNECT = True and @decorator on each job, "
    "in its own virtualenv (psycopg2 only)",
    "engine": "this package with its defaults, in a plain loop: no middleware or decorator",
}


def columns_for(driver: str, wanted: list[str], *, v120: bool) -> list[Column]:
    """The columns named in ``wanted``; 1.2.0 only with psycopg2 and when ``v120`` is ready."""
    known = {c.key: c for c in (STOCK, STOCK_HC, V120, ENGINE)}
    found = []
    for key in wanted:
        if key == "v120" and (driver != "psycopg2" or not v120):
            continue
        found.append(known[key])
    return found


# -- the lab ------------------------------------------------------------------------------------


@dataclass
class Lab:
    """The server, a proxy per column and, as root, a server behind a SilentLink."""

    server: Any  # PostgresServer
    proxies: dict[str, Any] = field(default_factory=dict)  # column key -> FaultProxy
    silent_link: Any = None
    silent_server: Any = None
    outage: float = 3.0  # seconds the "outage" fault keeps the server down

    @classmethod
    def open(cls, column_keys: list[str], *, silent: bool = False, outage: float = 3.0) -> Lab:
        """Start the server and the proxies (and the silent link when asked and possible)."""
        from django_postgresql_reconnect.testing import FaultProxy, PostgresServer

        lab = cls(PostgresServer(), outage=outage)
        try:
            lab.server.start()
            prepare_database(lab.server)
            for key in column_keys:
                lab.proxies[key] = FaultProxy(lab.server.host, lab.server.port)
                lab.proxies[key].start()
            if silent:
                lab.open_silent_link()
        except BaseException:
            lab.close()
            raise
        return lab

    def open_silent_link(self) -> str | None:
        """Start the server behind a SilentLink; return why not when it cannot run here."""
        if os.geteuid() != 0:
            return "needs root (a network namespace and nftables)"
        try:
            from django_postgresql_reconnect.testing import SilentLink

            self.silent_link = SilentLink()
            self.silent_server = self.silent_link.start_server()
            prepare_database(self.silent_server)
        except Exception as error:  # no ip/nft, no netns support in this container...
            if self.silent_link is not None:
                self.silent_link.close()
            self.silent_link = self.silent_server = None
            return f"SilentLink unavailable here: {str(error).splitlines()[0]}"
        return None

    def databases(self, column: Column) -> dict[str, dict[str, Any]]:
        """The column's DATABASES: its key through its proxy, ``<key>_silent`` past the link."""
        proxy = self.proxies[column.key]
        found = {
            "default": {},
            column.key: self.entry(column, proxy.host, proxy.port, self.server),
        }
        if self.silent_server is not None:
            server = self.silent_server
            found[f"{column.key}_silent"] = self.entry(column, server.host, server.port, server)
        return found

    def entry(self, column: Column, host: str, port: int, server: Any) -> dict[str, Any]:
        """A DATABASES entry with persistent connections, as a production worker has."""
        entry: dict[str, Any] = {
            "ENGINE": column.backend,
            "NAME": DATABASE,
            "USER": server.user,
            "PASSWORD": "",
            "HOST": host,
            "PORT": str(port),
            "CONN_MAX_AGE": None,
            "CONN_HEALTH_CHECKS": column.health_checks,
            "OPTIONS": {"sslmode": "disable", "application_name": f"lab-{column.key}"},
        }
        if column.legacy:
            entry["RECONNECT"] = True
        elif column.reconnect is not None:
            entry["RECONNECT"] = column.reconnect
        return entry

    def heal(self) -> None:
        """Undo what a phase left: disarmed proxies, the server running."""
        for proxy in self.proxies.values():
            proxy.heal()  # a swallow that found no INSERT must not leak into the next phase
        if not self.server.is_running:
            self.server.start()

    def close(self) -> None:
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                proxy.stop()
        if self.silent_link is not None:
            self.silent_link.close()
        self.server.close()


def prepare_database(server: Any) -> None:
    server.create_database(DATABASE)
    # No unique constraint on token, on purpose: a write applied twice shows as two rows.
    server.execute(
        "CREATE TABLE lab_call (id bigserial PRIMARY KEY, worker text NOT NULL,"
        " phase text NOT NULL, token text NOT NULL, created timestamptz NOT NULL DEFAULT now());"
        " CREATE INDEX ON lab_call (worker, phase)",
        dbname=DATABASE,
    )


# -- faults -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault: what it does to the lab, and against which server it runs."""

    name: str
    title: str
    what: str
    inject: Callable[[Lab], None]
    silent: bool = False  # against the server behind the SilentLink (root only)
    watch: float = 0.0  # watch at least this long after it (seconds)


def _terminate(lab: Lab) -> None:
    lab.server.terminate_backends()  # every client session, as a crash or failover would


def _restart(lab: Lab) -> None:
    lab.server.restart("fast")


def _reset(lab: Lab) -> None:
    for proxy in lab.proxies.values():
        proxy.reset_all()


def _outage(lab: Lab) -> None:
    lab.server.stop("fast")
    time.sleep(lab.outage)
    lab.server.start()


def _lost_reply(lab: Lab) -> None:
    for proxy in lab.proxies.values():
        proxy.swallow_reply("INSERT")


def _silent_drop(lab: Lab) -> None:
    assert lab.silent_link is not None and lab.silent_server is not None
    rows = lab.silent_server.execute(
        "SELECT client_port FROM pg_stat_activity"
        " WHERE application_name LIKE 'lab-%' AND client_port > 0"
    )
    for (port,) in rows:
        lab.silent_link.drop_flow(int(port))


#: The engine finds a flow that vanished mid-statement through tcp_user_timeout (20 s by
#: default, see TCP_DEFAULTS), so that phase lasts long enough to watch it recover.
SILENT_WATCH = 24.0

#: Every fault, in the order they are injected. The phase's recovery is timed from the end
#: of the injection: the server back up for a restart or an outage, the fault in place else.
FAULTS = [
    Fault(
        "terminate", "backend terminated", "pg_terminate_backend() on every session", _terminate
    ),
    Fault("restart", "server restarted", "pg_ctl restart -m fast", _restart),
    Fault("reset", "connection reset", "the proxy sends RST on every connection", _reset),
    Fault("outage", "outage", "server stopped, started again after the outage", _outage),
    Fault(
        "lost-reply",
        "lost INSERT reply",
        "the INSERT runs and commits, its reply never arrives, then RST",
        _lost_reply,
    ),
    Fault(
        "silent-drop",
        "silently dropped flow",
        "every packet of the open connections vanishes, without RST or FIN; root only",
        _silent_drop,
        silent=True,
        watch=SILENT_WATCH,
    ),
]
BY_NAME = {fault.name: fault for fault in FAULTS}


def fault_title(fault: Fault, lab_outage: float) -> str:
    return f"{lab_outage:.0f} s outage" if fault.name == "outage" else fault.title


# -- the worker processes -----------------------------------------------------------------------


class ColumnProcess:
    """The parent's side of one ``worker.py``: start it, start and stop its threads per phase."""

    READY_TIMEOUT = 60.0

    def __init__(
        self,
        column: Column,
        databases: dict[str, dict[str, Any]],
        *,
        driver: str,
        threads: int = 1,
        job: str = "read-write",
        request_cycle: bool = False,
        on_log: Callable[[str, str], None] | None = None,
    ) -> None:
        self.column = column
        self.on_log = on_log
        self.calls: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self.version = ""
        python = str(V120_PYTHON) if column.legacy else sys.executable
        command = [
            python,
            str(WORKER),
            f"--column={column.key}",
            f"--driver={'psycopg2' if column.legacy else driver}",
            f"--threads={threads}",
            f"--job={job}",
        ]
        if column.request_cycle or request_cycle:
            command.append("--request-cycle")
        if column.legacy:
            command.append("--decorator")
        if on_log is not None:
            command.append("--log")
        env = {**os.environ, "LAB_DATABASES": json.dumps(databases)}
        if not column.legacy:
            # This checkout, even when the venv holds another copy; never in 1.2.0's.
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()

    def wait_ready(self) -> None:
        ready = self._wait("ready", self.READY_TIMEOUT)
        self.version = f"Django {ready['django']}, {ready['driver']}"

    def begin(self, phase: str, alias: str) -> None:
        self._send({"cmd": "start", "phase": phase, "alias": alias})

    def end(self) -> list[float]:
        """Stop the phase's threads; return when each call still running (hung) began."""
        self._send({"cmd": "stop"})
        hung: list[float] = self._wait("stopped", 10.0)["hung_since"]
        return hung

    def of(self, phase: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.calls[phase])

    def counts(self, phase: str) -> tuple[int, int]:
        with self._lock:
            calls = self.calls[phase]
            return len(calls), sum(not c["ok"] for c in calls)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._send({"cmd": "quit"})
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            self.process.kill()  # a thread hung on a silently dropped flow keeps it alive
            self.process.wait()

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _wait(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"worker {self.column.key} did not answer {event!r}: " + "\n".join(self.stderr)
                ) from None
            if message.get("event") == "failed":
                raise RuntimeError(f"worker {self.column.key} failed: {message['error']}")
            if message.get("event") == event:
                return message

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "event" in message:
                self._events.put(message)
            else:
                with self._lock:
                    self.calls[message["p"]].append(message)
        self._events.put({"event": "failed", "error": "exited: " + "\n".join(self.stderr)})

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line.rstrip())
            if self.on_log is not None:
                self.on_log(self.column.label, line.rstrip())


def start_columns(
    lab: Lab, columns: list[Column], *, driver: str, **options: Any
) -> list[ColumnProcess]:
    """One worker process per column, ready to run jobs; closed again if one fails."""
    processes: list[ColumnProcess] = []
    try:
        for column in columns:
            processes.append(
                ColumnProcess(column, lab.databases(column), driver=driver, **options)
            )
        for process in processes:
            process.wait_ready()
    except BaseException:
        for process in processes:
            process.close()
        raise
    return processes
