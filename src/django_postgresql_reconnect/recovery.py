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
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from . import drivers, events
from .backoff import Deadline
from .exceptions import (
    DatabaseUnavailable,
    SessionStateLost,
    TransactionLost,
)
from .policy import (
    Loss,
    Outcome,
    Statement,
    decide,
    refused_by_read_only_node,
)
from .replacement import (
    abandon_transaction,
    drop_inherited,
    elapsed,
    give_up,
    note_loss,
    replace_connection,
    say_run_again,
)
from .reruns import ask_server, run_read_only
from .state import Link
from .statements import UNREADABLE, Effect, Facts, effects_of, facts_of

if TYPE_CHECKING:
    from .mixin import ReconnectMixin

__all__ = [
    "Request",
    "after_error",
    "found_dead",
    "give_up",
    "handle",
    "new_call",
    "no_retry_aliases",
    "note_success",
    "record_effects",
    "run",
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
            result = (
                run_read_only(db, request.run, request.text)
                if call.read_only_rerun
                else request.run()
            )
        except DatabaseError as error:
            after_error(db, wrapper, error, started, request, call, raw_errors=raw_errors)
            continue
        note_success(db, link, request.text, request.params)
        return result


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
            drop_inherited(db)
            continue
        if wrapper is not None and wrapper._link is not link:
            _refresh_cursor(db, wrapper, link)
        timeout = min(state.options.PING_TIMEOUT, max(call.deadline.remaining(), 0.001))
        if not link.is_dead(timeout):
            return link
        if state.connecting:
            raise DatabaseError("the new connection died while Django set it up")
        handle(db, wrapper, None, _loss_found_before_sending(db, Statement.NOTHING), call)


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
    if db._lost_by(cause):
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
    handle(db, wrapper, cause, loss, call, request=request, facts=facts, error=error)
    call.reruns += 1


def handle(
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
            seconds=elapsed(db._reconnect),
            reason="every new connection was dead before use",
        )
    lost_state = _lost_state(db, request)
    if lost_state:
        loss = dataclasses.replace(loss, session_state=lost_state)
    note_loss(db, cause, sent=loss.sent, statement=request.text if request else None)
    decision = decide(loss)
    replaced = False
    text = request.text if request else None
    if decision.outcome is Outcome.ASK_SERVER:
        decision, replaced = ask_server(db, loss, call.deadline, facts)
        if decision.outcome is Outcome.RUN_AGAIN:
            call.read_only_rerun = not loss.in_transaction
            _prepare_rerun(request)
            message = "statement on database %r run again on a new connection: %s"
            say_run_again(db, events.RERUN, message, call.reruns + 1, cause, text)
            return
    elif decision.outcome is Outcome.RUN_AGAIN:
        replace_connection(db, call.deadline, keep_transaction=loss.in_transaction)
        _prepare_rerun(request)
        call.read_only_rerun = False
        if loss.sent:
            message = "statement on database %r run again in its reopened transaction: %s"
            say_run_again(db, events.RERUN, message, call.reruns + 1, cause, text)
        else:
            message = "connection to database %r replaced before anything was sent: %s"
            decision_name = events.RECONNECTED_BEFORE_SEND
            say_run_again(db, decision_name, message, call.reruns + 1, cause, text)
        return
    raise give_up(db, decision, loss, cause, text, replaced=replaced) from (cause or error)


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


def found_dead(db: ReconnectMixin, statement: Statement = Statement.NOTHING) -> None:
    """A guard, atomic() or create_cursor() found the connection dead before sending: rule 1."""
    link = db._reconnect.link
    if link is not None and link.inherited:
        drop_inherited(db)
        return
    call = _Call(Deadline.after(db._reconnect.options.DEADLINE))
    handle(db, None, None, _loss_found_before_sending(db, statement), call)


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
