"""A second run of a lost statement: only when the server agrees, and only where it cannot write.

Rules 2 and 3 of the safety model, carried out: reconnect, ask the server on the new connection
whether the statement can write (``volatility.py``), and run an autocommit read again inside a
READ ONLY transaction, so that the server itself refuses any write no rule saw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from . import drivers, events, volatility
from .backoff import Deadline
from .exceptions import DatabaseUnavailable, StatementOutcomeUnknown
from .policy import Decision, Loss, Outcome, decide_after_asking
from .replacement import note_loss, replace_connection
from .statements import Facts

if TYPE_CHECKING:
    from .mixin import ReconnectMixin

__all__ = ["ask_server", "run_read_only"]


def ask_server(
    db: ReconnectMixin, loss: Loss, deadline: Deadline, facts: Facts | None
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
            lost_again = db._lost_by(failure)
            if not lost_again:  # the question itself failed: the answer stays unknown
                events.logger.debug(
                    "could not ask database %r whether a statement writes: %s", db.alias, failure
                )
        return not lost_again

    while True:
        lost_again = False
        try:
            replace_connection(db, deadline, keep_transaction=loss.in_transaction, ask=ask)
        except DatabaseUnavailable as unavailable:
            if volatility.known_cannot_write(facts, key):
                raise  # it wrote nothing: the server being down is the news
            reason = (
                " (it calls functions, and the server could not be asked whether they write: "
                f"{unavailable.args[0]})"
            )
            return Decision(Outcome.OUTCOME_UNKNOWN, (), reason), False
        if not lost_again or deadline.passed():
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


def run_read_only(db: ReconnectMixin, run: Callable[[], Any], text: str | None) -> Any:
    """Rule 2's safety net: a re-run read runs in a READ ONLY transaction, so that the server
    itself refuses any write that no rule saw (a view over a writing function, a cast)."""
    connection = db.connection
    with db.wrap_database_errors:
        drivers.execute(connection, "BEGIN READ ONLY")
    try:
        result = run()
    except DatabaseError as error:
        with contextlib.suppress(Exception):
            drivers.execute(connection, "ROLLBACK")
        if drivers.sqlstate(error.__cause__) == "25006":
            raise StatementOutcomeUnknown(
                alias=db.alias,
                statement=text,
                reason=" (the server refused its re-run in a read-only transaction: it writes)",
            ) from error
        raise
    with db.wrap_database_errors:
        drivers.execute(connection, "COMMIT")
    return result
