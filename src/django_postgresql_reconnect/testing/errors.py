"""The toolkit's exceptions: one base class, so a test can catch whatever a tool gave up on.

Every one is a ``RuntimeError`` (as the tools raised before ``LabError`` existed), so older
``except RuntimeError`` code keeps working. Messages say what failed and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "LabError",
    "PgBouncerError",
    "PrivateHostsError",
    "ProxyError",
    "ServerError",
    "SilentLinkError",
]


class LabError(RuntimeError):
    """A testing tool could not do what was asked; the message says why."""


class ServerError(LabError):
    """The throwaway server could not do what was asked; the message says why."""


class ClusterError(LabError):
    """A primary/replica cluster could not do what was asked (promote, demote, replay)."""


class ProxyError(LabError):
    """The fault proxy could not listen, or was used while it was not running."""


class SilentLinkError(LabError):
    """A command that builds or changes the link failed; the message carries its stderr."""


class PgBouncerError(LabError):
    """PgBouncer is missing, did not start, or its admin console refused a command."""


class PrivateHostsError(LabError):
    """A private /etc/hosts could not be set up (no mount namespace, no unshare)."""
