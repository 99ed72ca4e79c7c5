"""The exceptions callers see when a lost connection could not be hidden from them.

Each subclasses ``django.db.OperationalError``, so code that already catches that keeps
working. Each builds its own message from what happened (the alias, the numbers, what the
caller can do) and keeps those facts as attributes. They pickle with their attributes, for
Celery result backends, ``multiprocessing`` and Django's ``--parallel`` test runner.

When two facts hold at once, one exception says both: a write whose outcome is unknown on a
connection that also held an advisory lock raises
:class:`StatementOutcomeUnknownAndSessionStateLost`, which is a
:class:`StatementOutcomeUnknown` *and* a :class:`SessionStateLost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import OperationalError

from .policy import Outcome

__all__ = [
    "CommitOutcomeUnknown",
    "CommitOutcomeUnknownAndSessionStateLost",
    "DatabaseUnavailable",
    "ReconnectError",
    "SessionStateLost",
    "StatementInterrupted",
    "StatementInterruptedAndSessionStateLost",
    "StatementOutcomeUnknown",
    "StatementOutcomeUnknownAndSessionStateLost",
    "TransactionLost",
    "TransactionLostAndSessionStateLost",
    "exception_for",
]

# Statement text in a message is cut to this many characters; parameters are never shown.
STATEMENT_CHARS = 200


def _rebuild(cls: type[ReconnectError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def _statement_note(statement: str | None) -> str:
    if not statement:
        return ""
    text = " ".join(statement.split())
    if len(text) > STATEMENT_CHARS:
        text = text[: STATEMENT_CHARS - 3] + "..."
    return f" Statement: {text}"


def _list(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class ReconnectError(OperationalError):
    """Base class of every error this package raises about a lost connection."""

    alias: str

    def __init__(self, message: str = "", *, alias: str = "") -> None:
        super().__init__(message)
        self.alias = alias

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class DatabaseUnavailable(ReconnectError):
    """No connection could be opened within the deadline, or the breaker fails calls fast."""

    attempts: int
    seconds: float

    def __init__(
        self,
        message: str = "",
        *,
        alias: str = "",
        attempts: int = 0,
        seconds: float = 0.0,
        reason: str = "",
    ) -> None:
        if not message:
            message = (
                f"could not connect to database {alias!r} after {attempts} attempt(s) in "
                f"{seconds:.2f} s: {reason}; the database is down or unreachable "
                "(DEADLINE and CONNECT_ATTEMPTS in RECONNECT bound the wait)"
            )
        super().__init__(message, alias=alias)
        self.attempts = attempts
        self.seconds = seconds

    @classmethod
    def breaker_open(
        cls, *, alias: str, down_for: float, probe_every: float
    ) -> DatabaseUnavailable:
        return cls(
            f"database {alias!r} is unavailable: connecting has failed for {down_for:.1f} s, "
            f"so calls fail at once while one probe every {probe_every:.2f} s checks whether "
            "it is back; retry later",
            alias=alias,
        )

    @classmethod
    def connections_keep_dying(
        cls, *, alias: str, losses: int, seconds: float, reason: str
    ) -> DatabaseUnavailable:
        return cls(
            f"the connection to database {alias!r} was lost {losses} times in a row in "
            f"{seconds:.2f} s ({reason}); nothing was written, and the statement was not run "
            "again: the database or the network keeps dropping connections",
            alias=alias,
            attempts=losses,
            seconds=seconds,
        )


class SessionStateLost(ReconnectError):
    """The lost connection held session state that a new connection cannot be given.

    Advisory locks, LISTEN, temporary tables, prepared statements, held cursors, dblink
    connections. Raised once; the statement after it runs on a new connection, where the
    application must re-establish what it needs. Session settings (SET, ``set_config(...,
    false)``, SET ROLE) are restored on the new connection instead, without an exception.
    """

    session_state: tuple[str, ...]

    def __init__(
        self, message: str = "", *, alias: str = "", session_state: Sequence[str] = ()
    ) -> None:
        if not message:
            message = (
                f"the connection to database {alias!r} was lost while it held session state "
                f"({_list(list(session_state)) or 'see the log'}); a new connection does not "
                "have it, so nothing was run again. Re-establish that state: the next "
                "statement uses a new connection"
            )
        super().__init__(message, alias=alias)
        self.session_state = tuple(session_state)


def _session_note(session_state: Sequence[str]) -> str:
    if not session_state:
        return ""
    return (
        f" The connection also held session state ({_list(list(session_state))}) that the "
        "new connection does not have: re-establish it before going on."
    )


class StatementOutcomeUnknown(ReconnectError):
    """The connection was lost after a write was sent: it may or may not have been applied.

    It is not run again, since that could apply it twice. The next statement opens a new
    connection; check whether the write happened (or make it idempotent) before repeating it.
    """

    statement: str | None

    def __init__(
        self,
        message: str = "",
        *,
        alias: str = "",
        statement: str | None = None,
        reason: str = "",
        session_state: Sequence[str] = (),
    ) -> None:
        if not message:
            message = (
                f"the connection to database {alias!r} was lost after this statement was "
                "sent: the server may or may not have applied it, so it was not run again"
                f"{reason}. Check before repeating it; the next statement uses a new "
                f"connection.{_session_note(session_state)}{_statement_note(statement)}"
            )
        super().__init__(message, alias=alias)
        self.statement = statement
        if session_state:
            self.session_state = tuple(session_state)


class CommitOutcomeUnknown(StatementOutcomeUnknown):
    """The connection was lost after COMMIT was sent: the transaction may have committed."""

    def __init__(
        self,
        message: str = "",
        *,
        alias: str = "",
        statement: str | None = "COMMIT",
        reason: str = "",
        session_state: Sequence[str] = (),
    ) -> None:
        if not message:
            message = (
                f"the connection to database {alias!r} was lost after COMMIT was sent: the "
                f"transaction may or may not have committed{reason}. Check before running it "
                "again (retry_atomic() resolves this by asking the server); the next "
                f"statement uses a new connection.{_session_note(session_state)}"
            )
        super().__init__(
            message,
            alias=alias,
            statement=statement,
            session_state=session_state,
        )


class TransactionLost(ReconnectError):
    """The connection died inside a transaction: the server rolled the whole of it back.

    Nothing of it was replayed. The rest of the ``atomic()`` block raises this too; the
    outermost block exits cleanly and the next one gets a new connection. Run the whole block
    again if it is safe to (``retry_atomic`` does so).
    """

    def __init__(
        self,
        message: str = "",
        *,
        alias: str = "",
        reason: str = "",
        session_state: Sequence[str] = (),
    ) -> None:
        if not message:
            message = (
                f"the connection to database {alias!r} was lost inside a transaction"
                f"{reason or ' after part of it was acknowledged'}; the server rolled the "
                "whole transaction back and nothing of it was replayed. Leave the atomic "
                "block and run it again if that is safe (retry_atomic() does so)."
                f"{_session_note(session_state)}"
            )
        super().__init__(message, alias=alias)
        if session_state:
            self.session_state = tuple(session_state)


class StatementInterrupted(ReconnectError):
    """The connection was lost while a statement's data was streaming.

    A server-side cursor's fetch or a ``COPY ... TO`` had already handed rows to the caller,
    or a ``COPY ... FROM`` was cut before the end of its data, so the statement could not be
    run again unseen. Nothing was written by it (a COPY is atomic); run it again from the
    start.
    """

    statement: str | None

    def __init__(
        self, message: str = "", *, alias: str = "", statement: str | None = None
    ) -> None:
        if not message:
            message = (
                f"the connection to database {alias!r} was lost while the data of this "
                "statement was streaming: part of it had already crossed, so it was not run "
                "again. Nothing was written by it; run it again from the start (the next "
                f"statement uses a new connection).{_statement_note(statement)}"
            )
        super().__init__(message, alias=alias)
        self.statement = statement


# Two facts at once. Catch either parent; the message says both.


class StatementOutcomeUnknownAndSessionStateLost(StatementOutcomeUnknown, SessionStateLost):
    """A write's outcome is unknown, and the connection's session state is gone too."""

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        StatementOutcomeUnknown.__init__(self, message, **kwargs)
        self.session_state = tuple(kwargs.get("session_state", ()))


class CommitOutcomeUnknownAndSessionStateLost(CommitOutcomeUnknown, SessionStateLost):
    """A COMMIT's outcome is unknown, and the connection's session state is gone too."""

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        CommitOutcomeUnknown.__init__(self, message, **kwargs)
        self.session_state = tuple(kwargs.get("session_state", ()))


class StatementInterruptedAndSessionStateLost(StatementInterrupted, SessionStateLost):
    """A stream was cut short, and the connection's session state is gone too."""

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        session_state = tuple(kwargs.pop("session_state", ()))
        if not message:
            message = StatementInterrupted(**kwargs).args[0] + _session_note(session_state)
        StatementInterrupted.__init__(self, message, **kwargs)
        self.session_state = session_state


class TransactionLostAndSessionStateLost(TransactionLost, SessionStateLost):
    """The transaction was rolled back with the connection, and its session state is gone."""

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        TransactionLost.__init__(self, message, **kwargs)
        self.session_state = tuple(kwargs.get("session_state", ()))


def exception_for(
    outcome: Outcome,
    *,
    alias: str,
    statement: str | None = None,
    reason: str = "",
    session_state: Sequence[str] = (),
    losses: int = 0,
    seconds: float = 0.0,
    cause: str = "",
) -> ReconnectError:
    """The exception that says ``outcome``, and the lost session state too when there is some."""
    state = tuple(session_state)
    if outcome is Outcome.UNAVAILABLE:
        return DatabaseUnavailable.connections_keep_dying(
            alias=alias, losses=losses, seconds=seconds, reason=cause
        )
    if outcome is Outcome.OUTCOME_UNKNOWN:
        cls = StatementOutcomeUnknownAndSessionStateLost if state else StatementOutcomeUnknown
        return cls(alias=alias, statement=statement, reason=reason, session_state=state)
    if outcome is Outcome.COMMIT_OUTCOME_UNKNOWN:
        commit = CommitOutcomeUnknownAndSessionStateLost if state else CommitOutcomeUnknown
        return commit(alias=alias, session_state=state)
    if outcome is Outcome.TRANSACTION_LOST:
        lost = TransactionLostAndSessionStateLost if state else TransactionLost
        return lost(alias=alias, reason=reason, session_state=state)
    if outcome is Outcome.INTERRUPTED:
        if state:
            return StatementInterruptedAndSessionStateLost(
                alias=alias, statement=statement, session_state=state
            )
        return StatementInterrupted(alias=alias, statement=statement)
    if outcome is Outcome.SESSION_STATE_LOST:
        return SessionStateLost(alias=alias, session_state=state)
    raise ValueError(f"{outcome} is not raised")
