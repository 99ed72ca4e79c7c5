"""Is an idle connection still alive? Found by looking at its socket, at no round-trip cost.

When a backend is terminated, the server restarts or a proxy resets the flow, the server (or
the kernel) tells the client before it asks anything: an ErrorResponse with FATAL, a FIN or an
RST is waiting in the socket. A poll with a zero timeout sees it; an idle healthy connection has
nothing to read. What this cannot see is a flow that a firewall dropped silently: that takes a
round trip (``drivers.ping``), which the engine makes only after a connection sat idle.
"""

from __future__ import annotations

import select
import socket

__all__ = ["SocketWatch"]

_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_EVENTS = select.POLLIN | select.POLLPRI | _POLLRDHUP
_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL | _POLLRDHUP
# Backend message types that may arrive unasked on a healthy idle connection: NOTIFY payloads,
# notices and parameter changes after a configuration reload.
_HARMLESS_MESSAGES = frozenset(b"ANS")


class SocketWatch:
    """Look at one connection's socket; build once per connection, call per statement."""

    __slots__ = ("_fd", "_poller", "_ssl", "poll")

    def __init__(self, fd: int, *, ssl: bool = False) -> None:
        self._fd = fd
        self._ssl = ssl
        self._poller = select.poll()
        if fd >= 0:
            self._poller.register(fd, _EVENTS)
        # The bare poll, for callers with a hot path: an empty list means nothing happened.
        self.poll = self._poller.poll

    def peer_gone(self) -> bool:
        """Tell whether the server closed, reset or terminated the connection."""
        if self._fd < 0:
            return True
        events = self._poller.poll(0)
        if not events:
            return False  # the hot path: one system call, nothing to read
        mask = events[0][1]
        if mask & _GONE:
            return True
        return self._unread_data_means_gone()

    def _unread_data_means_gone(self) -> bool:
        sock = socket.socket(fileno=self._fd)
        try:
            first = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
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
