"""What a failed connection attempt says, in any language (placeholder; English only)."""

from __future__ import annotations

import ipaddress
import re
import socket

__all__ = ["host_lookup_failure", "rejection_sqlstate", "server_rejected"]

_TABLE = [
    (
        "57P03",
        r"the database system is (starting up|shutting down|in recovery mode"
        r"|not yet accepting connections|not accepting connections)",
    ),
    (
        "53300",
        r"too many clients|remaining connection slots are reserved|too many connections for",
    ),
    ("57P01", r"terminating connection due to administrator command"),
    ("28P01", r"password authentication failed"),
    ("28000", r"no pg_hba\.conf entry|pg_hba\.conf rejects"),
    ("3D000", r"database \S+ does not exist"),
]
_COMPILED = [(code, re.compile(pattern, re.IGNORECASE)) for code, pattern in _TABLE]
_SEVERITY = re.compile(r"(?:^|failed: )\S+:  ")


def rejection_sqlstate(message: str) -> str | None:
    for code, pattern in _COMPILED:
        if pattern.search(message):
            return code
    return None


def server_rejected(message: str) -> bool:
    return bool(_SEVERITY.search(message))


def host_lookup_failure(host: str) -> str | None:
    if not host or host.startswith("/") or host.startswith("@"):
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as error:
        if error.errno in (socket.EAI_AGAIN,):
            return "transient"
        return "permanent"
    except OSError:
        return None
    return None
