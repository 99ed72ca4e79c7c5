"""Whole-transaction retry, and the per-call opt-out of read re-runs.

``retry_atomic`` is the one place where a transaction is run again: the function is the unit
the application declared safe to repeat, and the engine never replays part of it. When the
reply to COMMIT is lost it asks the server what happened instead of guessing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from . import drivers
from .backoff import Backoff
from .exceptions import (
    CommitOutcomeUnknown,
    SessionStateLost,
    TransactionLost,
)
from .mixin import ReconnectMixin

__all__ = ["no_retry", "retry_atomic", "retrying_atomic"]

logger = logging.getLogger("django_postgresql_reconnect")

T = TypeVar("T")

# serialization_failure and deadlock_detected: the server aborted the whole transaction, which
# is safe to run again by definition.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# Seconds between two questions about a transaction whose old backend is still committing.
STATUS_POLL_INTERVAL = 0.05


@contextlib.contextmanager
def no_retry(using: str | None = None) -> Iterator[None]:
    """Never re-run the reads in this block after a lost connection.

    For SELECTs that call functions with side effects the engine cannot see (a function that
    writes, sends mail, bumps a counter): they then raise ``StatementOutcomeUnknown`` instead.
    """
    wrapper = connections[using or DEFAULT_DB_ALIAS]
    if not isinstance(wrapper, ReconnectMixin):
        yield
        return
    with wrapper.no_retry():
        yield


def _assigned_xid(using: str) -> int | None:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT txid_current_if_assigned()")
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _commit_status(using: str, xid: int, deadline: float) -> str | None:
    """Ask the server what became of transaction ``xid``: 'committed', 'aborted', 'in progress'.

    Waits while it is in progress (the old backend is still finishing its COMMIT), up to the
    deadline. None means the server no longer knows the transaction (too old).
    """
    while True:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT txid_status(%s)", [xid])
            row = cursor.fetchone()
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
    result, aborted runs again, in progress waits. Only when the server cannot tell does it
    raise ``CommitOutcomeUnknown``. After the last attempt it raises what stopped it (the
    driver's error, ``TransactionLost``). ``func`` must have no effects outside the database,
    since it may run more than once; it must not be called inside another atomic block.
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
        xid: int | None = None
        committing = False
        try:
            with transaction.atomic(using=alias):
                result = func()
                xid = _assigned_xid(alias)
                committing = True  # what fails from here on is this block's own COMMIT
            return result
        except CommitOutcomeUnknown as lost_reply:
            if not committing or lost_reply.alias != alias:
                raise  # another alias's commit, inside func: only the caller can resolve it
            if xid is None:
                return result  # nothing was written: the commit had nothing to lose
            status = _resolve_lost_commit(alias, xid, stop_at, lost_reply)
            if status == "committed":
                return result
            if attempt == attempts or time.monotonic() >= stop_at:
                raise TransactionLost(
                    f"the reply to COMMIT on database {alias!r} was lost and the server says "
                    f"transaction {xid} aborted; gave up after {attempt} attempt(s) in "
                    f"{time.monotonic() - started:.2f} s. Nothing of it was kept",
                    alias=alias,
                ) from lost_reply
            logger.info(
                "COMMIT reply lost on database %r; transaction %d aborted, running it again "
                "(attempt %d of %d)",
                alias,
                xid,
                attempt + 1,
                attempts,
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
            )
        time.sleep(min(next(delays), max(0.0, stop_at - time.monotonic())))
    raise AssertionError("unreachable")  # pragma: no cover


def _resolve_lost_commit(
    alias: str, xid: int, deadline: float, lost_reply: CommitOutcomeUnknown
) -> str:
    """Return 'committed' or 'aborted' for a COMMIT whose reply was lost, or raise."""
    try:
        status = _commit_status(alias, xid, deadline)
    except DatabaseError as error:  # DatabaseUnavailable included
        raise CommitOutcomeUnknown(
            f"the reply to COMMIT on database {alias!r} was lost and the server could not be "
            f"asked about transaction {xid}: {error}. Check whether it committed before "
            "running it again",
            alias=alias,
        ) from error
    if status == "committed":
        logger.info(
            "COMMIT reply lost on database %r; the server says transaction %d committed",
            alias,
            xid,
        )
        return status
    if status == "aborted":
        return status
    what = "was still committing it at the deadline" if status else "no longer knows it"
    raise CommitOutcomeUnknown(
        f"the reply to COMMIT on database {alias!r} was lost and the server {what} "
        f"(transaction {xid}). Check whether it committed before running it again",
        alias=alias,
    ) from lost_reply


def retrying_atomic(
    func: Callable[..., T] | None = None,
    *,
    using: str | None = None,
    attempts: int = 3,
    deadline: float = 30.0,
) -> Any:
    """Decorator form of :func:`retry_atomic`: ``@retrying_atomic`` or with arguments."""

    def decorate(inner: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return retry_atomic(
                lambda: inner(*args, **kwargs),
                using=using,
                attempts=attempts,
                deadline=deadline,
            )

        return wrapper

    return decorate(func) if func is not None else decorate
