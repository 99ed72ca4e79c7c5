"""Opening connections within a deadline: the one connect loop, for first and replacement ones.

Django's ``connect()`` opens the driver connection and then configures it (autocommit, the
time zone, ``assume_role``, the engine's own replay of session settings) and sends
``connection_created``. A failure anywhere in there is one failed attempt, with three
outcomes (rule 10): a permanent rejection (wrong password, unknown database) raises at once,
a transient failure (refused, reset, starting up, too many clients) is tried again after a
jittered pause, and once the deadline or CONNECT_ATTEMPTS is spent the caller gets
``DatabaseUnavailable`` and the breaker opens for everyone else.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django.db import Error as DjangoError

from . import events, signals
from .backoff import Backoff, BreakerOpen, Deadline
from .exceptions import DatabaseUnavailable
from .policy import connect_failure_is_transient
from .rejections import (
    encryption_failure,
    host_lookup_failure,
    is_server_rejection,
    rejection_sqlstate,
)

if TYPE_CHECKING:
    from .mixin import ReconnectMixin

__all__ = ["connect_within_deadline", "is_pool_timeout"]


def is_pool_timeout(error: BaseException) -> bool:
    """psycopg_pool's PoolTimeout: the pool waited its own timeout; not ours to retry."""
    return type(error).__name__ == "PoolTimeout" and type(error).__module__.startswith(
        "psycopg_pool"
    )


def connect_within_deadline(db: ReconnectMixin, deadline: Deadline, *, after_loss: bool) -> int:
    """Run Django's ``connect()`` until it succeeds, fails for good, or the deadline passes.

    Returns the number of attempts it took.
    """
    state = db._reconnect
    options = state.options
    health = state.health
    delays = Backoff(options.BACKOFF_INITIAL, options.BACKOFF_MAX).delays()
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            probe = health.breaker.admit()
        except BreakerOpen as open_:
            # Said once, at DEBUG: the "breaker opened" line already told the story, and an
            # outage can fail thousands of calls a second (the signal still counts each).
            events.emit(
                events.UNAVAILABLE,
                db.alias,
                "database %r unavailable: the breaker is open",
                db.alias,
                level=logging.DEBUG,
                connection=db,
                attempts=0,
                seconds=open_.down_for,
            )
            raise DatabaseUnavailable.breaker_open(
                alias=db.alias, down_for=open_.down_for, probe_every=open_.probe_every
            ) from None
        rings = health.wakeup.rings
        try:
            if after_loss:
                # A receiver may put a fresh password or token in connection.settings_dict.
                signals.pre_reconnect.send(
                    sender=type(db), connection=db, alias=db.alias, attempt=attempts
                )
            failure = _attempt(db, deadline, after_loss=after_loss)
            if failure is None:
                health.breaker.record_success()
                health.wakeup.ring()
                return attempts
            error, transient = failure
            if not transient:
                if probe:
                    health.breaker.record_success()  # the server answered: it is up
                raise error
            pause = None if probe else next(delays)
            if (
                pause is None
                or attempts >= options.CONNECT_ATTEMPTS
                or time.monotonic() + pause >= deadline.at
            ):
                health.breaker.record_failure()
                seconds = time.monotonic() - started
                reason = events.describe(error, events.secrets_of(db.settings_dict))
                events.emit(
                    events.UNAVAILABLE,
                    db.alias,
                    "database %r is unavailable: %d connection attempt(s) failed in %.2f s: %s",
                    db.alias,
                    attempts,
                    seconds,
                    reason,
                    level=logging.ERROR,
                    connection=db,
                    attempts=attempts,
                    seconds=seconds,
                )
                raise DatabaseUnavailable(
                    alias=db.alias, attempts=attempts, seconds=seconds, reason=reason
                ) from error
        finally:
            if probe:
                health.breaker.probe_done()
        events.logger.debug(
            "connecting to database %r failed (attempt %d), retrying in %.3f s: %s",
            db.alias,
            attempts,
            pause,
            events.describe(error, events.secrets_of(db.settings_dict)),
            extra={"alias": db.alias, "attempts": attempts},
        )
        health.wakeup.wait(pause, rings)


def _attempt(
    db: ReconnectMixin, deadline: Deadline, *, after_loss: bool
) -> tuple[BaseException, bool] | None:
    """One run of Django's connect(); None on success, else (error, transient)."""
    state = db._reconnect
    before = db.connection
    state.connecting = True
    state.deadline = deadline
    try:
        db._connect_once()
    except (db.Database.Error, DjangoError) as error:
        fresh = db.connection
        if fresh is not None and fresh is not before:
            # Django set the new connection up and lost it doing so (in its own set-up, the
            # replay of session settings, or a connection_created receiver's statement, which
            # Django's cursor wraps): a failed attempt, if it was a loss. Re-running that
            # set-up is safe: it only configures a new session.
            driver_error = error.__cause__ if isinstance(error, DjangoError) else error
            if not db._lost_by(driver_error):
                raise  # the setup itself failed (a role that does not exist): as Django does
            db._discard_connection()
            return error, True
        if isinstance(error, DjangoError):
            raise  # Django's own error before any connection existed: as Django does
        if is_pool_timeout(error):
            if after_loss:
                return error, True  # within a recovery: the pool could not get one in time
            raise
        return error, _is_transient(db, error)
    finally:
        state.connecting = False
        state.deadline = None
    return None


def _is_transient(db: ReconnectMixin, error: BaseException) -> bool:
    message = str(error)
    hosts = [h.strip() for h in str(db.settings_dict.get("HOST") or "").split(",")]
    # One host whose name does not resolve: the resolver's own error code says whether that
    # may pass (EAI_AGAIN) or not (EAI_NONAME), whatever the language of the message.
    lookup = host_lookup_failure(hosts[0]) if len(hosts) == 1 else None
    return connect_failure_is_transient(
        rejection=rejection_sqlstate(message),
        server_answered=is_server_rejection(message),
        host_lookup=lookup,
        client_refusal=encryption_failure(message) is not None or _PASSWORD_MISSING in message,
    )


# libpq's own words (the drivers' bundled libpq is built without translations): the settings
# give no password where the server asks for one, which no retry can change.
_PASSWORD_MISSING = "no password supplied"


def pool_with_deadline(pool: Any, deadline: Deadline | None) -> Any:
    """Django's pool, with getconn() bounded by the call's deadline during a recovery."""
    if pool is None or deadline is None:
        return pool
    return _DeadlinePool(pool, deadline)


class _DeadlinePool:
    """Forwards to a psycopg_pool ConnectionPool; getconn() waits no longer than the deadline."""

    def __init__(self, pool: Any, deadline: Deadline) -> None:
        self._pool = pool
        self._deadline = deadline

    def getconn(self, timeout: float | None = None) -> Any:
        limit = self._deadline.remaining()
        if timeout is not None:
            limit = min(limit, timeout)
        return self._pool.getconn(timeout=max(limit, 0.001))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def __bool__(self) -> bool:
        return True
