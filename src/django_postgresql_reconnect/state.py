"""What the engine knows about each connection, each wrapper and each alias of a process.

``Link`` is one driver connection as the engine watches it: its socket, when it must next be
checked with a round trip, whether it was inherited across ``fork()``. ``WrapperState`` is
what one ``DatabaseWrapper`` carries from connection to connection: the session log, a loss
still to report, the transaction the engine abandoned. ``AliasHealth`` is shared by the
threads of a process that use one alias: the breaker, the wake-up call, the live links.

Fork safety lives here: after ``fork()`` the child marks every inherited link dead and points
its socket at /dev/null, so the child opens its own connection and never sends a byte on the
parent's (not even the goodbye when it closes it), at no cost per statement.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from . import drivers
from .backoff import Breaker, Deadline, Wakeup
from .conf import ReconnectOptions
from .liveness import SocketWatch, _always_look
from .session import SessionLog

__all__ = ["AliasHealth", "Link", "WrapperState", "alias_health"]

_monotonic = time.monotonic


class Link:
    """The engine's view of one driver connection; built once, consulted per statement."""

    __slots__ = (
        "__weakref__",
        "check_after",
        "connection",
        "current",
        "identity",
        "idle_after",
        "inherited",
        "poll",
        "watch",
    )

    def __init__(self, connection: Any, idle_after: float) -> None:
        self.connection = connection
        self.watch = SocketWatch(drivers.socket_fd(connection), ssl=drivers.uses_ssl(connection))
        self.poll = self.watch.poll
        self.idle_after = idle_after
        self.check_after = _monotonic() + idle_after
        """Before this moment a quiet socket is proof enough; after it, one round trip."""
        self.current = True
        """False once the wrapper moved on to another connection: cursors then catch up."""
        self.inherited = False
        self.identity: tuple[str | None, ...] | None = None
        """The server history its transactions belong to (retry_atomic), once asked."""
        _every_link.add(self)

    def used(self, now: float) -> None:
        self.check_after = now + self.idle_after

    def suspect(self) -> None:
        """Another thread lost a connection of this alias: check this one before next use."""
        self.check_after = 0.0

    def is_dead(self, ping_timeout: float) -> bool:
        """Rule 1: is this connection dead, before anything is sent on it?"""
        connection = self.connection
        if self.inherited or self.watch.peer_gone() or drivers.connection_is_broken(connection):
            return True
        if _monotonic() < self.check_after:
            return False
        if drivers.transaction_status(connection) != drivers.TRANSACTION_IDLE:
            return False  # a round trip now would interleave with the open transaction
        # Idle long enough for a firewall to forget it, or another thread lost one of this
        # alias: one bounded round trip tells.
        alive = drivers.ping(connection, ping_timeout)
        self.used(_monotonic())
        return not alive

    def peer_gone(self) -> bool:
        return (
            self.inherited
            or self.watch.peer_gone()
            or drivers.connection_is_broken(self.connection)
        )

    def retire(self) -> None:
        self.current = False
        self.poll = _always_look


@dataclass
class WrapperState:
    """What one DatabaseWrapper carries from connection to connection."""

    options: ReconnectOptions
    health: AliasHealth
    multi_host: bool = False
    link: Link | None = None
    session: SessionLog = field(default_factory=SessionLog)
    carried: SessionLog | None = None
    """The settings of a lost session, to replay on the next connection."""
    unreported: tuple[str, ...] = ()
    """Session state lost by a path that could not raise: the next statement says so."""
    abandoned: BaseException | None = None
    """Set when the engine gave up the connection inside a transaction (the loss, if any)."""
    abandoned_reason: str = ""
    connecting: bool = False
    deadline: Deadline | None = None
    """The deadline of the call in progress, once it met a loss."""
    lost_at: float | None = None
    """When the last loss was found; cleared by the next connection (``reconnected``)."""
    replacing: bool = False
    """A recovery opens this connection: its own decision says so, the reconnect logs quietly."""
    closing_after_loss: bool = False
    """is_usable() found the connection dead: the close() that follows keeps the session."""
    held_cursors: set[str] = field(default_factory=set)


class AliasHealth:
    """What the threads of one process share about one alias."""

    def __init__(self, alias: str, options: ReconnectOptions) -> None:
        self.alias = alias
        self.options = options
        self._start()

    def _start(self) -> None:
        from . import events  # events imports signals, which need Django's settings

        self.breaker = Breaker(
            self.options.BREAKER_PROBE_INTERVAL,
            on_change=lambda state, seconds: events.breaker_changed(self.alias, state, seconds),
        )
        self.wakeup = Wakeup()
        self.links: weakref.WeakSet[Link] = weakref.WeakSet()

    def lost_one(self, link: Link | None) -> None:
        """A connection of this alias died: the others may have died with it."""
        for other in list(self.links):
            if other is not link:
                other.suspect()


_aliases: dict[str, AliasHealth] = {}
_aliases_lock = threading.Lock()
_every_link: weakref.WeakSet[Link] = weakref.WeakSet()


def alias_health(alias: str, options: ReconnectOptions) -> AliasHealth:
    with _aliases_lock:
        health = _aliases.get(alias)
        if health is None:
            health = _aliases[alias] = AliasHealth(alias, options)
        return health


def all_alias_health() -> list[AliasHealth]:
    with _aliases_lock:
        return list(_aliases.values())


def _after_fork_in_child() -> None:
    global _aliases_lock
    # Locks held by the parent's other threads stay held forever in the child: start afresh.
    _aliases_lock = threading.Lock()
    for health in list(_aliases.values()):
        health._start()  # breaker state is per process
    for link in list(_every_link):
        link.inherited = True
        link.retire()
        drivers.silence_inherited(link.connection)
    _silence_inherited_pools()


def _silence_inherited_pools() -> None:
    """Django's connection pools (5.1+) inherited by the child: their idle connections are
    the parent's too. Silence them and let the child build its own pools."""
    base = sys.modules.get("django.db.backends.postgresql.base")
    pools = getattr(getattr(base, "DatabaseWrapper", None), "_connection_pools", None)
    if not pools:
        return
    for pool in list(pools.values()):
        for connection in list(getattr(pool, "_pool", ())):
            drivers.silence_inherited(connection)
        _orphaned_pools.append(pool)  # never collected: collecting would touch its threads
    pools.clear()


_orphaned_pools: list[Any] = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
