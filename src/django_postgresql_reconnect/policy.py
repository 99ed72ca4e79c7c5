"""The safety model: what a lost connection allows, rule by rule.

Plain Python with no Django import, so that every rule can be read, and tested, alone. The
numbers are those of docs/safety-model.md; the engine's comments cite them. Each rule says
which way it errs: a false "may run again" could apply a write twice, a false "may not" costs
the caller one exception, so every doubt falls on the side of the exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "LOST_CONNECTION_SQLSTATES",
    "MAX_RERUNS",
    "Decision",
    "Loss",
    "Outcome",
    "Statement",
    "connect_failure_is_transient",
    "decide",
    "decide_after_asking",
    "is_connection_lost",
    "refused_by_read_only_node",
]

# Rule 0. SQLSTATEs that say the session is gone: the whole of class 08 (connection
# exception), plus admin_shutdown (57P01, pg_terminate_backend or a fast shutdown),
# crash_shutdown (57P02) and cannot_connect_now (57P03, the server is starting or stopping).
LOST_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})

# Rule 9. A statement is run again at most this many times within one call: each loss is a
# fresh fault, and a server that drops every connection is better reported than chased.
MAX_RERUNS = 3


def is_connection_lost(sqlstate: str | None, connection_broken: bool) -> bool:
    """Rule 0: tell whether a failed statement lost its connection (rather than failed on its own).

    Decided by the driver's state and the SQLSTATE, never by message text, which is
    localized. A client-side failure (reset, EOF, timeout) carries no SQLSTATE but leaves the
    driver's connection broken. 57014 (statement timeout, cancel), 40001, 40P01 and data errors
    keep the connection usable, so they are not losses and pass through untouched.
    """
    if connection_broken:
        return True
    if sqlstate is None:
        return False
    return sqlstate.startswith("08") or sqlstate in LOST_CONNECTION_SQLSTATES


def refused_by_read_only_node(sqlstate: str | None, multi_host: bool) -> bool:
    """Rule 8: tell whether a statement was refused because a failover left us on a standby.

    25006 (read_only_sql_transaction) means the server refused the statement before running
    it. With several hosts in the settings that is a failover: a new connection (libpq with
    ``target_session_attrs=read-write``) finds the new primary, where the statement may run.
    With a single host it is a genuine read-only server and the error passes through.
    """
    return multi_host and sqlstate == "25006"


# --- Connecting (rule 10) -------------------------------------------------------------------

# SQLSTATEs of a server's rejection that end by themselves: the server is starting, stopping
# or in recovery (57P03), out of connection slots (53300), out of memory (53200), or the new
# backend was terminated or crashed while starting (57P01, 57P02). Every other rejection is
# permanent: a wrong password (28P01), no pg_hba entry (28000), an unknown database (3D000),
# no CONNECT privilege (42501), a database not accepting connections (55000)...
TRANSIENT_REJECTIONS = frozenset({"57P01", "57P02", "57P03", "53300", "53200"})


def connect_failure_is_transient(
    *,
    rejection: str | None,
    server_answered: bool,
    host_lookup: str | None,
    client_refusal: bool = False,
) -> bool:
    """Rule 10: tell whether a failed connection attempt is worth another attempt.

    ``rejection`` is the SQLSTATE of the server's rejection when it sent one (read from the
    message in any language, ``rejections.py``), ``server_answered`` tells that it sent a
    rejection at all, ``host_lookup`` is ``"permanent"`` or ``"transient"`` when the host name
    could not be resolved, and ``client_refusal`` tells that libpq itself refused (TLS
    required but not offered, a certificate that does not verify, no password to give).
    Network failures (refused, reset, timeout, EOF during startup) are transient: the server
    may be restarting or failing over. A rejection is transient only for the few conditions
    that end by themselves; one that cannot be read is permanent, because retrying would only
    delay the one clear error the user needs.
    """
    if client_refusal:
        return False
    if host_lookup is not None:
        return host_lookup == "transient"
    if rejection is not None:
        return rejection in TRANSIENT_REJECTIONS
    return not server_answered


# --- What a lost statement allows -----------------------------------------------------------


class Statement(enum.Enum):
    """What was in flight when the connection was found lost."""

    NOTHING = "nothing"
    """No statement: the loss was found between statements (a guard, atomic(), is_usable)."""
    STATEMENT = "statement"
    """An ordinary statement (execute, executemany, callproc, a COPY not yet streaming)."""
    STREAM = "stream"
    """A statement part of whose results or data had already crossed (a server-side cursor's
    fetch, a COPY in progress): it cannot be started again without the caller seeing it."""
    COMMIT = "commit"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Loss:
    """The facts of one lost connection, as the engine saw them."""

    statement: Statement
    sent: bool
    """False when the loss was found before anything left the process (rule 1)."""
    in_transaction: bool
    transaction_started: bool
    """Something of the current transaction was acknowledged before this statement."""
    read_shaped: bool = False
    """A single SELECT / WITH / VALUES / TABLE / SHOW / EXPLAIN with no data-modifying part."""
    replayable: bool = True
    """Its parameters (or data) can be given a second time."""
    ends_transaction: bool = False
    """It contains COMMIT / ROLLBACK / PREPARE TRANSACTION, so it may have ended a transaction."""
    retry_allowed: bool = True
    """RETRY_READS is on and no ``no_retry()`` block is active."""
    reruns: int = 0
    """Runs of this statement already lost within this call."""
    session_state: tuple[str, ...] = ()
    """Session state the connection held that a new one cannot be given."""
    writes: bool = False
    """For a stream: it sends data to the server (COPY FROM)."""
    finishing: bool = True
    """For a stream: the end of its data may have been sent (a COPY FROM may have committed)."""


class Outcome(enum.Enum):
    """What the engine does about a loss."""

    RUN_AGAIN = "run again"
    """Open a new connection (reopening an unstarted transaction) and run the statement."""
    ASK_SERVER = "ask the server"
    """Run it again only if the server says it cannot write (or, in a transaction, that it
    has no effect outside the transaction); see :func:`decide_after_asking`."""
    NOTHING_TO_DO = "nothing to do"
    """A ROLLBACK that died with its connection: the server rolled back anyway."""
    OUTCOME_UNKNOWN = "outcome unknown"
    COMMIT_OUTCOME_UNKNOWN = "commit outcome unknown"
    TRANSACTION_LOST = "transaction lost"
    SESSION_STATE_LOST = "session state lost"
    INTERRUPTED = "interrupted"
    """A stream was cut short: nothing was written, but it cannot be started over unseen."""
    UNAVAILABLE = "unavailable"
    """The connection keeps dying (MAX_RERUNS): report the database as unavailable."""


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    session_state_lost: tuple[str, ...] = ()
    """Said together with the outcome: the state a new connection does not have."""
    reason: str = ""
    """Why a statement that might have been run again was not (for the message)."""


def decide(loss: Loss) -> Decision:
    """Decide what follows a lost connection; each branch is one rule of the safety model."""
    state = loss.session_state
    if loss.statement is Statement.ROLLBACK:
        # Rule 7: the server rolls a transaction back when its connection dies.
        return Decision(Outcome.NOTHING_TO_DO, state)
    if loss.statement is Statement.COMMIT:
        if not loss.sent:
            # Rule 6: COMMIT never left the process, so the server rolled back.
            return Decision(Outcome.TRANSACTION_LOST, state)
        return Decision(Outcome.COMMIT_OUTCOME_UNKNOWN, state)  # rule 6
    if loss.in_transaction and loss.transaction_started:
        # Rule 4: never replay part of a transaction on a new connection.
        return Decision(Outcome.TRANSACTION_LOST, state)
    if not loss.sent:
        if state:
            # Rule 5: nothing ran, but running on a connection without the caller's lock or
            # LISTEN would be a lie. Say so once; the next statement runs.
            return Decision(Outcome.SESSION_STATE_LOST, state)
        return Decision(Outcome.RUN_AGAIN)  # rule 1: certainly not executed
    if loss.reruns >= MAX_RERUNS:
        if loss.read_shaped and not loss.in_transaction:
            return Decision(Outcome.UNAVAILABLE, state)  # rule 9: nothing was written
        return Decision(Outcome.OUTCOME_UNKNOWN, state, " (its connection kept dying)")
    if loss.statement is Statement.STREAM:
        # Rule 11: part of its results or data crossed already; starting it over would repeat
        # them, so it is never run again after it was sent.
        if loss.in_transaction:
            return Decision(Outcome.TRANSACTION_LOST, state)
        if loss.writes and loss.finishing:
            return Decision(Outcome.OUTCOME_UNKNOWN, state)
        return Decision(
            Outcome.INTERRUPTED, state
        )  # a COPY is atomic: cut short, it wrote nothing
    if loss.in_transaction:
        # Rule 3: nothing of the transaction was acknowledged. The server rolled back what
        # it saw with the connection, so opening the transaction again keeps it atomic, as
        # long as the statement can be given again and did nothing the rollback cannot undo.
        if loss.ends_transaction:
            return Decision(Outcome.OUTCOME_UNKNOWN, state, " (it ends a transaction)")
        if not loss.retry_allowed:
            return Decision(Outcome.OUTCOME_UNKNOWN, state, " (no_retry() is active)")
        if not loss.replayable:
            return Decision(
                Outcome.TRANSACTION_LOST, state, " before its data could be given again"
            )
        if state:
            return Decision(Outcome.TRANSACTION_LOST, state, " before anything was acknowledged")
        return Decision(Outcome.ASK_SERVER)
    # Rule 2: autocommit, sent, reply lost.
    if loss.read_shaped and loss.retry_allowed and loss.replayable:
        if state:
            return Decision(Outcome.SESSION_STATE_LOST, state)  # a read wrote nothing
        return Decision(Outcome.ASK_SERVER)
    if loss.read_shaped and not loss.retry_allowed:
        return Decision(Outcome.OUTCOME_UNKNOWN, state, " (no_retry() is active)")
    return Decision(Outcome.OUTCOME_UNKNOWN, state)


def decide_after_asking(loss: Loss, cannot_write: bool | None) -> Decision:
    """Rule 2 and 3, second half: the server's word on what the statement calls.

    ``cannot_write`` is True when every function the statement calls is IMMUTABLE or STABLE
    (or a volatile built-in known to write nothing), no view or row-level security policy it
    reads calls a VOLATILE one, and no operator it uses is VOLATILE; False when one may write;
    None when the server could not be asked (it is unreachable). Only True allows a re-run.
    """
    if cannot_write:
        return Decision(Outcome.RUN_AGAIN)
    if cannot_write is None:
        return Decision(
            Outcome.OUTCOME_UNKNOWN, (), " (the server could not be asked whether it writes)"
        )
    if loss.in_transaction:
        return Decision(
            Outcome.OUTCOME_UNKNOWN,
            (),
            " (it calls a VOLATILE function, whose effects a rollback may not undo)",
        )
    return Decision(
        Outcome.OUTCOME_UNKNOWN, (), " (it calls a VOLATILE function, which may write)"
    )
