"""What a throwaway cluster's configuration files say.

``pg_hba.conf``: who may connect, and how. ``postgresql.conf`` and ``postgresql.auto.conf``:
settings appended one a line, each value quoted; the last line for a setting wins, so
appending is how a setting changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ._quoting import conninfo, literal

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


def write_hba(data_dir: Path, auth: Literal["trust", "password"]) -> None:
    """Let TCP clients in by ``auth``, and everyone over the Unix socket without a password."""
    method = "scram-sha-256" if auth == "password" else "trust"
    # The socket stays trusted: admin work must not depend on the password under test.
    # Replication over it too, so replicas (clone_from) need no password either.
    hba = [
        "local all all trust",
        "local replication all trust",
        f"host all all 0.0.0.0/0 {method}",
        f"host all all ::/0 {method}",
    ]
    (data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")


def primary_conninfo(socket_dir: Path, port: int, user: str, application_name: str) -> str:
    """Where a replica streams from: the primary's Unix socket, which ``write_hba`` trusts
    for replication; the primary sees the replica as ``application_name``."""
    return conninfo(
        {
            "host": str(socket_dir),
            "port": str(port),
            "user": user,
            "application_name": application_name,
        }
    )


def append_settings(
    conf: Path, settings: Mapping[str, str], *, heading: str | None = None
) -> None:
    """Append ``settings`` to the configuration file ``conf``, under a comment if given."""
    with conf.open("a") as file:
        if heading is not None:
            file.write(f"\n# {heading}\n")
        file.writelines(f"{key} = {literal(value)}\n" for key, value in settings.items())
