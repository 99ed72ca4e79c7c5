"""The Django glue: the narrow hooks of a PostgreSQL ``DatabaseWrapper`` that meet the engine.

``ReconnectMixin`` goes in front of a PostgreSQL ``DatabaseWrapper`` (``backend/base.py``,
``postgis/base.py``, or any PostgreSQL-derived backend of your own). Each hook calls Django's
own and adds one thing: connections are opened within a deadline (``connect.py``), each gets a
``Link`` the cursors consult (``cursor.py``), losses go to ``recovery.py``, and Django's own
transaction bookkeeping (``in_atomic_block``, ``closed_in_transaction``, ``needs_rollback``)
is reused rather than shadowed. With ``'RECONNECT': False`` every hook is Django's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.db.backends.postgresql.base import DatabaseWrapper as _PostgresWrapper

from . import drivers, events, metrics, recovery, replacement, signals
from .backoff import Deadline
from .checks import ReconnectValidation
from .conf import TCP_DEFAULTS, ReconnectOptions, parse_setting
from .connect import connect_within_deadline, pool_with_deadline
from .cursor import wrapper_class
from .exceptions import TransactionLost
from .policy import Loss, Statement, decide, is_connection_lost
from .session import SessionLog
from .state import Link, WrapperState, alias_health

if TYPE_CHECKING:
    _Base = _PostgresWrapper
else:
    _Base = object

__all__ = ["ReconnectMixin"]

_DEFAULTS = ReconnectOptions()

metrics.install()  # Prometheus counters, when prometheus_client is installed


class ReconnectMixin(_Base):
    """Recover a PostgreSQL ``DatabaseWrapper`` from lost connections, within the safety model."""

    reconnect_options: ReconnectOptions | None
    validation_class = ReconnectValidation
    carries_reconnect_engine = True
    """Tells the system checks that a custom ENGINE is built on this mixin."""

    def __init__(self, settings_dict: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(settings_dict, *args, **kwargs)
        self._reconnect_config_error: str | None = None
        try:
            self.reconnect_options = parse_setting(self.alias, settings_dict.get("RECONNECT"))
        except ValueError as error:
            self.reconnect_options = None
            self._reconnect_config_error = str(error)
        options = self.reconnect_options or _DEFAULTS
        self._reconnect = WrapperState(
            options,
            alias_health(self.alias, options),
            multi_host="," in str(settings_dict.get("HOST") or ""),
        )

    # --- Opening connections -------------------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        options = self.reconnect_options
        if options is not None and options.TCP_DEFAULTS:
            for key, value in TCP_DEFAULTS.items():
                params.setdefault(key, value)
        return params

    def connect(self) -> None:
        if self._reconnect_config_error:
            raise ImproperlyConfigured(self._reconnect_config_error)
        options = self.reconnect_options
        if options is None:
            return super().connect()
        state = self._reconnect
        deadline = state.deadline or Deadline.after(options.DEADLINE)
        attempts = connect_within_deadline(self, deadline, after_loss=state.lost_at is not None)
        state.abandoned = None
        state.closing_after_loss = False
        state.carried = None
        if state.unreported and state.link is not None:
            state.link.suspect()  # the first statement takes the slow path and reports it
        if state.lost_at is not None:
            seconds = time.monotonic() - state.lost_at
            state.lost_at = None
            events.emit(
                events.RECONNECTED,
                self.alias,
                "reconnected to database %r after %d attempt(s), %.3f s after the loss",
                self.alias,
                attempts,
                seconds,
                level=10 if state.replacing else 20,
                connection=self,
                attempts=attempts,
                seconds=seconds,
                backend_pid=drivers.backend_pid(self.connection),
            )
            signals.reconnected.send(
                sender=type(self),
                connection=self,
                alias=self.alias,
                attempts=attempts,
                seconds=seconds,
            )
        return None

    def _connect_once(self) -> None:
        """Django's own connect(): one attempt, run by ``connect.connect_within_deadline``."""
        super().connect()

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if self.reconnect_options is not None:
            self._link_to(connection)
        return connection

    if hasattr(_PostgresWrapper, "pool"):  # Django 5.1+

        @property
        def pool(self) -> Any:
            # During a recovery, the pool waits no longer than the call's deadline.
            return pool_with_deadline(super().pool, self._reconnect.deadline)

    def init_connection_state(self) -> None:
        super().init_connection_state()
        if self.reconnect_options is None:
            return
        state = self._reconnect
        carried = state.carried
        if carried is not None and carried.settings and not state.options.TRANSACTION_POOLING:
            replacement.restore_session(self, carried)
        else:
            state.session = SessionLog()

    def _link_to(self, connection: Any) -> Link:
        state = self._reconnect
        if state.link is not None:
            state.link.retire()
        link = Link(connection, state.options.IDLE_CHECK_AFTER)
        state.link = link
        state.health.links.add(link)
        return link

    def _adopt_connection(self) -> Link:
        """A driver connection Django holds that the engine did not open (a test swapped it)."""
        return self._link_to(self.connection)

    def _current_link(self) -> Link:
        link = self._reconnect.link
        if link is None or link.connection is not self.connection:
            link = self._adopt_connection()
        return link

    # --- Cursors -------------------------------------------------------------------------------

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
            state = self._reconnect
            if state.abandoned is not None and self.in_atomic_block:
                # The engine gave this transaction up: the rest of the block says so.
                raise TransactionLost(alias=self.alias, reason=state.abandoned_reason) from (
                    state.abandoned if isinstance(state.abandoned, BaseException) else None
                )
            # The driver knows the connection is dead and nothing was sent yet (rule 1).
            recovery.found_dead(self)
            self.ensure_connection()
            return super().create_cursor(name)

    def _driver_cursor(self, name: str | None) -> Any:
        return super().create_cursor(name)

    def make_cursor(self, cursor: Any) -> Any:
        if self.reconnect_options is None:
            return super().make_cursor(cursor)
        return self._wrap_cursor(cursor, debug=False)

    def make_debug_cursor(self, cursor: Any) -> Any:
        if self.reconnect_options is None:
            return super().make_debug_cursor(cursor)
        return self._wrap_cursor(cursor, debug=True)

    def _wrap_cursor(self, cursor: Any, *, debug: bool) -> Any:
        wrapper = wrapper_class(cursor, debug=debug)(cursor, self)
        link = self._reconnect.link
        if link is None or link.connection is not self.connection:
            link = self._adopt_connection()
        wrapper._link = link  # type: ignore[attr-defined]
        return wrapper

    # --- Where Django touches the connection outside statements --------------------------------

    def _set_autocommit(self, autocommit: bool) -> None:
        # Entering atomic() is the cheapest moment to find a dead connection: nothing of the
        # transaction exists yet, so a replacement changes nothing the caller could see.
        state = self._reconnect
        if (
            self.reconnect_options is not None
            and not autocommit
            and not state.connecting
            and self.connection is not None
            and drivers.transaction_status(self.connection)
            in (drivers.TRANSACTION_IDLE, drivers.TRANSACTION_UNKNOWN)
        ):
            link = self._current_link()
            if link.is_dead(state.options.PING_TIMEOUT):
                recovery.found_dead(self)
        super()._set_autocommit(autocommit)  # type: ignore[misc]

    def _commit(self) -> None:
        state = self._reconnect
        connection = self.connection
        if (
            self.reconnect_options is None
            or connection is None
            or drivers.transaction_status(connection) == drivers.TRANSACTION_IDLE
        ):
            super()._commit()  # type: ignore[misc]
            state.session.commit()
            return  # nothing was sent in this transaction: nothing to lose
        if self._current_link().peer_gone():
            # Rule 6: COMMIT was not sent, so the server rolled the transaction back.
            self._commit_lost(None, sent=False)
        try:
            super()._commit()  # type: ignore[misc]
        except DatabaseError as error:
            cause = error.__cause__
            if not self._lost_by(cause):
                raise
            self._commit_lost(cause, sent=True)
        state.session.commit()

    def _commit_lost(self, cause: BaseException | None, *, sent: bool) -> None:
        state = self._reconnect
        lost = () if state.options.TRANSACTION_POOLING else state.session.lost_state()
        loss = Loss(
            Statement.COMMIT,
            sent=sent,
            in_transaction=True,
            transaction_started=True,
            session_state=lost,
        )
        replacement.note_loss(self, cause, sent=sent, statement="COMMIT")
        raise replacement.give_up(self, decide(loss), loss, cause, "COMMIT") from cause

    def _rollback(self) -> None:
        state = self._reconnect
        connection = self.connection
        if self.reconnect_options is None or connection is None:
            super()._rollback()  # type: ignore[misc]
            return
        if drivers.connection_is_broken(connection) or self._current_link().inherited:
            self._rolled_back_with_connection(None)  # rule 7: nothing to send
            return
        try:
            super()._rollback()  # type: ignore[misc]
        except DatabaseError as error:
            cause = error.__cause__
            if not self._lost_by(cause):
                raise
            self._rolled_back_with_connection(cause)
            return
        state.session.rollback()

    def _rolled_back_with_connection(self, cause: BaseException | None) -> None:
        """Rule 7: the server rolled back when the connection died; there is nothing to send.

        Marking the transaction closed lets atomic() drop the connection on exit instead of
        reconnecting there (which could hide the caller's exception behind an outage).
        """
        state = self._reconnect
        state.session.rollback()
        if state.abandoned is None:
            replacement.note_loss(self, cause, sent=False, statement="ROLLBACK")
            if not state.options.TRANSACTION_POOLING:
                state.unreported = state.session.lost_state()
        self._discard_connection()
        self.closed_in_transaction = True

    def is_usable(self) -> bool:
        options = self.reconnect_options
        if options is None:
            return bool(super().is_usable())
        connection = self.connection
        if connection is None:
            return False
        if drivers.transaction_status(connection) == drivers.TRANSACTION_IN_ERROR:
            return False  # as Django's SELECT 1 would fail there
        link = self._current_link()
        if not link.is_dead(options.PING_TIMEOUT):
            return True
        self._lost_between_statements()
        return False

    def _lost_between_statements(self) -> None:
        """A connection found dead outside any statement: the close() that follows keeps what
        the session held, to restore its settings and report the rest at the next statement."""
        state = self._reconnect
        replacement.note_loss(self, None, sent=False)
        if not state.options.TRANSACTION_POOLING:
            state.unreported = state.session.lost_state()
        state.closing_after_loss = True

    def close(self) -> None:
        if self.reconnect_options is not None:
            state = self._reconnect
            if not state.closing_after_loss:
                state.carried = None  # a close of your own: the next session starts afresh
                state.unreported = ()
            state.closing_after_loss = False
        super().close()

    def _close(self) -> None:
        link = self._reconnect.link
        if link is not None and link.connection is self.connection:
            link.retire()
            self._reconnect.link = None
        super()._close()  # type: ignore[misc]

    # --- Helpers for the engine ----------------------------------------------------------------

    def _lost_by(self, error: BaseException | None) -> bool:
        """Rule 0 for any failed driver call on this connection: did it lose the connection?

        The one judgement for statements, COMMIT, ROLLBACK, Django's set-up of a new
        connection, the replay of session settings and the volatility question alike. The
        driver's status says "broken" in most cases. psycopg 3 can also fail a call with
        "connection socket closed" before libpq's status changes: its poll can see the RST's
        error flag a moment before the kernel marks the socket readable and hung up. An
        OperationalError with no SQLSTATE on a socket whose peer is gone is that.
        """
        connection = self.connection
        code = drivers.sqlstate(error)
        broken = (
            connection is None
            or drivers.connection_is_broken(connection)
            or (
                code is None
                and isinstance(error, self.Database.OperationalError)
                and (link := self._reconnect.link) is not None
                and link.connection is connection
                and link.watch.peer_gone()
            )
        )
        return is_connection_lost(code, broken)

    def _close_driver_connection(self) -> None:
        """Close the dead driver connection, then let Django release it.

        Closing first matters with a pool: psycopg_pool takes back a connection whose libpq
        status still says OK (the driver has not noticed the loss yet) as healthy, and would
        hand it out again; a closed one it discards.
        """
        connection = self.connection
        state = self._reconnect
        if state.link is not None:
            state.link.retire()
            state.link = None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
        with contextlib.suppress(Exception):
            super()._close()  # type: ignore[misc]

    def _discard_connection(self) -> None:
        """Drop the driver connection without a word to the server, which is gone anyway."""
        self._close_driver_connection()
        self.connection = None

    # --- Public helpers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def no_retry(self) -> Iterator[None]:
        """Never run a statement of this alias again inside this block (see ``no_retry()``)."""
        token = recovery.no_retry_aliases.set(recovery.no_retry_aliases.get() | {self.alias})
        try:
            yield
        finally:
            recovery.no_retry_aliases.reset(token)

    # --- 1.2.0's methods, kept ------------------------------------------------------------------

    def reconnect_enabled(self) -> bool:
        """1.2.0: whether RECONNECT is on for this alias."""
        return self.reconnect_options is not None

    def should_reconnect(self) -> bool:
        """1.2.0: whether a replacement is allowed now (a connection, and no transaction)."""
        return (
            self.reconnect_enabled()
            and self.connection is not None
            and drivers.transaction_status(self.connection) == drivers.TRANSACTION_IDLE
        )

    def reconnect(self) -> None:
        """1.2.0: replace the connection now, without asking whether it is dead.

        Outside a transaction only (as ``should_reconnect()`` says); the session's settings
        are not carried over, as with any close() of your own.
        """
        self.validate_no_atomic_block()
        self.close()
        self.connect()

    def ensure_usable(self) -> None:
        """Replace the connection now if it is dead, outside any transaction (1.2.0's check)."""
        options = self.reconnect_options
        if options is None or self.connection is None or not self.autocommit:
            return
        link = self._current_link()
        if link.inherited or link.is_dead(options.PING_TIMEOUT):
            recovery.found_dead(self)
