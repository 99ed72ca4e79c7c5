"""Where a statement meets a dead connection: the engine's one recovery entry point.

The cursor wrapper runs healthy statements itself and hands everything else here: a cursor
whose connection was replaced, a connection found dead before sending (rule 1), a statement
that failed. This module asks ``policy`` what each loss allows and carries the answer out:
replace the connection (keeping an unstarted transaction open), restore the session's
settings, ask the server whether a statement can write, run it again, or raise the exception
that says what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from . import drivers, events, signals, volatility
from .backoff import Deadline
from .exceptions import (
    CommitOutcomeUnknown,
    CommitOutcomeUnknownAndSessionStateLost,
    DatabaseUnavailable,
    ReconnectError,
    SessionStateLost,
    StatementInterrupted,
    StatementInterruptedAndSessionStateLost,
    StatementOutcomeUnknown,
    StatementOutcomeUnknownAndSessionStateLost,
    TransactionLost,
    TransactionLostAndSessionStateLost,
)
from .policy import (
    Decision,
    Loss,
    Outcome,
    Statement,
    decide,
    decide_after_asking,
    is_connection_lost,
    refused_by_read_only_node,
)
from .state import Link
from .statements import UNREADABLE, Effect, Facts, effects_of, facts_of

if TYPE_CHECKING:
    from .mixin import ReconnectMixin

__all__ = [
    "Request",
    "after_error",
    "fetch",
    "found_dead",
    "give_up",
    "new_call",
    "no_retry_aliases",
    "note_loss",
    "note_success",
    "record_effects",
    "run",
    "stream_failed",
]

_monotonic = time.monotonic

no_retry_aliases: ContextVar[frozenset[str]] = ContextVar(
    "django_postgresql_reconnect_no_retry", default=frozenset()
)
"""Aliases inside a ``no_retry()`` block, in this thread or task (contextvars follow async
code into the thread that runs its ORM calls)."""


@dataclass
class Request:
    """One statement (or stream) handed to the engine, and how it may be given again."""

    run: Callable[[], Any]
    text: str | None
    """The statement's SQL text, rendered; None when it could not be read."""
    params: Any = None
    statement: Statement = Statement.STATEMENT
    prepare_rerun: Callable[[], None] | None = None
    """Called before a re-run: gives the parameters again (an iterator's recorded items)."""
    writes: bool = False
    """For a stream: it sends data to the server (COPY FROM)."""
    finishing: Callable[[], bool] = field(default=lambda: True)
    """For a stream: may the end of its data have been sent?"""
    cursor_name: str | None = None
    """A server-side cursor this statement reads from, not counted as lost session state."""


@dataclass
class _Call:
    deadline: Deadline
    reruns: int = 0
    read_only_rerun: bool = False


# --- The statement path ------------------------------------------------------------------------


def new_call(db: ReconnectMixin) -> _Call:
    """A call met a loss: its deadline starts now (rule 10: DEADLINE bounds a call)."""
    return _Call(Deadline.after(db._reconnect.options.DEADLINE))


def run(
    db: ReconnectMixin,
    wrapper: Any,
    request: Request,
    call: _Call | None = None,
    *,
    raw_errors: bool = False,
) -> Any:
    """Run ``request`` within the safety model: the slow path of every statement.

    ``raw_errors``: errors that are not losses reach the caller as the driver raised them
    (COPY, which Django does not wrap either).
    """
    if call is None:
        call = new_call(db)
    while True:
        _before_statement(db)
        link = ensure_live(db, wrapper, call)
        started = not db.autocommit and drivers.transaction_status(link.connection) != 0
        try:
            result = _run_read_only(db, request) if call.read_only_rerun else request.run()
        except DatabaseError as error:
            after_error(db, wrapper, error, started, request, call, raw_errors=raw_errors)
            continue
        note_success(db, link, request.text, request.params)
        return result


def fetch(db: ReconnectMixin, wrapper: Any, fetch_rows: Callable[[], Any], name: str) -> Any:
    """A fetch from a server-side cursor: a round trip whose cursor dies with its connection."""
    request = Request(
        run=fetch_rows,
        text=None,
        statement=Statement.STREAM,
        cursor_name=name,
        finishing=lambda: False,
    )
    link = wrapper._link
    if not link.current or link.inherited:
        # Another statement already replaced the connection: this cursor is gone with it.
        if db.in_atomic_block:
            raise TransactionLost(alias=db.alias, reason=" (its server-side cursor with it)")
        raise StatementInterrupted(alias=db.alias)
    if link.peer_gone():
        # Its connection died since the last fetch: the cursor died with it (rule 11).
        in_transaction = not db.autocommit
        loss = Loss(Statement.STREAM, True, in_transaction, in_transaction, finishing=False)
        _handle(db, wrapper, None, loss, new_call(db), request=request)
    try:
        with db.wrap_database_errors:
            return fetch_rows()
    except DatabaseError as error:
        after_error(db, wrapper, error, True, request)
        raise AssertionError("a stream is never run again") from error


def stream_failed(
    db: ReconnectMixin, wrapper: Any, error: BaseException, request: Request
) -> None:
    """A COPY failed while its data streamed: raise what the loss means, or return (no loss)."""
    code = drivers.sqlstate(error)
    if not is_connection_lost(code, db._broken_after(error, code)):
        return
    wrapped = DatabaseError(str(error))
    wrapped.__cause__ = error
    after_error(db, wrapper, wrapped, True, request)


def _before_statement(db: ReconnectMixin) -> None:
    state = db._reconnect
    if state.abandoned is not None and db.in_atomic_block and db.closed_in_transaction:
        raise TransactionLost(alias=db.alias, reason=state.abandoned_reason) from _cause(state)
    if state.unreported:
        lost, state.unreported = state.unreported, ()
        events.emit(
            events.SESSION_STATE_LOST,
            db.alias,
            "session state lost on database %r: %s",
            db.alias,
            ", ".join(lost),
            connection=db,
            session_state=list(lost),
        )
        raise SessionStateLost(alias=db.alias, session_state=lost)


def _cause(state: Any) -> BaseException | None:
    abandoned = state.abandoned
    return abandoned if isinstance(abandoned, BaseException) else None


def ensure_live(db: ReconnectMixin, wrapper: Any, call: _Call) -> Link:
    """Rule 1: give ``wrapper`` a driver cursor on a connection that is alive, or raise."""
    state = db._reconnect
    while True:
        if db.connection is None:
            db.ensure_connection()
        link = state.link
        if link is None:  # a connection the engine did not open (cannot happen; be safe)
            db._adopt_connection()
            link = state.link
            assert link is not None
        if link.inherited:
            _drop_inherited(db)
            continue
        if wrapper is not None and wrapper._link is not link:
            _refresh_cursor(db, wrapper, link)
        timeout = min(state.options.PING_TIMEOUT, max(call.deadline.remaining(), 0.001))
        if not link.is_dead(timeout):
            return link
        if state.connecting:
            raise DatabaseError("the new connection died while Django set it up")
        _handle(db, wrapper, None, _loss_found_before_sending(db, Statement.NOTHING), call)


def _loss_found_before_sending(db: ReconnectMixin, statement: Statement) -> Loss:
    in_transaction = not db.autocommit
    started = in_transaction and drivers.transaction_status(db.connection) != 0
    return Loss(statement, sent=False, in_transaction=in_transaction, transaction_started=started)


def _refresh_cursor(db: ReconnectMixin, wrapper: Any, link: Link) -> None:
    """Give a cursor wrapper a driver cursor of the current connection."""
    old = wrapper.cursor
    name = getattr(old, "name", None)
    with contextlib.suppress(Exception):
        old.close()
    with db.wrap_database_errors:
        wrapper.cursor = db._driver_cursor(name)
    wrapper._link = link


def _drop_inherited(db: ReconnectMixin) -> None:
    """A connection inherited across fork(): the child opens its own, as if it never had one."""
    state = db._reconnect
    db._discard_connection()
    state.session = type(state.session)()
    state.carried = None
    if db.in_atomic_block:
        db.closed_in_transaction = True
        db.needs_rollback = True
        state.abandoned = True  # type: ignore[assignment]
        state.abandoned_reason = " (it was inherited from the parent process across fork())"
        raise TransactionLost(alias=db.alias, reason=state.abandoned_reason)


def after_error(
    db: ReconnectMixin,
    wrapper: Any,
    error: DatabaseError,
    started: bool,
    request: Request,
    call: _Call | None = None,
    *,
    raw_errors: bool = False,
) -> None:
    """Called while ``error`` is handled: re-raise it, raise what the loss means, or return
    (the connection was replaced and the statement may run again)."""
    if db._reconnect.connecting:
        raise error  # lost while Django sets the connection up: the connect loop's to handle
    cause = error.__cause__
    code = drivers.sqlstate(cause)
    if is_connection_lost(code, db._broken_after(cause, code)):
        sent = True
    elif refused_by_read_only_node(code, db._reconnect.multi_host):
        sent = False  # rule 8: refused before running; a new connection finds the primary
    elif raw_errors and cause is not None:
        raise cause  # not a loss, and the caller expects the driver's error untouched
    else:
        raise error  # not a loss: the caller's error, untouched
    if call is None:
        call = _Call(Deadline.after(db._reconnect.options.DEADLINE))
    facts = facts_of(request.text) if request.text is not None else None
    stream = request.statement is Statement.STREAM
    loss = Loss(
        statement=request.statement,
        sent=sent,
        in_transaction=not db.autocommit,
        transaction_started=started,
        read_shaped=bool(facts and facts.read_shaped) and not stream,
        replayable=request.text is not None,
        ends_transaction=bool(facts and facts.ends_transaction),
        retry_allowed=db._reconnect.options.RETRY_READS and db.alias not in no_retry_aliases.get(),
        reruns=call.reruns,
        writes=request.writes,
        finishing=request.finishing(),
    )
    _handle(db, wrapper, cause, loss, call, request=request, facts=facts, error=error)
    call.reruns += 1


def _handle(
    db: ReconnectMixin,
    wrapper: Any,
    cause: BaseException | None,
    loss: Loss,
    call: _Call,
    *,
    request: Request | None = None,
    facts: Facts | None = None,
    error: BaseException | None = None,
) -> None:
    """Carry out what ``loss`` allows; return only when the statement may run (again)."""
    if not loss.sent and call.deadline.passed():
        # Rule 10: DEADLINE bounds the call, however many dead connections it was handed.
        note_loss(db, cause, sent=False)
        if loss.in_transaction:
            abandon_transaction(db, cause)
        else:
            db._discard_connection()
        raise DatabaseUnavailable.connections_keep_dying(
            alias=db.alias,
            losses=call.reruns + 1,
            seconds=_elapsed(db._reconnect),
            reason="every new connection was dead before use",
        )
    lost_state = _lost_state(db, request)
    if lost_state:
        loss = dataclasses.replace(loss, session_state=lost_state)
    note_loss(db, cause, sent=loss.sent, statement=request.text if request else None)
    decision = decide(loss)
    replaced = False
    if decision.outcome is Outcome.ASK_SERVER:
        decision, replaced = _ask_server(db, loss, call, facts, cause)
        if decision.outcome is Outcome.RUN_AGAIN:
            call.read_only_rerun = not loss.in_transaction
            _prepare_rerun(request)
            _event(
                db,
                events.RERUN,
                "statement on database %r run again on a new connection: %s",
                call,
                cause,
                request,
            )
            return
    elif decision.outcome is Outcome.RUN_AGAIN:
        _replace(db, call, keep_transaction=loss.in_transaction)
        _prepare_rerun(request)
        call.read_only_rerun = False
        if loss.sent:
            _event(
                db,
                events.RERUN,
                "statement on database %r run again in its reopened transaction: %s",
                call,
                cause,
                request,
            )
        else:
            _event(
                db,
                events.RECONNECTED_BEFORE_SEND,
                "connection to database %r replaced before anything was sent: %s",
                call,
                cause,
                request,
            )
        return
    raise give_up(db, decision, loss, cause, request, replaced=replaced) from (cause or error)


def _lost_state(db: ReconnectMixin, request: Request | None) -> tuple[str, ...]:
    state = db._reconnect
    if state.options.TRANSACTION_POOLING:
        return ()
    lost = state.session.lost_state()
    if request is not None and request.cursor_name:
        own = f"held cursor {request.cursor_name!r}"
        lost = tuple(s for s in lost if s != own)
    return lost + tuple(s for s in state.unreported if s not in lost)


def _prepare_rerun(request: Request | None) -> None:
    if request is not None and request.prepare_rerun is not None:
        request.prepare_rerun()


def _ask_server(
    db: ReconnectMixin, loss: Loss, call: _Call, facts: Facts | None, cause: BaseException | None
) -> tuple[Decision, bool]:
    """Rules 2 and 3: reconnect, and run again only if the server says it cannot write.

    The question is asked on the new connection, in autocommit, before an unstarted
    transaction is reopened. A new connection that dies under the question is one more loss:
    the question is asked again on the next one, within the call's deadline.
    """
    assert facts is not None
    key = _cache_key(db)
    verdict: bool | None = None
    lost_again = False

    def ask(connection: Any) -> bool:
        nonlocal verdict, lost_again
        try:
            verdict = volatility.cannot_write(connection, facts, key)
        except Exception as failure:
            lost_again = drivers.connection_is_broken(connection)
            if not lost_again:  # the question itself failed: the answer stays unknown
                events.logger.debug(
                    "could not ask database %r whether a statement writes: %s", db.alias, failure
                )
        return not lost_again

    while True:
        lost_again = False
        try:
            _replace(db, call, keep_transaction=loss.in_transaction, ask=ask)
        except DatabaseUnavailable as unavailable:
            if volatility.known_cannot_write(facts, key):
                raise  # it wrote nothing: the server being down is the news
            reason = (
                " (it calls functions, and the server could not be asked whether they write: "
                f"{unavailable.args[0]})"
            )
            return Decision(Outcome.OUTCOME_UNKNOWN, (), reason), False
        if not lost_again or call.deadline.passed():
            return decide_after_asking(loss, verdict), True
        note_loss(db, None, sent=False)


def _cache_key(db: ReconnectMixin) -> tuple[Any, ...]:
    settings = db.settings_dict
    search_path = db._reconnect.session.settings.get("search_path")
    return (
        settings.get("HOST"),
        settings.get("PORT"),
        settings.get("NAME"),
        settings.get("USER"),
        repr(search_path),
    )


def _run_read_only(db: ReconnectMixin, request: Request) -> Any:
    """Rule 2's safety net: a re-run read runs in a READ ONLY transaction, so that the server
    itself refuses any write that no rule saw (a view over a writing function, a cast)."""
    connection = db.connection
    with db.wrap_database_errors:
        drivers.execute(connection, "BEGIN READ ONLY")
    try:
        result = request.run()
    except DatabaseError as error:
        with contextlib.suppress(Exception):
            drivers.execute(connection, "ROLLBACK")
        if drivers.sqlstate(error.__cause__) == "25006":
            raise StatementOutcomeUnknown(
                alias=db.alias,
                statement=request.text,
                reason=" (the server refused its re-run in a read-only transaction: it writes)",
            ) from error
        raise
    with db.wrap_database_errors:
        drivers.execute(connection, "COMMIT")
    return result


def give_up(
    db: ReconnectMixin,
    decision: Decision,
    loss: Loss,
    cause: BaseException | None,
    request: Request | None,
    *,
    replaced: bool = False,
) -> ReconnectError:
    """Leave the connection as the decision says and build the exception to raise.

    ``replaced``: the dead connection was already replaced by a healthy one (the server was
    asked and said no); the new one stays, and the caller's atomic block rolls its empty
    transaction back as usual.
    """
    state = db._reconnect
    outcome = decision.outcome
    lost = decision.session_state_lost
    text = request.text if request else None
    if outcome is Outcome.NOTHING_TO_DO:
        raise AssertionError("NOTHING_TO_DO is handled by the rollback hook")
    if replaced:
        pass
    elif loss.in_transaction:
        abandon_transaction(db, cause, decision.reason)
    else:
        db._discard_connection()
    state.unreported = ()
    if outcome is Outcome.UNAVAILABLE:
        exc: ReconnectError = DatabaseUnavailable.connections_keep_dying(
            alias=db.alias,
            losses=loss.reruns + 1,
            seconds=_elapsed(state),
            reason=events.describe(cause, events.secrets_of(db.settings_dict)),
        )
        decision_name = events.UNAVAILABLE
    elif outcome is Outcome.OUTCOME_UNKNOWN:
        cls = StatementOutcomeUnknownAndSessionStateLost if lost else StatementOutcomeUnknown
        exc = cls(alias=db.alias, statement=text, reason=decision.reason, session_state=lost)
        decision_name = events.OUTCOME_UNKNOWN
    elif outcome is Outcome.COMMIT_OUTCOME_UNKNOWN:
        cls2 = CommitOutcomeUnknownAndSessionStateLost if lost else CommitOutcomeUnknown
        exc = cls2(alias=db.alias, session_state=lost)
        decision_name = events.COMMIT_OUTCOME_UNKNOWN
    elif outcome is Outcome.TRANSACTION_LOST:
        cls3 = TransactionLostAndSessionStateLost if lost else TransactionLost
        exc = cls3(alias=db.alias, reason=decision.reason, session_state=lost)
        decision_name = events.TRANSACTION_LOST
    elif outcome is Outcome.INTERRUPTED:
        if lost:
            exc = StatementInterruptedAndSessionStateLost(
                alias=db.alias, statement=text, session_state=lost
            )
        else:
            exc = StatementInterrupted(alias=db.alias, statement=text)
        decision_name = events.INTERRUPTED
    else:
        exc = SessionStateLost(alias=db.alias, session_state=lost)
        decision_name = events.SESSION_STATE_LOST
    level = logging.WARNING if outcome is not Outcome.UNAVAILABLE else logging.ERROR
    events.emit(
        decision_name,
        db.alias,
        "%s on database %r: %s",
        decision_name,
        db.alias,
        str(exc).split(". ")[0],
        level=level,
        connection=db,
        sqlstate=drivers.sqlstate(cause),
        statement=text,
        session_state=list(lost) or None,
    )
    return exc


def _elapsed(state: Any) -> float:
    return _monotonic() - state.lost_at if state.lost_at is not None else 0.0


def _event(
    db: ReconnectMixin,
    decision: str,
    message: str,
    call: _Call,
    cause: BaseException | None,
    request: Request | None,
) -> None:
    events.emit(
        decision,
        db.alias,
        message,
        db.alias,
        events.describe(cause, events.secrets_of(db.settings_dict)),
        level=logging.INFO,
        connection=db,
        attempts=call.reruns + 1,
        seconds=_elapsed(db._reconnect),
        sqlstate=drivers.sqlstate(cause),
        statement=request.text if request else None,
    )


# --- Losses, replacements ----------------------------------------------------------------------


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


def _replace(
    db: ReconnectMixin,
    call: _Call,
    *,
    keep_transaction: bool,
    ask: Callable[[Any], bool] | None = None,
) -> None:
    """Open a new connection in place of a dead one, keeping an unstarted transaction open.

    ``ask`` runs on the new connection in autocommit, before the transaction is reopened.
    """
    saved = _save_atomic(db) if keep_transaction else None
    db._discard_connection()
    state = db._reconnect
    state.deadline = call.deadline
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


def found_dead(db: ReconnectMixin, statement: Statement = Statement.NOTHING) -> None:
    """A guard, atomic() or create_cursor() found the connection dead before sending: rule 1."""
    link = db._reconnect.link
    if link is not None and link.inherited:
        _drop_inherited(db)
        return
    call = _Call(Deadline.after(db._reconnect.options.DEADLINE))
    _handle(db, None, None, _loss_found_before_sending(db, statement), call)


# --- After a statement -------------------------------------------------------------------------

_MISSING: tuple[Any, ...] = ("missing",)


def note_success(db: ReconnectMixin, link: Link, text: str | None, params: Any) -> None:
    """Bookkeeping after a statement that succeeded: what it left in the session."""
    link.used(_monotonic())
    state = db._reconnect
    if state.options.TRANSACTION_POOLING:
        return
    if text is None:
        effects: tuple[Any, ...] = (Effect(UNREADABLE),)
        text = ""
    else:
        effects = effects_of(text)
    if effects:
        record_effects(db, link, effects, text, params)


def record_effects(db: ReconnectMixin, link: Link, effects: Any, text: str, params: Any) -> None:
    in_transaction = drivers.transaction_status(link.connection) != 0
    db._reconnect.session.record(effects, text, params, in_transaction=in_transaction)
