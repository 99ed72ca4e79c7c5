"""The exceptions callers see when a lost connection could not be hidden from them.

Each subclasses ``django.db.OperationalError``, so code that already catches that keeps
working, and each is raised ``from`` the driver's error, which stays available as
``__cause__``.
"""

from __future__ import annotations

from django.db import OperationalError

__all__ = [
    "CommitOutcomeUnknown",
    "DatabaseUnavailable",
    "ReconnectError",
    "SessionStateLost",
    "StatementOutcomeUnknown",
    "TransactionLost",
]


class ReconnectError(OperationalError):
    """Base class of every error this package raises about a lost connection."""

    def __init__(self, message: str, *, alias: str) -> None:
        super().__init__(message)
        self.alias = alias


class DatabaseUnavailable(ReconnectError):
    """No connection could be opened within the deadline, or the breaker fails fast."""

    def __init__(self, message: str, *, alias: str, attempts: int, seconds: float) -> None:
        super().__init__(message, alias=alias)
        self.attempts = attempts
        self.seconds = seconds


class StatementOutcomeUnknown(ReconnectError):
    """The connection was lost after a write was sent: it may or may not have been applied.

    It is not run again, since that could apply it twice. The next statement opens a new
    connection; check whether the write happened (or make it idempotent) before repeating it.
    """


class CommitOutcomeUnknown(StatementOutcomeUnknown):
    """The connection was lost after COMMIT was sent: the transaction may have committed."""


class TransactionLost(ReconnectError):
    """The connection died inside a transaction after part of it was acknowledged.

    The server rolled the whole transaction back. The rest of the ``atomic()`` block raises
    this too; the outermost block exits cleanly and the next one gets a new connection. Run the
    whole block again if it is safe to (``retry_atomic`` does so).
    """


class SessionStateLost(ReconnectError):
    """The lost connection held session state (advisory locks, LISTEN, temporary tables, SET).

    Raised once, because a new connection would silently lack that state; the statement after
    it runs on a new connection, where the application must re-establish what it needs.
    """
