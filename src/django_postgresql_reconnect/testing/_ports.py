"""Picking a TCP port for a daemon to listen on."""

from __future__ import annotations

import socket

#: How often a start is retried on a fresh port when another process took the free one.
PORT_ATTEMPTS = 3


def free_port(host: str) -> int:
    """A port that nothing listens on at ``host`` now.

    Another process may take it before the daemon binds it: callers that chose the port
    themselves retry with a fresh one when the daemon reports it taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
