"""Tools to test code against a real PostgreSQL that dies, stalls and loses replies.

``PostgresServer`` is a throwaway cluster, ``PostgresCluster`` a primary with streaming
replicas to fail over, ``PgBouncer`` the pooler in front of a server, ``FaultProxy`` a TCP
proxy that injects faults between a client and a server, ``SilentLink`` a network path
that drops packets without a word (it needs root), and ``PrivateHosts`` a host name that
moves from one server to another for the child processes a test starts.

Every tool starts with ``start()``, is released by ``close()``, and does both as a context
manager; every error is a ``LabError``. Standard library only, plus the PostgreSQL binaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ClusterError,
    LabError,
    PgBouncerError,
    PrivateHostsError,
    ProxyError,
    ServerError,
    SilentLinkError,
)
from .server import PostgresServer

if TYPE_CHECKING:
    from .cluster import PostgresCluster
    from .hosts import PrivateHosts
    from .netns import SilentLink
    from .pgbouncer import PgBouncer
    from .proxy import FaultProxy

__all__ = [
    "ClusterError",
    "FaultProxy",
    "LabError",
    "PgBouncer",
    "PgBouncerError",
    "PostgresCluster",
    "PostgresServer",
    "PrivateHosts",
    "PrivateHostsError",
    "ProxyError",
    "ServerError",
    "SilentLink",
    "SilentLinkError",
]

#: Tools imported on first use, so that one tool's import cost or failure never reaches another.
_LAZY = {
    "FaultProxy": ".proxy",
    "PgBouncer": ".pgbouncer",
    "PostgresCluster": ".cluster",
    "PrivateHosts": ".hosts",
    "SilentLink": ".netns",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
