"""Replacing a dead connection, or giving it up, the way Django's own bookkeeping expects.

A replacement inside ``atomic()`` keeps the block's state (``in_atomic_block``, its
savepoints, its ``on_commit`` callbacks) across Django's ``connect()``, which resets it; a
connection given up inside a transaction is marked ``closed_in_transaction``, so that the rest
of the block fails and its exit drops the connection instead of reconnecting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import drivers, events, signals
from .backoff import Deadline
from .exceptions import ReconnectError, SessionStateLost, TransactionLost, exception_for
from .policy import Decision, Loss, Outcome
from .session import SessionLog

if TYPE_CHECKING:
    from .mixin import ReconnectMixin

__all__ = [
    "abandon_transaction",
    "drop_inherited",
    "elapsed",
    "give_up",
    "note_loss",
    "replace_connection",
    "restore_session",
    "say_run_again",
]

_monotonic = time.monotonic


def note_loss(
    db: ReconnectMixin, error: BaseException | None, *, sent: bool, statement: str | None = None
) -> None:
    """Say once that a connection was lost, and let the alias's other connections know."""
    state = db._reconnect
    link = state.link
    pid = drivers.backend_pid(link.connection) if link is not None else None
    if state.lost_at is None:
        state.lost_at = _monotonic()
    if not state.options.TRANSACTION_POOLING and state.carried is None:
        state.carried = state.session.after_loss()
    state.health.lost_one(link)
    reason = events.describe(error, events.secrets_of(db.settings_dict))
    events.emit(
        events.LOST,
        db.alias,
        "connection to database %r lost%s: %s",
        db.alias,
        f" (backend {pid})" if pid else "",
        reason,
        level=logging.WARNING,
        connection=db,
        sqlstate=drivers.sqlstate(error),
        backend_pid=pid,
        statement=statement,
        sent=sent,
    )
    signals.connection_lost.send(
        sender=type(db), connection=db, alias=db.alias, error=error, sent=sent
    )


def replace_connection(
    db: ReconnectMixin,
    deadline: Deadline,
    *,
    keep_transaction: bool,
    ask: Callable[[Any], bool] | None = None,
) -> None:
    """Open a new connection in place of a dead one, keeping an unstarted transaction open.

    ``ask`` runs on the new connection in autocommit, before the transaction is reopened.
    """
    saved = _save_atomic(db) if keep_transaction else None
    dead = db.connection
    db._discard_connection()
    state = db._reconnect
    state.deadline = deadline
    state.replacing = True
    try:
        with db.wrap_database_errors:
            db.connect()
        if ask is not None and not ask(db.connection):
            return  # the new connection died under the question: the caller tries again
        if saved is not None:
            db.set_autocommit(False)
    except BaseException:
        if saved is not None:
            _restore_atomic(db, saved)
            # Keep the dead connection in place: Django would otherwise say "cannot open a
            # new connection in an atomic block" where the engine says TransactionLost.
            db.connection = db.connection or dead
            db.closed_in_transaction = True
            db.needs_rollback = True
            state.abandoned = True  # type: ignore[assignment]
            state.abandoned_reason = " and no new connection could be opened in time"
        raise
    finally:
        state.deadline = None
        state.replacing = False
        if saved is not None and not db.closed_in_transaction:
            _restore_atomic(db, saved)


_ATOMIC_FIELDS = (
    "in_atomic_block",
    "savepoint_ids",
    "atomic_blocks",
    "needs_rollback",
    "commit_on_exit",
    "run_on_commit",
    "savepoint_state",
)


def _save_atomic(db: ReconnectMixin) -> dict[str, Any]:
    return {name: getattr(db, name) for name in _ATOMIC_FIELDS if hasattr(db, name)}


def _restore_atomic(db: ReconnectMixin, saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        setattr(db, name, value)


def abandon_transaction(db: ReconnectMixin, error: BaseException | None, reason: str = "") -> None:
    """Give up the connection inside a transaction the way Django's close() would.

    ``closed_in_transaction`` makes the rest of the atomic block fail and its exit drop the
    connection without reconnecting (which could hide the caller's exception behind an
    outage); the next block starts afresh. It is set at COMMIT too, where Django has already
    left the atomic block, for the same reason.
    """
    state = db._reconnect
    state.abandoned = error if error is not None else True  # type: ignore[assignment]
    state.abandoned_reason = reason
    db._close_driver_connection()
    db.closed_in_transaction = True
    db.needs_rollback = True


def drop_inherited(db: ReconnectMixin) -> None:
    """A connection inherited across fork(): the child opens its own, as if it never had one."""
    state = db._reconnect
    state.session = type(state.session)()
    state.carried = None
    if db.in_atomic_block:
        reason = " (it was inherited from the parent process across fork())"
        abandon_transaction(db, None, reason)  # its socket says nothing: silenced at fork
        raise TransactionLost(alias=db.alias, reason=reason)
    db._discard_connection()


def elapsed(state: Any) -> float:
    return _monotonic() - state.lost_at if state.lost_at is not None else 0.0


def give_up(
    db: ReconnectMixin,
    decision: Decision,
    loss: Loss,
    cause: BaseException | None,
    text: str | None,
    *,
    replaced: bool = False,
) -> ReconnectError:
    """Leave the connection as the decision says, say so, and return the exception to raise.

    ``replaced``: the dead connection was already replaced by a healthy one (the server was
    asked and said no); the new one stays, and the caller's atomic block rolls its empty
    transaction back as usual.
    """
    state = db._reconnect
    if replaced:
        pass
    elif loss.in_transaction:
        abandon_transaction(db, cause, decision.reason)
    else:
        db._discard_connection()
    state.unreported = ()
    error = exception_for(
        decision.outcome,
        alias=db.alias,
        statement=text,
        reason=decision.reason,
        session_state=decision.session_state_lost,
        losses=loss.reruns + 1,
        seconds=elapsed(state),
        cause=events.describe(cause, events.secrets_of(db.settings_dict)),
    )
    name = events.DECISION_OF[decision.outcome]
    events.emit(
        name,
        db.alias,
        "%s on database %r: %s",
        name,
        db.alias,
        str(error).split(". ")[0],
        level=logging.ERROR if decision.outcome is Outcome.UNAVAILABLE else logging.WARNING,
        connection=db,
        sqlstate=drivers.sqlstate(cause),
        statement=text,
        session_state=list(decision.session_state_lost) or None,
    )
    return error


def say_run_again(
    db: ReconnectMixin,
    decision: str,
    message: str,
    attempts: int,
    cause: BaseException | None,
    text: str | None,
) -> None:
    events.emit(
        decision,
        db.alias,
        message,
        db.alias,
        events.describe(cause, events.secrets_of(db.settings_dict)),
        level=logging.INFO,
        connection=db,
        attempts=attempts,
        seconds=elapsed(db._reconnect),
        sqlstate=drivers.sqlstate(cause),
        statement=text,
    )


def restore_session(db: ReconnectMixin, carried: SessionLog) -> None:
    """Give the new connection the settings of the lost session, in order (rule 5)."""
    state = db._reconnect
    connection = db.connection
    names = carried.setting_names()
    try:
        for sql, params in carried.replay():
            drivers.execute(connection, sql, params)
        if not connection.autocommit:
            connection.commit()
    except db.Database.Error as error:
        if db._lost_by(error):
            raise  # lost while setting up: the connect loop tries again
        state.carried = None
        state.session = SessionLog()
        lost = [
            f"the settings {', '.join(names)}, which could not be restored: "
            + events.describe(error, events.secrets_of(db.settings_dict))
        ]
        events.emit(
            events.SESSION_STATE_LOST,
            db.alias,
            "session state lost on database %r: %s",
            db.alias,
            lost[0],
            connection=db,
            session_state=lost,
        )
        raise SessionStateLost(alias=db.alias, session_state=lost) from error
    state.session = carried
    events.emit(
        events.SESSION_STATE_RESTORED,
        db.alias,
        "session settings of database %r restored on a new connection: %s",
        db.alias,
        ", ".join(names),
        level=20,
        connection=db,
        settings=names,
    )
    signals.session_restored.send(sender=type(db), connection=db, alias=db.alias, settings=names)
