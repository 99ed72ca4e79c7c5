"""The Django glue: where a statement meets a dead connection.

``ReconnectMixin`` goes in front of a PostgreSQL ``DatabaseWrapper`` (``backend/base.py``,
``postgis/base.py``, or any PostgreSQL-derived backend of your own). It reuses Django's own
transaction bookkeeping (``in_atomic_block``, ``closed_in_transaction``, ``needs_rollback``)
and asks ``policy`` what each loss allows; this module only carries the answers out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

from . import drivers, signals
from .backoff import Backoff, Breaker, BreakerOpen
from .checks import ReconnectValidation
from .conf import TCP_DEFAULTS, ReconnectOptions, parse_setting
from .exceptions import (
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    SessionStateLost,
    StatementOutcomeUnknown,
    TransactionLost,
)
from .liveness import SocketWatch
from .policy import (
    Recovery,
    connect_failure_is_transient,
    creates_session_state,
    decide_after_loss,
    is_connection_lost,
    refused_by_read_only_node,
    statement_is_read_only,
)

if TYPE_CHECKING:
    from django.db.backends.postgresql.base import DatabaseWrapper as _Base
else:
    _Base = object

__all__ = ["ReconnectMixin"]

logger = logging.getLogger("django_postgresql_reconnect")

# A statement is run again at most this many times: each loss is a fresh fault, and a server
# that drops every connection is better reported than chased.
MAX_RERUNS = 3

_monotonic = time.monotonic


@dataclass
class _AliasState:
    """What the threads of one process share about one alias."""

    breaker: Breaker
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_aliases: dict[str, _AliasState] = {}
_aliases_lock = threading.Lock()


def _alias_state(alias: str, options: ReconnectOptions) -> _AliasState:
    with _aliases_lock:
        state = _aliases.get(alias)
        if state is None:
            state = _aliases[alias] = _AliasState(Breaker(options.BREAKER_COOLDOWN))
        return state


# Never a driver connection: ``_dpr_watched is connection`` is then false for None too.
_UNWATCHED = object()


def _look_closer(timeout: int) -> list[Any]:
    """Stands in for a socket poll where there is no socket: always sends to the slow path."""
    return [(-1, 0)]


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "found closed before use"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class ReconnectMixin(_Base):
    """Recover a PostgreSQL ``DatabaseWrapper`` from lost connections, within the safety model."""

    reconnect_options: ReconnectOptions | None
    validation_class = ReconnectValidation

    def __init__(self, settings_dict: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(settings_dict, *args, **kwargs)
        self._dpr_config_error: str | None = None
        try:
            self.reconnect_options = parse_setting(self.alias, settings_dict.get("RECONNECT"))
        except ValueError as error:
            self.reconnect_options = None
            self._dpr_config_error = str(error)
        options = self.reconnect_options or ReconnectOptions()
        self._dpr_state = _alias_state(self.alias, options)
        self._dpr_serial = 0  # bumped per new connection, so old cursor wrappers notice
        self._dpr_watch: SocketWatch | None = None
        self._dpr_watched: Any = _UNWATCHED
        self._dpr_poll: Callable[[int], list[Any]] = _look_closer
        self._dpr_idle_after = options.IDLE_CHECK_AFTER
        self._dpr_generation = 0
        self._dpr_last_used = 0.0
        self._dpr_session_state = False
        self._dpr_no_retry = 0
        self._dpr_connecting = False
        self._dpr_connect_deadline: float | None = None
        self._dpr_attempts = 0
        self._dpr_lost_error: BaseException | None = None
        self._dpr_multi_host = "," in str(settings_dict.get("HOST") or "")

    # --- Opening connections (rule 2) ---------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        options = self.reconnect_options
        if options is not None and options.TCP_DEFAULTS:
            for key, value in TCP_DEFAULTS.items():
                params.setdefault(key, value)
        return params

    def connect(self) -> None:
        if self._dpr_config_error:
            raise ImproperlyConfigured(self._dpr_config_error)
        options = self.reconnect_options
        if options is None:
            super().connect()
        else:
            self._dpr_connect_within_deadline(options)
        self._dpr_serial += 1
        self._dpr_generation = self._dpr_state.generation
        self._dpr_session_state = False
        self._dpr_lost_error = None
        self._dpr_last_used = time.monotonic()

    def _dpr_connect_within_deadline(self, options: ReconnectOptions) -> None:
        """Connect, and treat a connection lost while Django sets it up as a failed attempt.

        Django runs statements on a new connection before handing it out (the time zone,
        ``assume_role``). A fault landing there is a connect failure like any other: the
        half-made connection is dropped and a new one opened, within the same deadline.
        Re-running those statements is safe: they only configure a brand-new session.
        """
        started = time.monotonic()
        self._dpr_connect_deadline = started + options.DEADLINE
        delays = Backoff(options.BACKOFF_INITIAL, options.BACKOFF_MAX).delays()
        setups = 0
        try:
            while True:
                before = self.connection
                self._dpr_connecting = True
                try:
                    super().connect()
                    return
                except self.Database.Error as error:
                    fresh = self.connection
                    if fresh is None or fresh is before or not self._dpr_lost(error):
                        raise
                    setups += 1
                    delay = self._dpr_next_pause(delays, setups, self._dpr_connect_deadline)
                    if delay is None:
                        now = time.monotonic()
                        self._dpr_discard()
                        raise DatabaseUnavailable(
                            f"could not set up a connection to database {self.alias!r}: it "
                            f"was lost {setups} time(s) in {now - started:.2f} s while Django "
                            f"configured it: {_describe(error)}; the database is going down "
                            "or the network drops connections (DEADLINE in RECONNECT bounds "
                            "the wait)",
                            alias=self.alias,
                            attempts=setups,
                            seconds=now - started,
                        ) from error
                    logger.debug(
                        "connection to database %r lost while Django set it up, reconnecting "
                        "in %.3f s: %s",
                        self.alias,
                        delay,
                        _describe(error),
                    )
                    self._dpr_discard()
                    time.sleep(delay)
                    self._dpr_params_for_attempt(setups + 1)
                finally:
                    self._dpr_connecting = False
        finally:
            self._dpr_connect_deadline = None

    def _dpr_next_pause(
        self, delays: Iterator[float], attempts: int, deadline: float
    ) -> float | None:
        """The backoff pause before another connect attempt; None once ``attempts`` reached
        CONNECT_ATTEMPTS or the pause would end past ``deadline``."""
        options = self.reconnect_options
        assert options is not None
        delay = next(delays)
        if attempts >= options.CONNECT_ATTEMPTS or time.monotonic() + delay >= deadline:
            return None
        return delay

    def _dpr_lost(self, error: BaseException) -> bool:
        code = drivers.sqlstate(error)
        return is_connection_lost(code, self._dpr_broken_after(error, code))

    def _dpr_broken_after(self, error: BaseException | None, code: str | None) -> bool:
        """After a failed statement: is the connection itself broken?

        The driver's status says so in most cases. psycopg 3 can also fail a statement with
        "connection socket closed" when its wait sees the socket reset, before libpq's status
        changes: an OperationalError with no SQLSTATE on a socket whose peer is gone is that.
        """
        connection = self.connection
        if connection is None or drivers.connection_is_broken(connection):
            return True
        return (
            code is None
            and isinstance(error, self.Database.OperationalError)
            and self._dpr_watch_for(connection).peer_gone()
        )

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        options = self.reconnect_options
        if options is None:
            return super().get_new_connection(conn_params)
        breaker = self._dpr_state.breaker
        started = time.monotonic()
        try:
            probe = breaker.admit()
        except BreakerOpen as open_:
            raise DatabaseUnavailable(
                f"database {self.alias!r} is unavailable: connecting has failed for "
                f"{open_.since:.1f} s, so calls fail at once for another "
                f"{open_.remaining:.1f} s (BREAKER_COOLDOWN) instead of each waiting out the "
                "deadline; retry later",
                alias=self.alias,
                attempts=0,
                seconds=0.0,
            ) from None
        deadline = started + options.DEADLINE
        if self._dpr_connect_deadline is not None:
            deadline = min(deadline, self._dpr_connect_deadline)
        delays = Backoff(options.BACKOFF_INITIAL, options.BACKOFF_MAX).delays()
        attempts = 0
        while True:
            attempts += 1
            self._dpr_attempts = attempts
            try:
                connection = super().get_new_connection(conn_params)
            except self.Database.OperationalError as error:
                if not connect_failure_is_transient(str(error)):
                    if probe:
                        breaker.record_success()  # the server answered: it is up
                    raise
                delay = None if probe else self._dpr_next_pause(delays, attempts, deadline)
                if delay is None:
                    now = time.monotonic()
                    breaker.record_failure()
                    raise DatabaseUnavailable(
                        f"could not connect to database {self.alias!r} after {attempts} "
                        f"attempt(s) in {now - started:.2f} s: {_describe(error)}; the "
                        "database is down or unreachable (DEADLINE and CONNECT_ATTEMPTS "
                        "in RECONNECT bound the wait)",
                        alias=self.alias,
                        attempts=attempts,
                        seconds=now - started,
                    ) from error
                logger.debug(
                    "connecting to database %r failed (attempt %d), retrying in %.3f s: %s",
                    self.alias,
                    attempts,
                    delay,
                    _describe(error),
                )
                time.sleep(delay)
                conn_params = self._dpr_params_for_attempt(attempts + 1)
                continue
            breaker.record_success()
            return connection

    def _dpr_params_for_attempt(self, attempt: int) -> dict[str, Any]:
        """Let receivers refresh credentials, then rebuild the parameters from the settings."""
        signals.pre_reconnect.send(
            sender=type(self),
            connection=self,
            alias=self.alias,
            settings_dict=self.settings_dict,
            attempt=attempt,
        )
        params: dict[str, Any] = self.get_connection_params()
        return params

    # --- Finding and replacing a dead connection -----------------------------------------------

    def _dpr_watch_for(self, connection: Any) -> SocketWatch:
        if self._dpr_watched is not connection or self._dpr_watch is None:
            fd = drivers.socket_fd(connection)
            self._dpr_watch = SocketWatch(fd, ssl=drivers.uses_ssl(connection))
            self._dpr_poll = self._dpr_watch.poll if fd >= 0 else _look_closer
            self._dpr_watched = connection
        return self._dpr_watch

    def _dpr_is_dead(self, connection: Any, options: ReconnectOptions) -> bool:
        """Rule 1 and the liveness window: is this connection dead, before anything is sent?"""
        watch = self._dpr_watch if self._dpr_watched is connection else None
        if watch is None:
            watch = self._dpr_watch_for(connection)
        if watch.peer_gone() or drivers.connection_is_broken(connection):
            return True
        state_generation = self._dpr_state.generation
        suspect = self._dpr_generation != state_generation
        idle = time.monotonic() - self._dpr_last_used > options.IDLE_CHECK_AFTER
        if (suspect or idle) and drivers.transaction_status(connection) == 0:
            # Another thread lost a connection of this alias, or this one sat idle long
            # enough for a firewall to forget it: one bounded round trip tells.
            self._dpr_generation = state_generation
            alive = drivers.ping(connection, options.PING_TIMEOUT)
            self._dpr_last_used = time.monotonic()
            return not alive
        return False

    def _dpr_note_loss(self, error: BaseException | None) -> None:
        logger.warning("connection to database %r lost: %s", self.alias, _describe(error))
        state = self._dpr_state
        with state.lock:
            if self._dpr_generation == state.generation:
                state.generation += 1  # the alias's other connections check themselves
        signals.connection_lost.send(
            sender=type(self), connection=self, alias=self.alias, error=error
        )

    def _dpr_close_driver_connection(self) -> None:
        """Close the dead driver connection, then let Django release it.

        Closing first matters with a pool: psycopg_pool takes back a connection whose libpq
        status still says OK (the driver has not noticed the loss yet) as healthy, and would
        hand it out again; a closed one it discards.
        """
        connection = self.connection
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
        with contextlib.suppress(Exception):
            self._close()  # type: ignore[attr-defined]

    def _dpr_discard(self) -> None:
        """Drop the driver connection without a word to the server, which is gone anyway."""
        self._dpr_close_driver_connection()
        self.connection = None
        self._dpr_watch, self._dpr_watched = None, _UNWATCHED

    def _dpr_replace(self, error: BaseException | None, *, keep_transaction: bool) -> None:
        """Open a new connection in place of a dead one, keeping an unstarted transaction open."""
        lost_at = time.monotonic()
        saved = None
        if keep_transaction:
            saved = (
                self.in_atomic_block,
                self.savepoint_ids,
                self.atomic_blocks,
                self.needs_rollback,
                self.commit_on_exit,
                self.run_on_commit,
                self.savepoint_state,
            )
        self._dpr_discard()
        self._dpr_params_for_attempt(1)
        try:
            with self.wrap_database_errors:
                self.connect()
            if saved is not None:
                self.set_autocommit(False)
        except BaseException:
            if saved is not None:
                self._dpr_restore(saved)
                self.closed_in_transaction = True
                self.needs_rollback = True
            raise
        if saved is not None:
            self._dpr_restore(saved)
        seconds = time.monotonic() - lost_at
        logger.info(
            "reconnected to database %r after %d attempt(s) in %.3f s",
            self.alias,
            self._dpr_attempts,
            seconds,
        )
        signals.reconnected.send(
            sender=type(self),
            connection=self,
            alias=self.alias,
            attempts=self._dpr_attempts,
            seconds=seconds,
        )

    def _dpr_restore(self, saved: tuple[Any, ...]) -> None:
        (
            self.in_atomic_block,
            self.savepoint_ids,
            self.atomic_blocks,
            self.needs_rollback,
            self.commit_on_exit,
            self.run_on_commit,
            self.savepoint_state,
        ) = saved

    def _dpr_abandon_transaction(self, error: BaseException | None) -> None:
        """Give up the connection inside a transaction the way Django's close() would.

        ``closed_in_transaction`` makes the rest of the atomic block fail and its exit drop
        the connection without trying to reconnect; the next block starts afresh.
        """
        self._dpr_lost_error = error
        self._dpr_close_driver_connection()
        self._dpr_watch, self._dpr_watched = None, _UNWATCHED
        self.closed_in_transaction = True
        self.needs_rollback = True

    def _dpr_transaction_lost(self) -> TransactionLost:
        return TransactionLost(
            f"the connection to database {self.alias!r} was lost inside a transaction after "
            "part of it was acknowledged; the server rolled the whole transaction back and "
            "nothing of it was replayed. Leave the atomic block and run it again if that is "
            "safe (retry_atomic() does so)",
            alias=self.alias,
        )

    def _dpr_recover(
        self, decision: str, error: BaseException | None, sql: object
    ) -> BaseException | None:
        """Carry out a decision; return the exception to raise, or None to run the statement."""
        self._dpr_note_loss(error)
        if decision == Recovery.RERUN:
            self._dpr_replace(error, keep_transaction=not self.autocommit)
            return None
        if decision == Recovery.SESSION_STATE_LOST:
            if self.autocommit:
                self._dpr_discard()
            else:
                self._dpr_abandon_transaction(error)
            self._dpr_session_state = False
            return SessionStateLost(
                f"the connection to database {self.alias!r} was lost while it held session "
                "state (an advisory lock, LISTEN, a temporary table, a session SET or a "
                "prepared statement); a new connection would not have it, so nothing was run "
                "again. Re-establish that state: the next statement uses a new connection",
                alias=self.alias,
            )
        if decision == Recovery.TRANSACTION_LOST:
            self._dpr_abandon_transaction(error)
            return self._dpr_transaction_lost()
        if self.autocommit:
            self._dpr_discard()
        else:
            self._dpr_abandon_transaction(error)
        if decision == Recovery.OUTCOME_UNKNOWN:
            return StatementOutcomeUnknown(
                f"the connection to database {self.alias!r} was lost after this statement was "
                "sent: the server may or may not have applied it, so it was not run again. "
                "Check before repeating it; the next statement uses a new connection. "
                f"Statement: {str(sql)[:200]}",
                alias=self.alias,
            )
        return None  # Recovery.RAISE: the caller re-raises the driver's error

    # --- Statements ----------------------------------------------------------------------------

    def _dpr_statement(
        self,
        wrapper: Any,
        run: Callable[..., Any],
        sql: Any,
        params: Any,
        extra: tuple[Any, ...],
        many: bool,
        first: int = 0,
    ) -> Any:
        """Run one statement within the safety model: look at the connection, replace it if
        dead, run the statement, recover from a loss. ``first`` counts the runs already lost
        (the fast path in the cursor wrapper hands over after one)."""
        options = self.reconnect_options
        assert options is not None
        for attempt in range(first, MAX_RERUNS + 1):
            if self.closed_in_transaction and self.in_atomic_block:
                raise self._dpr_transaction_lost() from self._dpr_lost_error
            connection = self.connection
            if connection is None or wrapper._dpr_serial != self._dpr_serial:
                self._dpr_refresh_cursor(wrapper)
                connection = self.connection
            in_transaction = not self.autocommit
            replacements = 0
            while self._dpr_is_dead(connection, options):
                # Nothing was sent (rule 1). The replacement is checked too: a pool may hand
                # out another connection that died with the first (a failover kills them all).
                replacements += 1
                if replacements > options.CONNECT_ATTEMPTS:
                    raise DatabaseUnavailable(
                        f"database {self.alias!r} handed out {replacements - 1} dead "
                        "connections in a row; nothing was sent (CONNECT_ATTEMPTS in "
                        "RECONNECT bounds this)",
                        alias=self.alias,
                        attempts=replacements - 1,
                        seconds=0.0,
                    )
                exc = self._dpr_recover(
                    self._dpr_decide(False, None, sql, many, wrapper), None, sql
                )
                if exc is not None:
                    raise exc
                self._dpr_refresh_cursor(wrapper)
                connection = self.connection
            started = in_transaction and drivers.transaction_status(connection) != 0
            try:
                result = run(wrapper, sql, params, *extra)
            except DatabaseError as error:
                self._dpr_after_error(
                    error, started, sql, many, wrapper, last=attempt == MAX_RERUNS
                )
                continue
            self._dpr_last_used = time.monotonic()
            if not self._dpr_connecting and creates_session_state(sql):
                self._dpr_session_state = True
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _dpr_after_error(
        self, error: DatabaseError, started: bool, sql: Any, many: bool, wrapper: Any, last: bool
    ) -> None:
        """Called while ``error`` is handled: re-raise, raise what the loss means, or return
        (the connection was replaced and the statement may run again)."""
        cause = error.__cause__
        code = drivers.sqlstate(cause)
        if is_connection_lost(code, self._dpr_broken_after(cause, code)):
            decision = self._dpr_decide(True, started, sql, many, wrapper)
        elif refused_by_read_only_node(code, self._dpr_multi_host):
            decision = self._dpr_decide(False, started, sql, many, wrapper)
        else:
            raise  # not a loss: the caller's error, untouched
        if last and decision == Recovery.RERUN:
            decision = Recovery.RAISE
        exc = self._dpr_recover(decision, cause, sql)
        if decision == Recovery.RAISE:
            raise
        if exc is not None:
            raise exc from cause
        self._dpr_refresh_cursor(wrapper)

    def _dpr_decide(
        self, sent: bool, started: bool | None, sql: Any, many: bool, wrapper: Any
    ) -> str:
        options = self.reconnect_options
        assert options is not None
        in_transaction = not self.autocommit
        if started is None:
            started = in_transaction and drivers.transaction_status(self.connection) != 0
        return decide_after_loss(
            sent=sent,
            in_transaction=in_transaction,
            transaction_started=started,
            session_state=self._dpr_session_state,
            read_only=not many and statement_is_read_only(sql),
            retry_reads=options.RETRY_READS and not self._dpr_no_retry,
            server_side_cursor=wrapper is not None and bool(getattr(wrapper.cursor, "name", None)),
        )

    def _dpr_refresh_cursor(self, wrapper: Any) -> None:
        """Give a cursor wrapper a driver cursor of the current connection."""
        self.ensure_connection()
        old = wrapper.cursor
        name = getattr(old, "name", None)
        with contextlib.suppress(Exception):
            old.close()
        with self.wrap_database_errors:
            wrapper.cursor = super().create_cursor(name)
        wrapper._dpr_serial = self._dpr_serial

    def _dpr_wrap(self, wrapper: Any) -> Any:
        wrapper._dpr_serial = self._dpr_serial
        return wrapper

    def make_cursor(self, cursor: Any) -> Any:
        if self.reconnect_options is None:
            return super().make_cursor(cursor)
        return self._dpr_wrap(ReconnectCursorWrapper(cursor, self))

    def make_debug_cursor(self, cursor: Any) -> Any:
        if self.reconnect_options is None:
            return super().make_debug_cursor(cursor)
        return self._dpr_wrap(ReconnectCursorDebugWrapper(cursor, self))

    # --- Narrow hooks where Django touches the connection outside statements -------------------

    def ensure_connection(self) -> None:
        if (
            self.connection is None
            and self.closed_in_transaction
            and self.in_atomic_block
            and self.reconnect_options is not None
        ):
            raise self._dpr_transaction_lost() from self._dpr_lost_error
        super().ensure_connection()

    def create_cursor(self, name: str | None = None) -> Any:
        try:
            return super().create_cursor(name)
        except self.Database.Error:
            connection = self.connection
            if (
                self.reconnect_options is None
                or connection is None
                or not drivers.connection_is_broken(connection)
            ):
                raise
            if self.closed_in_transaction and self.in_atomic_block:
                raise self._dpr_transaction_lost() from self._dpr_lost_error
            # The driver knows the connection is dead and nothing was sent yet (rule 1).
            exc = self._dpr_recover(self._dpr_decide(False, None, "", False, None), None, "")
            if exc is not None:
                raise exc from None
            return super().create_cursor(name)

    def _set_autocommit(self, autocommit: bool) -> None:
        # Entering atomic() is the cheapest moment to find a dead connection: nothing of the
        # transaction exists yet, so a replacement changes nothing the caller could see.
        connection = self.connection
        options = self.reconnect_options
        if (
            options is not None
            and not autocommit
            and connection is not None
            and drivers.transaction_status(connection) in (0, drivers.TRANSACTION_UNKNOWN)
            and not self._dpr_connecting
            and self._dpr_is_dead(connection, options)
        ):
            exc = self._dpr_recover(self._dpr_decide(False, False, "", False, None), None, "")
            if exc is not None:
                raise exc
        super()._set_autocommit(autocommit)  # type: ignore[misc]

    def _commit(self) -> None:
        connection = self.connection
        if (
            self.reconnect_options is None
            or connection is None
            or drivers.transaction_status(connection) == 0
        ):
            super()._commit()  # type: ignore[misc]
            return  # nothing was sent in this transaction: nothing to lose
        if self._dpr_watch_for(connection).peer_gone() or drivers.connection_is_broken(connection):
            # COMMIT was not sent: the server rolled the transaction back with the connection.
            self._dpr_note_loss(None)
            self._dpr_abandon_transaction(None)
            raise self._dpr_transaction_lost()
        try:
            super()._commit()  # type: ignore[misc]
        except DatabaseError as error:
            cause = error.__cause__
            code = drivers.sqlstate(cause)
            if not is_connection_lost(code, self._dpr_broken_after(cause, code)):
                raise
            self._dpr_note_loss(cause)
            self._dpr_abandon_transaction(cause)
            raise CommitOutcomeUnknown(
                f"the connection to database {self.alias!r} was lost after COMMIT was sent: "
                "the transaction may or may not have committed. Check before running it "
                "again (retry_atomic() resolves this by asking the server); the next "
                "statement uses a new connection",
                alias=self.alias,
            ) from cause

    def _rollback(self) -> None:
        connection = self.connection
        if (
            self.reconnect_options is not None
            and connection is not None
            and drivers.connection_is_broken(connection)
        ):
            # The server rolled back when the connection died: nothing to send. Marking the
            # transaction closed lets atomic() drop the connection on exit instead of
            # reconnecting there (which could hide the caller's exception behind an outage).
            self._dpr_discard()
            self.closed_in_transaction = True
            return None
        super()._rollback()  # type: ignore[misc]

    def is_usable(self) -> bool:
        options = self.reconnect_options
        if options is None:
            return bool(super().is_usable())
        connection = self.connection
        if connection is None:
            return False
        return not self._dpr_is_dead(connection, options)

    # --- Public helpers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def no_retry(self) -> Iterator[None]:
        """Never re-run the reads inside this block (for SELECTs of side-effecting functions)."""
        self._dpr_no_retry += 1
        try:
            yield
        finally:
            self._dpr_no_retry -= 1

    def ensure_usable(self) -> None:
        """Replace the connection now if it is dead, outside any transaction (1.2.0's check)."""
        options = self.reconnect_options
        connection = self.connection
        if options is None or connection is None or not self.autocommit:
            return
        if self._dpr_is_dead(connection, options):
            exc = self._dpr_recover(self._dpr_decide(False, False, "", False, None), None, "")
            if exc is not None:
                raise exc


class _ReconnectCursorMixin:
    """Route every statement of a cursor wrapper through the engine."""

    db: Any
    _dpr_serial: int

    def _execute(self, sql: Any, params: Any, *ignored_wrapper_args: Any) -> Any:
        """The path of nearly every statement, written out flat: it runs once per query and
        its cost is measured against stock Django. The connection is the one this cursor
        was made on and the one being watched, was used a moment ago, no other thread lost
        one of this alias, its socket shows nothing and the driver does not call it broken.
        Anything else, and any error, goes to ``_dpr_statement``."""
        db = self.db
        connection = db.connection
        if (
            self._dpr_serial == db._dpr_serial
            and db._dpr_watched is connection
            and db._dpr_generation == db._dpr_state.generation
            and _monotonic() - db._dpr_last_used <= db._dpr_idle_after
            and not db._dpr_poll(0)
            and not drivers.connection_is_broken(connection)
        ):
            started = not db.autocommit and drivers.transaction_status(connection) != 0
            try:
                result = _run_one(self, sql, params, *ignored_wrapper_args)
            except DatabaseError as error:
                db._dpr_after_error(error, started, sql, False, self, last=False)
                return db._dpr_statement(
                    self, _run_one, sql, params, ignored_wrapper_args, False, 1
                )
            db._dpr_last_used = _monotonic()
            if not db._dpr_connecting and creates_session_state(sql):
                db._dpr_session_state = True
            return result
        return db._dpr_statement(self, _run_one, sql, params, ignored_wrapper_args, False)

    def _executemany(self, sql: Any, param_list: Any, *ignored_wrapper_args: Any) -> Any:
        return self.db._dpr_statement(self, _run_many, sql, param_list, ignored_wrapper_args, True)


# Django's own methods, called unbound: neither debug wrapper overrides them, and this spares
# building a super() proxy and a bound method for every statement.
_run_one = CursorWrapper._execute  # type: ignore[attr-defined]
_run_many = CursorWrapper._executemany  # type: ignore[attr-defined]


class ReconnectCursorWrapper(_ReconnectCursorMixin, CursorWrapper):
    pass


class ReconnectCursorDebugWrapper(_ReconnectCursorMixin, CursorDebugWrapper):
    pass
