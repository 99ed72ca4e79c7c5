"""The third column: django-postgresql-reconnect 1.2.0, in an environment of its own.

1.2.0 needs psycopg2 and Django < 6, and has the same package name as this one, so it cannot
share the demo's process. ``prepare()`` makes ``.demo-venvs/v120`` (once); ``LegacyEngine``
runs this file there as a child that drives the same ``workload.Worker`` and streams each call
as a JSON line. Clocks agree: ``time.monotonic()`` is the system-wide CLOCK_MONOTONIC on Linux.

Protocol on the child's stdin, one JSON object a line: ``{"cmd": "start", "phase", "alias"}``,
``{"cmd": "stop"}`` (answered by ``{"event": "stopped", "hung_since"}``), ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".demo-venvs" / "v120"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ["django-postgresql-reconnect==1.2.0", "Django>=4.2,<6", "psycopg2-binary>=2.9"]
STAMP = VENV / "demo-installed.json"
INSTALL_TIMEOUT = 300
READY_TIMEOUT = 30.0
LABEL = "1.2.0"
APPLICATION_NAME = "demo-1.2.0"


def prepare() -> tuple[bool, str]:
    """Make sure the 1.2.0 environment exists; return (ready, what happened or why not)."""
    if _stamp() == REQUIREMENTS and PYTHON.exists():
        return True, f"reused {VENV.relative_to(HERE.parent)}"
    started = time.monotonic()
    VENV.parent.mkdir(exist_ok=True)
    # The environments are the demo's cache, never the project's files.
    (VENV.parent / ".gitignore").write_text("*\n")
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            check=True,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        subprocess.run(
            [
                str(PYTHON),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *REQUIREMENTS,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.CalledProcessError as error:
        lines = (error.stderr or error.stdout or "").strip().splitlines()
        return False, f"could not install 1.2.0: {lines[-1] if lines else error}"
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"could not install 1.2.0: {error}"
    STAMP.write_text(json.dumps(REQUIREMENTS))
    return (
        True,
        f"installed into {VENV.relative_to(HERE.parent)} in {time.monotonic() - started:.0f} s",
    )


def _stamp() -> object:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None


class LegacyEngine:
    """The parent's side: start the child, start and stop its worker per phase."""

    label = LABEL

    def __init__(self, databases: dict[str, dict[str, Any]], emit: Any, request_cycle: bool):
        self.databases = databases
        self.emit = emit
        self.request_cycle = request_cycle
        self.version = ""
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self.stderr = ""

    def start(self) -> None:
        env = {**os.environ, "DEMO_DATABASES": json.dumps(self.databases)}
        env["DEMO_REQUEST_CYCLE"] = "1" if self.request_cycle else ""
        self._process = subprocess.Popen(
            [str(PYTHON), str(Path(__file__).resolve()), "child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,
            env=env,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self._process.stderr,), daemon=True).start()
        ready = self._wait("ready", READY_TIMEOUT)
        self.version = f"Django {ready['django']}, {ready['driver']}"

    def begin_phase(self, phase: str, alias: str) -> None:
        self._send({"cmd": "start", "phase": phase, "alias": alias})

    def end_phase(self) -> float | None:
        self._send({"cmd": "stop"})
        return self._wait("stopped", 10.0)["hung_since"]  # type: ignore[no-any-return]

    def close(self) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._send({"cmd": "quit"})
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            process.kill()  # a worker hung on a silently dropped flow keeps it alive
            process.wait()

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()

    def _wait(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"the 1.2.0 child did not answer {event!r}: {self.stderr[-500:]}"
                ) from None
            if message.get("event") == "failed":
                raise RuntimeError(f"the 1.2.0 child failed: {message['error']}")
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
                self.emit(message)
        self._events.put({"event": "failed", "error": f"exited: {self.stderr[-500:]}"})

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr = (self.stderr + line)[-4000:]


def child() -> int:
    """The child's side: Django with 1.2.0, driven by commands on stdin."""
    import logging

    logging.disable(logging.CRITICAL)  # 1.2.0 logs a traceback per reconnect
    out_lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    try:
        from workload import Worker, configure

        configure(json.loads(os.environ["DEMO_DATABASES"]))
        import django
        import psycopg2

        import django_postgresql_reconnect  # 1.2.0: its documented per-task check
    except Exception as error:
        send({"event": "failed", "error": f"{type(error).__name__}: {error}"})
        return 1
    send(
        {
            "event": "ready",
            "django": django.get_version(),
            "driver": f"psycopg2 {psycopg2.__version__.split()[0]}",
        }
    )
    request_cycle = bool(os.environ.get("DEMO_REQUEST_CYCLE"))
    worker: Worker | None = None
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "start":
            worker = Worker(
                LABEL,
                command["alias"],
                command["phase"],
                send,
                request_cycle=request_cycle,
                guard=django_postgresql_reconnect.decorator,
            )
            worker.start()
        elif command["cmd"] == "stop":
            hung = worker.stop() if worker is not None else None
            worker = None
            send({"event": "stopped", "hung_since": hung})
        elif command["cmd"] == "quit":
            break
    os._exit(0)  # without waiting for a worker hung on a dropped flow


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        sys.exit(child())
    print("run by demo/run.py --with-1.2.0; not meant to be run alone", file=sys.stderr)
    sys.exit(2)
