"""Is an idle connection still alive? Found by looking at its socket, at no round-trip cost.

When a backend is terminated, the server restarts or a proxy resets the flow, the server (or
the kernel) tells the client before it asks anything: an ErrorResponse with FATAL, a FIN or an
RST is waiting in the socket. A poll with a zero timeout sees it; an idle healthy connection has
nothing to read. What this cannot see is a flow that a firewall dropped silently: that takes a
round trip (``drivers.ping``), which the engine makes only after a connection sat idle.

Portable: ``select.poll`` where the platform has it (Linux, macOS), ``select.select``
elsewhere (Windows); MSG_DONTWAIT is not needed, since libpq keeps its sockets non-blocking.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SocketWatch", "wait_readable"]

_HAS_POLL = hasattr(select, "poll")
if _HAS_POLL:
    _POLLRDHUP = getattr(select, "POLLRDHUP", 0)
    _EVENTS = select.POLLIN | select.POLLPRI | _POLLRDHUP
    _GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL | _POLLRDHUP
_PEEK = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)
# Backend message types that may arrive unasked on a healthy idle connection: NOTIFY payloads,
# notices and parameter changes after a configuration reload.
_HARMLESS_MESSAGES = frozenset(b"ANS")


def _always_look(timeout: int = 0) -> list[Any]:
    """Stands in for a poll where there is no socket: always sends to the slow path."""
    return [(-1, 0)]


class SocketWatch:
    """Look at one connection's socket; build once per connection, call per statement."""

    __slots__ = ("_fd", "_ssl", "poll")

    poll: Callable[[int], Any]
    """The bare look, for callers with a hot path: a falsy result means nothing happened."""

    def __init__(self, fd: int, *, ssl: bool = False) -> None:
        self._fd = fd
        self._ssl = ssl
        if fd < 0:
            self.poll = _always_look
        elif _HAS_POLL:
            poller = select.poll()
            poller.register(fd, _EVENTS)
            self.poll = poller.poll
        else:
            self.poll = self._select

    def _select(self, timeout: int = 0) -> list[Any]:
        try:
            readable, _, broken = select.select([self._fd], [], [self._fd], 0)
        except (OSError, ValueError):
            return [(self._fd, -1)]
        return readable + broken

    def peer_gone(self) -> bool:
        """Tell whether the server closed, reset or terminated the connection."""
        if self._fd < 0:
            return True
        events = self.poll(0)
        if not events:
            return False  # the hot path: one system call, nothing to read
        mask = events[0][1] if isinstance(events[0], tuple) else 0
        if _HAS_POLL and mask & _GONE:
            return True
        if mask == -1:
            return True
        return self._unread_data_means_gone()

    def _unread_data_means_gone(self) -> bool:
        sock = socket.socket(fileno=self._fd)
        try:
            first = sock.recv(1, _PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True  # ECONNRESET and friends
        finally:
            sock.detach()  # the descriptor belongs to the driver
        if not first:
            return True  # EOF
        if self._ssl:
            return False  # encrypted: cannot read the message type; let the statement tell
        return first[0] not in _HARMLESS_MESSAGES


def wait_readable(fd: int, deadline: float) -> bool:
    """Wait until ``fd`` is readable or the monotonic ``deadline`` passes (False then)."""
    remaining = deadline - time.monotonic()
    if _HAS_POLL:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        while remaining > 0:
            if poller.poll(remaining * 1000):
                return True
            remaining = deadline - time.monotonic()
        return False
    while remaining > 0:
        readable, _, broken = select.select([fd], [], [fd], remaining)
        if readable or broken:
            return True
        remaining = deadline - time.monotonic()
    return False
