"""The pgbouncer program as ``PgBouncer`` runs it: where it is, what its configuration
says, how it starts in the foreground, how we know it listens, and how it stops at once.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from . import _logs, _privileges
from ._binaries import find_program, program_env
from ._quoting import auth_file_value
from .errors import PgBouncerError

#: Set to the pgbouncer program to use when it is not on PATH or in an sbin directory.
BINARY_ENV = "DPR_PGBOUNCER"
#: Seconds that pgbouncer may take to listen, or to exit when stopped.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: pgbouncer's defaults that would slow a test down, and the startup parameter that some
#: drivers send and pgbouncer refuses unless told to ignore it.
BASE_SETTINGS = {
    # After a failed login to the server (it was restarting), pgbouncer fails every client
    # at once for this long: 15 s by default.
    "server_login_retry": "0.2",
    "ignore_startup_parameters": "extra_float_digits",
    "max_client_conn": "200",
}
#: From this version on SIGTERM waits for every client to leave; SIGQUIT exits at once.
SIGQUIT_SINCE = (1, 23)


def find_pgbouncer() -> Path | None:
    """The pgbouncer program: ``$DPR_PGBOUNCER``, else on PATH or in sbin; None if absent."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        path = Path(configured)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    return find_program("pgbouncer")


def write_config(
    config_file: Path,
    *,
    listen_host: str,
    listen_port: int,
    socket_dir: Path,
    upstream_host: str,
    upstream_port: int,
    user: str,
    password: str | None,
    pool_mode: str,
    settings: Mapping[str, str],
    account: _privileges.Account | None,
) -> None:
    """Write ``config_file`` and the auth_file beside it, both owned by ``account``.

    Every database name goes to the same name on the upstream server; ``user`` is the one
    login and the admin console's user, with ``password`` if it has one.
    """
    # Passwords in clear: pgbouncer needs them to log in to the server with SCRAM on
    # the client's behalf, and checks the clients' SCRAM against them.
    users = config_file.with_name("userlist.txt")
    users.write_text(f"{auth_file_value(user)} {auth_file_value(password or '')}\n")
    users.chmod(0o600)
    server = f"host={upstream_host} port={upstream_port}"
    settings = {
        "listen_addr": listen_host,
        "listen_port": str(listen_port),
        "unix_socket_dir": str(socket_dir),
        "auth_type": "scram-sha-256" if password else "trust",
        "auth_file": str(users),
        "admin_users": user,
        "pool_mode": pool_mode,
        **BASE_SETTINGS,
        **settings,
    }
    lines = [
        "[databases]",
        f"* = {server}",  # every database name, to the same name on the server
        "",
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in settings.items()),
    ]
    config_file.write_text("\n".join(lines) + "\n")
    for path in (config_file, users):
        _privileges.give_to(path, account)


def spawn(
    binary: Path, config_file: Path, logfile: Path, account: _privileges.Account | None
) -> subprocess.Popen[bytes]:
    """Start pgbouncer on ``config_file`` as ``account``, in the configuration's directory,
    appending its output to ``logfile``."""
    argv, as_account = _privileges.as_account([str(binary), str(config_file)], account)
    # Run in the foreground, logging to stderr: the log is ours to read, the process
    # ours to signal, with no pidfile to go stale.
    with logfile.open("ab") as log:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=config_file.parent,
                env=program_env(),
                **as_account,
            )
        except OSError as error:
            raise PgBouncerError(f"could not run {binary}: {error}") from error


def wait_until_listening(
    process: subprocess.Popen[bytes], logfile: Path, offset: int, host: str, port: int
) -> str | None:
    """Wait for the log to say pgbouncer listens on ``host:port``; return the problem if not
    (``port taken`` when another process has it).

    The log decides, not a test connection: pgbouncer that cannot bind the TCP port
    only warns and carries on with its Unix socket, and another process on that port
    would answer the connection.
    """
    host = re.escape(host.strip("[]"))
    listening = re.compile(rf"listening on \[?{host}\]?:{port}\b")
    port_taken = re.compile(rf"cannot listen on \[?{host}\]?:{port}\b")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        log = _logs.read_from(logfile, offset)
        if port_taken.search(log):
            return "port taken"
        if listening.search(log):
            return None
        if process.poll() is not None:
            return f"it exited with {process.returncode}"
        time.sleep(0.01)
    return f"it did not listen within {START_TIMEOUT} s"


def kill(process: subprocess.Popen[bytes]) -> None:
    """Kill pgbouncer, if it still runs, and reap it."""
    if process.poll() is None:
        process.kill()
        process.wait(STOP_TIMEOUT)


@functools.cache
def immediate_shutdown_signal(binary: Path) -> signal.Signals:
    """SIGTERM shuts pgbouncer down at once up to 1.22; from 1.23 it waits for clients to
    leave, and SIGQUIT is the immediate one."""
    output = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", output)
    version = (int(match[1]), int(match[2])) if match else SIGQUIT_SINCE
    return signal.SIGQUIT if version >= SIGQUIT_SINCE else signal.SIGTERM
