"""PostgreSQL's own programs as a ``PostgresServer`` runs them.

initdb, pg_ctl and pg_basebackup run as the account that owns the cluster (the service
account when we are root), inside the server's network namespace if it has one. psql runs
as ourselves over a Unix socket: admin work must keep working while a test breaks the TCP
path that the code under test uses.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _logs, _privileges
from ._binaries import program_env
from .errors import ServerError

#: Seconds that pg_ctl may wait for the server to start or stop.
PG_CTL_TIMEOUT = 30
#: Seconds that initdb or pg_basebackup may take.
SETUP_TIMEOUT = 120


@dataclass(frozen=True)
class ClusterPrograms:
    """The server programs of one cluster, run as its owner, in its namespace, from its
    directory (``home``), with its extra environment (``env``, on top of ours without PG*)."""

    bindir: Path
    account: _privileges.Account | None
    netns: str | None
    env: Mapping[str, str]
    home: Path

    def run(self, command: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run ``command``; a program that takes over ``timeout`` seconds raises ServerError."""
        argv, as_account = _privileges.as_account(command, self.account, netns=self.netns)
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=program_env() | dict(self.env),
                cwd=self.home,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                **as_account,
            )
        except subprocess.TimeoutExpired as error:
            raise ServerError(f"{Path(command[0]).name} took over {timeout} s: {argv}") from error

    def initdb(self, data_dir: Path, user: str, password: str | None) -> None:
        """Create the cluster in ``data_dir``, owned by ``user`` (with ``password``, if any),
        trusting every connection until pg_hba.conf is written."""
        command = [
            str(self.bindir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            user,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
        ]
        pwfile = self.home / "pwfile"
        if password:
            pwfile.write_text(password + "\n")
            _privileges.give_to(pwfile, self.account)
            command.append(f"--pwfile={pwfile}")
        try:
            result = self.run(command, timeout=SETUP_TIMEOUT)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServerError(
                f"initdb failed ({result.returncode}): {result.stderr.strip()}\n"
                f"{_logs.tail(result.stdout)}"
            )

    def pg_ctl(self, data_dir: Path, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``pg_ctl action`` on ``data_dir``, silent, waiting up to PG_CTL_TIMEOUT for it."""
        command = [
            str(self.bindir / "pg_ctl"),
            action,
            "-D",
            str(data_dir),
            "-w",
            "-t",
            str(PG_CTL_TIMEOUT),
            "-s",
            *args,
        ]
        return self.run(command, timeout=PG_CTL_TIMEOUT + 30)

    def basebackup(self, data_dir: Path, source: str) -> subprocess.CompletedProcess[str]:
        """Copy the cluster at ``source`` (a libpq string) into ``data_dir`` as a standby."""
        command = [
            str(self.bindir / "pg_basebackup"),
            "--pgdata",
            str(data_dir),
            "--dbname",
            source,
            "--write-recovery-conf",  # standby.signal, and primary_conninfo from --dbname
            "--wal-method=stream",
            "--checkpoint=fast",  # now, rather than at the primary's next checkpoint
            "--no-sync",
        ]
        return self.run(command, timeout=SETUP_TIMEOUT)


def psql(
    bindir: Path,
    *,
    flags: Sequence[str],
    socket_dir: Path,
    port: int,
    user: str,
    dbname: str,
    command: str,
    env: Mapping[str, str],
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run one ``psql -c command`` as ourselves over the Unix socket in ``socket_dir``.

    ``env`` comes on top of our environment without its PG* variables, which would send
    psql elsewhere. Past ``timeout`` seconds it raises ``subprocess.TimeoutExpired``.
    """
    argv = [
        str(bindir / "psql"),
        *flags,
        "-h",
        str(socket_dir),
        "-p",
        str(port),
        "-U",
        user,
        "-d",
        dbname,
        "-c",
        command,
    ]
    env = program_env() | dict(env)
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
