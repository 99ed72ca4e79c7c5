"""Tools to test code against a real PostgreSQL that dies, stalls and loses replies.

``PostgresServer`` is a throwaway cluster, ``FaultProxy`` a TCP proxy that injects faults
between a client and that server, and ``SilentLink`` a network path that drops packets
without a word (it needs root). Standard library only, plus the PostgreSQL binaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .server import PostgresServer, ServerError

if TYPE_CHECKING:
    from .netns import SilentLink
    from .proxy import FaultProxy

__all__ = ["FaultProxy", "PostgresServer", "ServerError", "SilentLink"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that one tool's import cost or failure never reaches another.
    if name == "FaultProxy":
        from .proxy import FaultProxy

        return FaultProxy
    if name == "SilentLink":
        from .netns import SilentLink

        return SilentLink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
