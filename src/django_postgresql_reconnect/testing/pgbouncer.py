"""PgBouncer in front of a throwaway server: the pooler that production puts in between.

A pooler adds faults of its own that a test should meet for real: it restarts and drops
every client, it pauses and holds queries during a server restart, it hands a transaction
to a different server connection than the last one. ``PgBouncer`` runs the system's
``pgbouncer`` program (Debian: ``apt-get install pgbouncer``) with a configuration written
for one ``PostgresServer``: every database of that server, its user and password, on a port
of its own. The admin console (PAUSE, RESUME, RECONNECT, SHOW ...) is reached with the
server's ``psql`` over a Unix socket in the bouncer's private directory.

Standard library only, plus ``pgbouncer`` and the PostgreSQL binaries.
"""

from __future__ import annotations

import atexit
import csv
import logging
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from . import _logs, _pg_programs, _pgbouncer_daemon, _privileges
from ._lifecycle import LabTool, close_once
from ._pgbouncer_daemon import BASE_SETTINGS as BASE_SETTINGS
from ._pgbouncer_daemon import BINARY_ENV as BINARY_ENV
from ._pgbouncer_daemon import SIGQUIT_SINCE as SIGQUIT_SINCE
from ._pgbouncer_daemon import START_TIMEOUT as START_TIMEOUT
from ._pgbouncer_daemon import STOP_TIMEOUT as STOP_TIMEOUT
from ._pgbouncer_daemon import find_pgbouncer as find_pgbouncer
from ._ports import PORT_ATTEMPTS as PORT_ATTEMPTS
from ._ports import free_port
from ._quoting import conninfo
from .errors import PgBouncerError
from .server import PostgresServer

__all__ = ["PgBouncer", "PgBouncerError", "find_pgbouncer"]

logger = logging.getLogger("django_postgresql_reconnect.testing")

PoolMode = Literal["session", "transaction", "statement"]

#: Seconds an admin command may take; PAUSE may wait longer for sessions to end (pause()).
CONSOLE_TIMEOUT = 10.0
#: The console's psql: no psqlrc, quiet, CSV with a header row, stop on error.
CONSOLE_PSQL_FLAGS = ("-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1")


class PgBouncer(LabTool):
    """pgbouncer in ``pool_mode`` in front of ``server``, listening on ``host:port``.

    >>> with PgBouncer(server, pool_mode="transaction") as bouncer:
    ...     DATABASES = {"default": bouncer.database_settings(name="app")}
    ...     bouncer.restart()  # every client connection is dropped
    """

    def __init__(
        self,
        server: PostgresServer,
        *,
        pool_mode: PoolMode = "session",
        host: str = "127.0.0.1",
        port: int | None = None,
        upstream_host: str | None = None,
        upstream_port: int | None = None,
        settings: Mapping[str, str] | None = None,
        binary: str | Path | None = None,
    ) -> None:
        if pool_mode not in get_args(PoolMode):
            raise ValueError(f"pool_mode must be session, transaction or statement: {pool_mode!r}")
        found = Path(binary) if binary is not None else find_pgbouncer()
        if found is None:
            raise PgBouncerError(
                "pgbouncer is not installed: apt-get install pgbouncer (or your system's "
                f"package), or set {BINARY_ENV} to the program"
            )
        self.binary = found
        self.server = server
        self.pool_mode = pool_mode
        self.host = host
        #: Where pgbouncer connects: the server, or a FaultProxy in front of it.
        self.upstream_host = upstream_host or server.host
        self.upstream_port = upstream_port or server.port
        self.settings = dict(settings or {})
        # pgbouncer refuses to run as root: as root, the servers' service account runs it.
        self._account = _privileges.daemon_account()
        self._port_is_ours = port is None
        self._port = port if port is not None else free_port(host)
        self._base = _privileges.make_private_dir("dpr-pgbouncer-", self._account)
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        atexit.register(self.close)

    # -- where things are ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients connect to (kept across restarts)."""
        return self._port

    @property
    def logfile(self) -> Path:
        """pgbouncer's log: every login, every server connection, and why each one closed."""
        return self._base / "pgbouncer.log"

    @property
    def config_file(self) -> Path:
        return self._base / "pgbouncer.ini"

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Write the configuration and start pgbouncer; return once it listens."""
        if self._closed:
            raise PgBouncerError("this PgBouncer was closed; make a new one")
        if self.is_running:
            return
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._write_config()
            offset = _logs.size(self.logfile)
            self._process = self._spawn()
            problem = self._wait_until_listening(offset)
            if problem is None:
                self._port_is_ours = False  # clients have seen it: keep it from now on
                logger.info(
                    "pgbouncer (%s pooling) listening on %s:%d for %s:%d",
                    self.pool_mode,
                    self.host,
                    self._port,
                    self.upstream_host,
                    self.upstream_port,
                )
                return
            self._kill()
            if self._port_is_ours and attempt < PORT_ATTEMPTS and problem == "port taken":
                self._port = free_port(self.host)
                continue
            log = _logs.read_from(self.logfile, offset)
            raise PgBouncerError(
                f"pgbouncer did not start on {self.host}:{self._port} ({problem})\n"
                f"{_logs.last_lines(self.logfile, log)}"
            )

    def stop(self) -> None:
        """Shut pgbouncer down at once: every client and server connection is closed."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(_pgbouncer_daemon.immediate_shutdown_signal(self.binary))
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("pgbouncer on port %d ignored its shutdown signal", self._port)
                self._kill()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port: a pooler restart, as clients see it.

        Every client connection and every server connection is lost; new clients connect.
        """
        self.stop()
        self.start()

    @close_once
    def close(self) -> None:
        """Stop pgbouncer and delete its directory; safe to call twice."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self._base, ignore_errors=True)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.is_running else "stopped"
        return (
            f"<PgBouncer {self.pool_mode} {self.host}:{self._port} -> "
            f"{self.upstream_host}:{self.upstream_port} {state}>"
        )

    # -- the admin console -----------------------------------------------------------------

    def console(self, command: str, *, timeout: float = CONSOLE_TIMEOUT) -> list[dict[str, str]]:
        """Run one admin console command (``SHOW POOLS``, ``KILL app`` ...); return its rows.

        Each row maps a column name to its text, NULL to ``""``.
        """
        env = {"PGCONNECT_TIMEOUT": "5"}
        if self.server.password:
            env["PGPASSWORD"] = self.server.password
        try:
            result = _pg_programs.psql(
                self.server.bindir,
                flags=CONSOLE_PSQL_FLAGS,
                socket_dir=self._base,
                port=self._port,
                user=self.server.user,
                dbname="pgbouncer",
                command=command,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise PgBouncerError(f"{command!r} took over {timeout} s on {self!r}") from error
        if result.returncode != 0:
            raise PgBouncerError(f"{command!r} failed on {self!r}: {result.stderr.strip()}")
        return list(csv.DictReader(result.stdout.splitlines()))

    def pause(self, *, timeout: float = CONSOLE_TIMEOUT) -> None:
        """PAUSE: release every server connection; clients' queries wait until ``resume()``.

        It returns once pgbouncer has let go of every server connection: at once in
        transaction pooling between transactions, but in session pooling only when every
        client holding one has disconnected. Past ``timeout`` it raises, and pgbouncer stays
        pausing until ``resume()``.
        """
        try:
            self.console("PAUSE", timeout=timeout)
        except PgBouncerError as error:
            raise PgBouncerError(
                f"PAUSE did not complete within {timeout} s on {self!r} (in session pooling it "
                "waits for every client holding a server connection to disconnect); "
                f"pgbouncer keeps pausing until resume(): {error}"
            ) from error

    def resume(self) -> None:
        """RESUME after ``pause()``: held queries run; nothing to do if not paused."""
        try:
            self.console("RESUME")
        except PgBouncerError as error:
            if "not paused" not in str(error):
                raise

    def reconnect(self) -> None:
        """RECONNECT: close each server connection once its client releases it (as after a
        failover behind a DNS name); clients keep their connections to pgbouncer."""
        self.console("RECONNECT")

    # -- for clients -----------------------------------------------------------------------

    def dsn(self, dbname: str | None = None) -> str:
        """A libpq keyword/value connection string to the server's database through pgbouncer."""
        return conninfo(
            {
                "host": self.host,
                "port": str(self._port),
                "user": self.server.user,
                "dbname": dbname or self.server.dbname,
                "password": self.server.password or None,
            }
        )

    def database_settings(
        self,
        *,
        engine: str = "django_postgresql_reconnect.backend",
        name: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A Django ``DATABASES`` entry that connects through pgbouncer.

        With transaction or statement pooling it sets ``DISABLE_SERVER_SIDE_CURSORS``, as
        Django's documentation asks: a named cursor would outlive its server connection.
        """
        entry = self.server.database_settings(
            engine=engine, name=name, host=self.host, port=self._port
        )
        if self.pool_mode != "session":
            entry["DISABLE_SERVER_SIDE_CURSORS"] = True
        entry.update(overrides)
        return entry

    # -- internals -------------------------------------------------------------------------

    def _write_config(self) -> None:
        _pgbouncer_daemon.write_config(
            self.config_file,
            listen_host=self.host,
            listen_port=self._port,
            socket_dir=self._base,
            upstream_host=self.upstream_host,
            upstream_port=self.upstream_port,
            user=self.server.user,
            password=self.server.password,
            pool_mode=self.pool_mode,
            settings=self.settings,
            account=self._account,
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        return _pgbouncer_daemon.spawn(self.binary, self.config_file, self.logfile, self._account)

    def _wait_until_listening(self, offset: int) -> str | None:
        assert self._process is not None
        return _pgbouncer_daemon.wait_until_listening(
            self._process, self.logfile, offset, self.host, self._port
        )

    def _kill(self) -> None:
        if self._process is not None:
            _pgbouncer_daemon.kill(self._process)
        self._process = None
