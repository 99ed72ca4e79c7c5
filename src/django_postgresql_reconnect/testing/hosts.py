"""A host name that a test can move from one server to another, as DNS does in a failover.

Managed databases fail over by pointing a DNS name at another machine: connections made
afterwards reach the new primary, connections already open still lead to the old one.
``PrivateHosts`` plays that without touching the machine's configuration: it keeps a hosts
file of its own and runs the code under test in a child process with a private mount
namespace, where that file is bind-mounted over ``/etc/hosts``. The test rewrites the file
in place; the child's resolver reads it again on each lookup (glibc's ``files`` source has
no cache), so the name moves between one connection and the next. The test process and
the rest of the machine never see the names.

Two servers can share a port on different loopback addresses (127.0.0.2, 127.0.0.3: all of
127/8 is local on Linux), so the name is the only thing that changes. Needs ``unshare`` and
``mount`` (util-linux) and, when not root, unprivileged user namespaces; the child then
runs as root of its own user namespace, which is still the calling user outside it.

Standard library only.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _privileges
from ._binaries import find_program
from ._lifecycle import LabTool, close_once
from .errors import PrivateHostsError

__all__ = ["PrivateHosts", "PrivateHostsError"]

logger = logging.getLogger("django_postgresql_reconnect.testing")

#: The file's fixed size. Every rewrite is one write of all of it at offset 0, with no
#: truncation: a lookup running at that moment reads the old table or the new one, never
#: an empty file or half of a line.
FILE_SIZE = 4096
#: Seconds the check that a private namespace can be made may take.
PROBE_TIMEOUT = 10


class PrivateHosts(LabTool):
    """Host names that only the child processes started through this object resolve.

    >>> with PrivateHosts({"db.test": "127.0.0.2"}) as hosts:
    ...     child = hosts.popen([sys.executable, "worker.py"])  # connects to db.test
    ...     hosts.point("db.test", "127.0.0.3")  # its next connection goes there
    """

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self._entries: dict[str, str] = {}
        for name, address in (entries or {}).items():
            self._entries[_checked_name(name)] = _checked_address(address)
        self._directory: Path | None = None
        self._prefix: list[str] = []
        self._closed = False

    @property
    def path(self) -> Path:
        """The hosts file that children see as /etc/hosts."""
        if self._directory is None:
            raise PrivateHostsError("PrivateHosts is not started: call start() first")
        return self._directory / "hosts"

    @property
    def entries(self) -> dict[str, str]:
        """Each private name and the address it resolves to now."""
        return dict(self._entries)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Write the file, and check that a child can get a private mount namespace."""
        if self._closed:
            raise PrivateHostsError("this PrivateHosts was closed; make a new one")
        if self._directory is not None:
            return
        unshare, mount = find_program("unshare"), find_program("mount")
        if unshare is None or mount is None:
            raise PrivateHostsError(
                "PrivateHosts needs unshare and mount: apt-get install util-linux mount"
            )
        self._directory = Path(tempfile.mkdtemp(prefix="dpr-hosts-"))
        atexit.register(self.close)
        self._directory.chmod(0o755)
        self._write()
        # As a normal user, a user namespace grants the right to mount inside it.
        user_namespace = ["--user", "--map-root-user"] if not _privileges.is_root() else []
        self._prefix = [
            str(unshare),
            *user_namespace,
            "--mount",
            "--propagation",
            "private",
            "--",
            # In the child: bind the file ($0) over /etc/hosts, then become the command ($@).
            "/bin/sh",
            "-c",
            f'{mount} --bind "$0" /etc/hosts && exec "$@"',
            str(self.path),
        ]
        self._probe()

    @close_once
    def close(self) -> None:
        """Delete the file; children already running keep the last version they saw."""
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def __repr__(self) -> str:
        names = ", ".join(f"{name}={address}" for name, address in self._entries.items())
        return f"<PrivateHosts {names or 'empty'}>"

    # -- names -----------------------------------------------------------------------------

    def point(self, name: str, address: str) -> None:
        """Make ``name`` resolve to ``address`` in every child, from its next lookup on."""
        self._entries[_checked_name(name)] = _checked_address(address)
        if self._directory is not None:
            self._write()
        logger.info("private hosts: %s -> %s", name, address)

    def remove(self, name: str) -> None:
        """Forget ``name``: the children's next lookup falls through to the real sources."""
        self._entries.pop(name, None)
        if self._directory is not None:
            self._write()

    # -- children --------------------------------------------------------------------------

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run with the private hosts file, for any process runner."""
        if not self._prefix:
            raise PrivateHostsError("PrivateHosts is not started: call start() first")
        return [*self._prefix, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` with the private hosts file; ``kwargs`` go to ``subprocess.Popen``."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` to its end with the private hosts file (``subprocess.run``)."""
        return subprocess.run(self.command(argv), **kwargs)

    # -- internals -------------------------------------------------------------------------

    def _write(self) -> None:
        ours = "".join(f"{address} {name}\n" for name, address in self._entries.items())
        # Ours first: the resolver takes the first match. Then the machine's own lines, so
        # localhost and the rest still resolve in the child.
        try:
            machine = Path("/etc/hosts").read_text()
        except OSError:
            machine = "127.0.0.1 localhost\n::1 localhost\n"
        text = f"# django-postgresql-reconnect PrivateHosts\n{ours}{machine}"
        data = text.encode()
        if len(data) > FILE_SIZE:
            raise PrivateHostsError(f"too many names for a {FILE_SIZE}-byte hosts file")
        data += b"\n" * (FILE_SIZE - len(data))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)

    def _probe(self) -> None:
        """Fail now, with the reason, if this machine cannot give a child its own mounts."""
        try:
            result = self.run(
                ["true"], capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PrivateHostsError(
                f"could not start a child with private hosts: {error}"
            ) from error
        if result.returncode != 0:
            hint = (
                ""
                if _privileges.is_root()
                else " (as a normal user this needs unprivileged user namespaces: "
                "sysctl kernel.unprivileged_userns_clone=1, or run as root)"
            )
            raise PrivateHostsError(
                f"a private mount namespace is not available{hint}: {result.stderr.strip()}"
            )


def _checked_name(name: str) -> str:
    if not name or any(char.isspace() or char == "#" for char in name):
        raise ValueError(f"not a host name: {name!r}")
    return name


def _checked_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"not an IP address: {address!r}") from None
