"""Whole-transaction retry, and the per-call opt-out of re-runs.

``retry_atomic`` is the one place where a transaction is run again: the function is the unit
the application declared safe to repeat, and the engine never replays part of it. When the
reply to COMMIT is lost it asks the server what happened instead of guessing, and it keeps
``atomic()``'s promises: ``on_commit`` callbacks run exactly once for a transaction the server
committed (also when that is learnt after a lost reply) and never for one that did not;
``set_rollback(True)`` and swallowed errors end the block as ``atomic()`` would.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, overload

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from . import drivers, recovery
from .backoff import Backoff
from .exceptions import CommitOutcomeUnknown, SessionStateLost, TransactionLost

__all__ = ["aretry_atomic", "no_retry", "retry_atomic", "retrying_atomic"]

logger = logging.getLogger("django_postgresql_reconnect")

T = TypeVar("T")
P = ParamSpec("P")

# serialization_failure and deadlock_detected: the server aborted the whole transaction, which
# is safe to run again by definition.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# Seconds between two questions about a transaction whose old backend is still committing.
STATUS_POLL_INTERVAL = 0.05

# What identifies the history a transaction id belongs to: the cluster (its system
# identifier, shared by a primary and its streaming replicas), the timeline (a promoted
# standby starts a new one), and the postmaster's start (a restart after a crash may hand the
# id of a transaction whose commit never reached the disk to another one).
_IDENTITY_SQL = (
    "SELECT (SELECT system_identifier FROM pg_control_system())::text,"
    " CASE WHEN pg_is_in_recovery() THEN NULL"
    " ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,"
    " pg_postmaster_start_time()::text"
)


@contextlib.contextmanager
def no_retry(using: str | None = None) -> Iterator[None]:
    """Never run a statement of ``using`` again after a lost connection, in this block.

    For statements that call functions with effects outside the database that PostgreSQL
    cannot see as writes (a function that sends mail through an extension, bumps a remote
    counter): they then raise ``StatementOutcomeUnknown`` instead, in autocommit and inside
    transactions. It follows the caller into ``sync_to_async`` (a context variable), so it
    works around async ORM calls too.
    """
    alias = using or DEFAULT_DB_ALIAS
    token = recovery.no_retry_aliases.set(recovery.no_retry_aliases.get() | {alias})
    try:
        yield
    finally:
        recovery.no_retry_aliases.reset(token)


@dataclass
class _BeforeCommit:
    """What the block knew just before its COMMIT, to resolve a lost reply."""

    xid: int | None = None
    rolling_back: bool = False
    identity: tuple[str | None, ...] | None = None
    callbacks: list[Any] = field(default_factory=list)


def _identity(alias: str, *, fresh: bool = False) -> tuple[str | None, ...] | None:
    """The history this connection's transactions belong to, or None if it cannot be read.

    Learnt once per connection (the engine keeps it with the connection), outside any
    transaction, so that a refused catalog function can never abort the caller's work.
    """
    wrapper = connections[alias]
    try:
        wrapper.ensure_connection()
        link = getattr(getattr(wrapper, "_reconnect", None), "link", None)
        if not fresh and link is not None and link.identity is not None:
            return link.identity  # type: ignore[no-any-return]
        with wrapper.cursor() as cursor:
            cursor.execute(_IDENTITY_SQL)
            row = cursor.fetchone()
    except DatabaseError:
        return None
    identity = None if row is None else tuple(row)
    link = getattr(getattr(wrapper, "_reconnect", None), "link", None)
    if link is not None:
        link.identity = identity
    return identity


def _before_commit(alias: str, identity: tuple[str | None, ...] | None) -> _BeforeCommit:
    wrapper = connections[alias]
    snapshot = _BeforeCommit(identity=identity, callbacks=list(wrapper.run_on_commit))
    if wrapper.needs_rollback:
        snapshot.rolling_back = True  # set_rollback(True): atomic() rolls back, nothing to ask
        return snapshot
    status = drivers.transaction_status(wrapper.connection)
    if status == drivers.TRANSACTION_IN_ERROR:
        snapshot.rolling_back = True  # an error was swallowed: the COMMIT will roll back
        return snapshot
    # A transaction that only notified gets its xid at COMMIT: take one now, so that its
    # fate can be asked about like any other.
    notified = getattr(getattr(wrapper, "_reconnect", None), "session", None)
    function = "txid_current" if notified is not None and notified.notified else None
    with wrapper.cursor() as cursor:
        cursor.execute(f"SELECT {function or 'txid_current_if_assigned'}()")
        row = cursor.fetchone()
    snapshot.xid = None if row is None or row[0] is None else int(row[0])
    return snapshot


def _run_callbacks(callbacks: list[Any]) -> None:
    """Run on_commit callbacks as Django does after a COMMIT: robust ones log their errors."""
    for entry in callbacks:
        func, robust = entry[1], (entry[2] if len(entry) > 2 else False)
        if robust:
            try:
                func()
            except Exception as error:
                logger.error(
                    "Error calling %s in on_commit() (%s).",
                    getattr(func, "__qualname__", func),
                    error,
                    exc_info=True,
                )
        else:
            func()


def _commit_status(using: str, xid: int, deadline: float) -> str | None:
    """Ask the server what became of transaction ``xid``: 'committed', 'aborted', 'in progress'.

    Waits while it is in progress (the old backend is still finishing its COMMIT), up to the
    deadline. An id the server has not reached yet ('future') was never committed. None means
    the server no longer knows the transaction (too old).
    """
    while True:
        try:
            with connections[using].cursor() as cursor:
                cursor.execute("SELECT txid_status(%s)", [xid])
                row = cursor.fetchone()
        except DatabaseError as error:
            if drivers.sqlstate(error.__cause__) == "22023":
                return "future"  # "transaction ID is in the future": never assigned here
            raise
        status = None if row is None else row[0]
        if status != "in progress" or time.monotonic() >= deadline:
            return status
        logger.debug("transaction %d on database %r is still committing; asking again", xid, using)
        time.sleep(STATUS_POLL_INTERVAL)


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, SessionStateLost):
        return False  # the function may rely on a lock it no longer holds
    if isinstance(error, TransactionLost):
        return True
    return drivers.sqlstate(error.__cause__) in RETRYABLE_SQLSTATES


def retry_atomic(
    func: Callable[[], T],
    *,
    using: str | None = None,
    attempts: int = 3,
    deadline: float = 30.0,
) -> T:
    """Run ``func`` in ``atomic()`` and again when the whole transaction was lost or aborted.

    Runs again on ``TransactionLost``, serialization failure (40001) and deadlock (40P01),
    with backoff. When the reply to COMMIT is lost it asks the server, on a new connection,
    what became of the transaction id it noted before committing: committed returns the
    result (and runs the block's ``on_commit`` callbacks), aborted runs again, in progress
    waits. It raises ``CommitOutcomeUnknown`` only when the server cannot tell: it is
    unreachable, forgot the transaction, or is not the server that ran it (a failover to a
    promoted standby, or a restart, after which an id can belong to another transaction).
    After the last attempt it raises what stopped it. ``func`` must have no effects outside
    the database, since it may run more than once; it must not be called inside another
    atomic block.
    """
    alias = using or DEFAULT_DB_ALIAS
    if connections[alias].in_atomic_block:
        raise transaction.TransactionManagementError(
            "retry_atomic() cannot retry a transaction nested in another atomic block: "
            "call it outside atomic()"
        )
    started = time.monotonic()
    stop_at = started + deadline
    delays = Backoff(initial=0.05, maximum=1.0).delays()
    for attempt in range(1, attempts + 1):
        snapshot: _BeforeCommit | None = None
        try:
            identity = _identity(alias)
            with transaction.atomic(using=alias):
                result = func()
                snapshot = _before_commit(alias, identity)  # what fails now is the COMMIT
            return result
        except CommitOutcomeUnknown as lost_reply:
            if snapshot is None or lost_reply.alias != alias:
                raise  # another alias's commit, inside func: only the caller can resolve it
            if snapshot.rolling_back:
                return result  # nothing could commit: as atomic() after its rollback
            if snapshot.xid is None:
                _run_callbacks(snapshot.callbacks)
                return result  # nothing was written: the commit had nothing to lose
            status = _resolve_lost_commit(alias, snapshot, stop_at, lost_reply)
            if status == "committed":
                _run_callbacks(snapshot.callbacks)
                return result
            if attempt == attempts or time.monotonic() >= stop_at:
                raise TransactionLost(
                    f"the reply to COMMIT on database {alias!r} was lost and the server says "
                    f"transaction {snapshot.xid} aborted; gave up after {attempt} attempt(s) "
                    f"in {time.monotonic() - started:.2f} s. Nothing of it was kept",
                    alias=alias,
                ) from lost_reply
            logger.info(
                "COMMIT reply lost on database %r; transaction %d aborted, running it again "
                "(attempt %d of %d)",
                alias,
                snapshot.xid,
                attempt + 1,
                attempts,
                extra={"alias": alias, "attempts": attempt + 1},
            )
        except DatabaseError as error:
            if not _is_retryable(error) or attempt == attempts or time.monotonic() >= stop_at:
                raise
            logger.info(
                "transaction on database %r failed (%s), running it again (attempt %d of %d)",
                alias,
                type(error).__name__,
                attempt + 1,
                attempts,
                extra={"alias": alias, "attempts": attempt + 1},
            )
        time.sleep(min(next(delays), max(0.0, stop_at - time.monotonic())))
    raise AssertionError("unreachable")  # pragma: no cover


def _resolve_lost_commit(
    alias: str, snapshot: _BeforeCommit, deadline: float, lost_reply: CommitOutcomeUnknown
) -> str:
    """Return 'committed' or 'aborted' for a COMMIT whose reply was lost, or raise."""
    xid = snapshot.xid
    assert xid is not None
    try:
        now = _identity(alias, fresh=True)
        status = _commit_status(alias, xid, deadline)
    except DatabaseError as error:  # DatabaseUnavailable included
        raise CommitOutcomeUnknown(
            f"the reply to COMMIT on database {alias!r} was lost and the server could not be "
            f"asked about transaction {xid}: {error}. Check whether it committed before "
            "running it again",
            alias=alias,
        ) from error
    before = snapshot.identity
    if before is None or now is None or before[:2] != now[:2]:
        raise CommitOutcomeUnknown(
            f"the reply to COMMIT on database {alias!r} was lost and the connection now "
            "reaches another server or timeline (a failover?), where transaction "
            f"{xid} means nothing. Check whether it committed before running it again",
            alias=alias,
        ) from lost_reply
    restarted = before[2] != now[2]
    if status in ("aborted", "future") or (restarted and status == "in progress"):
        return "aborted"  # an id never committed in this history, or reused since a restart
    if status == "committed" and not restarted:
        logger.info(
            "COMMIT reply lost on database %r; the server says transaction %d committed",
            alias,
            xid,
            extra={"alias": alias},
        )
        return status
    if status == "committed":
        what = f"restarted since, so transaction id {xid} may belong to another transaction"
    elif status:
        what = f"was still committing transaction {xid} at the deadline"
    else:
        what = f"no longer knows transaction {xid}"
    raise CommitOutcomeUnknown(
        f"the reply to COMMIT on database {alias!r} was lost and the server {what}. Check "
        "whether it committed before running it again",
        alias=alias,
    ) from lost_reply


@overload
def retrying_atomic(func: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def retrying_atomic(
    func: None = None, *, using: str | None = None, attempts: int = 3, deadline: float = 30.0
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def retrying_atomic(
    func: Callable[P, T] | None = None,
    *,
    using: str | None = None,
    attempts: int = 3,
    deadline: float = 30.0,
) -> Callable[P, T] | Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator form of :func:`retry_atomic`: ``@retrying_atomic`` or with arguments."""

    def decorate(inner: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(inner)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return retry_atomic(
                lambda: inner(*args, **kwargs),
                using=using,
                attempts=attempts,
                deadline=deadline,
            )

        return wrapper

    return decorate(func) if func is not None else decorate


async def aretry_atomic(
    func: Callable[[], T],
    *,
    using: str | None = None,
    attempts: int = 3,
    deadline: float = 30.0,
) -> T:
    """:func:`retry_atomic` for async code: ``await aretry_atomic(func)``.

    ``func`` is synchronous, as every ORM call in one transaction must run in the one thread
    that holds the connection; it runs there, the thread that runs the async ORM's calls.
    """
    run = sync_to_async(retry_atomic, thread_sensitive=True)
    return await run(func, using=using, attempts=attempts, deadline=deadline)
