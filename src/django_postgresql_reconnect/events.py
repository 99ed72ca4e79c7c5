"""Every decision the engine makes, said once: one log line and one signal.

The log line goes through the ``django_postgresql_reconnect`` logger with structured fields
in ``extra`` (``alias``, ``decision``, ``attempts``, ``seconds``, ``sqlstate``,
``backend_pid``, and ``statement`` when LOG_STATEMENTS is on), so that JSON logging and Sentry
breadcrumbs get them as fields. Neither ever carries a statement's parameters or a secret of
the connection settings: messages from the driver are scrubbed of the configured passwords
before they are shown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from . import signals
from .policy import Outcome

__all__ = ["DECISIONS", "describe", "logger"]

logger = logging.getLogger("django_postgresql_reconnect")

LOST = "connection lost"
RERUN = "rerun"
RECONNECTED_BEFORE_SEND = "reconnected before send"
RECONNECTED = "reconnected"
OUTCOME_UNKNOWN = "outcome unknown"
COMMIT_OUTCOME_UNKNOWN = "commit outcome unknown"
TRANSACTION_LOST = "transaction lost"
SESSION_STATE_LOST = "session state lost"
SESSION_STATE_RESTORED = "session state restored"
INTERRUPTED = "interrupted"
UNAVAILABLE = "unavailable"
BREAKER_OPENED = "breaker opened"
BREAKER_HALF_OPEN = "breaker half-open"
BREAKER_CLOSED = "breaker closed"

DECISIONS = (
    RERUN,
    RECONNECTED_BEFORE_SEND,
    OUTCOME_UNKNOWN,
    COMMIT_OUTCOME_UNKNOWN,
    TRANSACTION_LOST,
    SESSION_STATE_LOST,
    SESSION_STATE_RESTORED,
    INTERRUPTED,
    UNAVAILABLE,
    BREAKER_OPENED,
    BREAKER_HALF_OPEN,
    BREAKER_CLOSED,
)
"""Every value the ``decision`` field and signal argument can take."""

DECISION_OF = {
    Outcome.RUN_AGAIN: RERUN,
    Outcome.OUTCOME_UNKNOWN: OUTCOME_UNKNOWN,
    Outcome.COMMIT_OUTCOME_UNKNOWN: COMMIT_OUTCOME_UNKNOWN,
    Outcome.TRANSACTION_LOST: TRANSACTION_LOST,
    Outcome.SESSION_STATE_LOST: SESSION_STATE_LOST,
    Outcome.INTERRUPTED: INTERRUPTED,
    Outcome.UNAVAILABLE: UNAVAILABLE,
}
"""The decision an outcome of the safety model is logged and counted as."""

STATEMENT_CHARS = 200
_SECRET_OPTIONS = ("password", "sslpassword", "sslkey", "passfile", "oauth_client_secret")


def secrets_of(settings_dict: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of a DATABASES entry that must never be shown."""
    found = [settings_dict.get("PASSWORD")]
    options = settings_dict.get("OPTIONS") or {}
    found.extend(options.get(key) for key in _SECRET_OPTIONS)
    return tuple(s for s in found if isinstance(s, str) and len(s) >= 3)


def describe(error: BaseException | None, secrets: Iterable[str] = ()) -> str:
    """The first line of an error, for a message or a log line, with secrets masked."""
    if error is None:
        return "found closed before use"
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    for secret in secrets:
        text = text.replace(secret, "********")
    return text


def shorten(statement: str | None) -> str | None:
    if statement is None:
        return None
    text = " ".join(statement.split())
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 3] + "..."


def emit(
    decision: str,
    alias: str,
    message: str,
    *args: Any,
    level: int = logging.WARNING,
    connection: Any = None,
    attempts: int | None = None,
    seconds: float | None = None,
    sqlstate: str | None = None,
    backend_pid: int | None = None,
    statement: str | None = None,
    exc_info: bool = False,
    **more: Any,
) -> None:
    """Log one line and send ``signals.decided`` for one decision."""
    extra: dict[str, Any] = {
        "alias": alias,
        "decision": decision,
        "attempts": attempts,
        "seconds": None if seconds is None else round(seconds, 6),
        "sqlstate": sqlstate,
        "backend_pid": backend_pid,
    }
    options = getattr(getattr(connection, "_reconnect", None), "options", None)
    if statement is not None and (options is None or options.LOG_STATEMENTS):
        extra["statement"] = shorten(statement)
    extra.update(more)
    logger.log(level, message, *args, extra=extra)
    signals.decided.send(
        sender=type(connection) if connection is not None else None,
        connection=connection,
        alias=alias,
        decision=decision,
        attempts=attempts,
        seconds=seconds,
        sqlstate=sqlstate,
        backend_pid=backend_pid,
    )


def breaker_changed(alias: str, state: str, seconds: float) -> None:
    """The breaker of ``alias`` opened, let a probe through, or closed."""
    if state == "open":
        emit(
            BREAKER_OPENED,
            alias,
            "breaker opened for database %r: connecting failed for a whole deadline; calls "
            "now fail at once while probes check whether it is back",
            alias,
            level=logging.ERROR,
        )
    elif state == "half-open":
        emit(
            BREAKER_HALF_OPEN,
            alias,
            "breaker half-open for database %r: probing after %.1f s down",
            alias,
            seconds,
            level=logging.INFO,
            seconds=seconds,
        )
    else:
        emit(
            BREAKER_CLOSED,
            alias,
            "breaker closed for database %r: it is back after %.1f s",
            alias,
            seconds,
            level=logging.WARNING,
            seconds=seconds,
        )
