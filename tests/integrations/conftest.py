"""What the integration scenarios share: the project's settings for a child process, and
servers started for real in one."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_postgresql_reconnect.testing import FaultProxy, PostgresServer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENGINE = "django_postgresql_reconnect.backend"


class Project:
    """The environment of a child process that runs tests/integrations/project."""

    def __init__(self, server: PostgresServer, proxy: FaultProxy) -> None:
        self.server = server
        self.proxy = proxy

    def entry(self, *, via_proxy: bool = True, **overrides: Any) -> dict[str, Any]:
        """A DATABASES entry of this engine for the ``app`` database, through the proxy."""
        host, port = (self.proxy.host, self.proxy.port) if via_proxy else (None, None)
        entry = self.server.database_settings(engine=ENGINE, name="app", host=host, port=port)
        entry.update({"CONN_MAX_AGE": None, "OPTIONS": {"sslmode": "disable"}})
        entry.update(overrides)
        return entry

    def env(
        self, databases: dict[str, dict[str, Any]] | None = None, **extra: str
    ) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.integrations.project.settings",
            "DPR_SITE_DATABASES": json.dumps(databases or {"default": self.entry()}),
            "PYTHONPATH": str(ROOT),
            **extra,
        }


@pytest.fixture
def project(server: PostgresServer, proxy: FaultProxy) -> Project:
    return Project(server, proxy)


def wait_until_proxy_closed(proxy: FaultProxy, timeout: float = 5.0) -> None:
    """Wait until the proxy closed every client connection (after the server ended them), so
    that the hang-up is waiting in the sockets of connections held by other threads."""
    deadline = time.monotonic() + timeout
    while any(not connection.closed for connection in proxy.connections):
        if time.monotonic() > deadline:
            raise AssertionError(f"the proxy still has open connections after {timeout} s")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A server process on 127.0.0.1:``port``, and plain HTTP requests to it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self._kept: str | None = None

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, Any]:
        """GET ``path``; (status, decoded JSON or text), or (0, reason) when no answer came."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            return 0, f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body.decode(errors="replace")[:300]

    def output(self) -> str:
        """What the server wrote (also after it stopped)."""
        if self._kept is not None:
            return self._kept
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(
    argv: list[str], port: int, env: dict[str, str], ready: str = "/healthz"
) -> Iterator[Served]:
    """Start ``argv`` (a server listening on ``port``), wait until ``ready`` answers 200."""
    with tempfile.TemporaryDirectory(prefix="dpr-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        served = Served(process, port, log)
        try:
            deadline = time.monotonic() + 20
            while served.get(ready, timeout=2)[0] != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{argv[0]} did not start:\n{served.output()[-3000:]}")
                time.sleep(0.05)
            yield served
        finally:
            # The server and its workers are a process group of their own; nothing of theirs
            # needs a graceful stop, which takes gunicorn a second or two.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            served._kept = served.output()
