"""The safety model: which failures mean "connection lost" and which statements may run again.

Plain Python with no Django import, so that every rule can be read, and tested, alone.
A statement is run a second time only when that cannot change data twice; everything else
the engine does follows from the answers these functions give.
"""

from __future__ import annotations

import re

__all__ = [
    "LOST_CONNECTION_SQLSTATES",
    "Recovery",
    "connect_failure_is_transient",
    "creates_session_state",
    "decide_after_loss",
    "is_connection_lost",
    "refused_by_read_only_node",
    "statement_is_read_only",
]

# SQLSTATEs that say the session is gone: the whole of class 08 (connection exception), plus
# admin_shutdown (57P01, pg_terminate_backend or a fast shutdown), crash_shutdown (57P02) and
# cannot_connect_now (57P03, the server is starting or stopping).
LOST_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_connection_lost(sqlstate: str | None, connection_broken: bool) -> bool:
    """Tell whether a failed statement lost its connection (rather than failed on its own).

    Decided by the driver's state and the SQLSTATE, never by message text, which is localized.
    A client-side failure (reset, EOF, timeout) carries no SQLSTATE but leaves the driver's
    connection broken. 57014 (statement timeout, cancel), 40001, 40P01 and data errors keep the
    connection usable, so they are not losses and pass through untouched.
    """
    if connection_broken:
        return True
    if sqlstate is None:
        return False
    return sqlstate.startswith("08") or sqlstate in LOST_CONNECTION_SQLSTATES


def refused_by_read_only_node(sqlstate: str | None, multi_host: bool) -> bool:
    """Tell whether a statement was refused because a failover left us on a standby.

    25006 (read_only_sql_transaction) means the server refused the statement before running
    it. With several hosts in the settings that is a failover: a new connection (libpq with
    ``target_session_attrs=read-write``) finds the new primary, where the statement may run.
    With a single host it is a genuine read-only server and the error passes through.
    """
    return multi_host and sqlstate == "25006"


# libpq reports a failed connection attempt as text only: the SQLSTATE of the server's
# ErrorResponse is not kept. These server messages mean "try again shortly" (57P03 starting up,
# shutting down or in recovery; 53300 too many connections). Any other message the server sent
# with FATAL (wrong password 28P01, no pg_hba entry 28000, unknown database 3D000, ...) is
# permanent: retrying would only delay the one clear error the user needs.
_TRANSIENT_SERVER_REJECTIONS = re.compile(
    r"the database system is (starting up|shutting down|in recovery mode|"
    r"not yet accepting connections|not accepting connections)"
    r"|too many clients|remaining connection slots are reserved"
    r"|terminating connection",
    re.IGNORECASE,
)
_SERVER_REJECTION = re.compile(r"\b(FATAL|PANIC):")


def connect_failure_is_transient(message: str) -> bool:
    """Tell whether a failed connection attempt is worth retrying.

    Network-level failures (refused, reset, timeout, unreachable, EOF during startup) are
    transient: the server may be restarting or failing over. A rejection by the server itself
    is transient only for the few conditions that end by themselves.
    """
    if _SERVER_REJECTION.search(message):
        return bool(_TRANSIENT_SERVER_REJECTIONS.search(message))
    return True


# --- Statement classification -----------------------------------------------------------------

_COMMENTS = re.compile(r"\s+|--[^\n]*|/\*.*?\*/", re.DOTALL)
_READ_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "EXPLAIN", "VALUES", "TABLE"})
# Words that make an otherwise read-looking statement write, lock or signal something.
_SIDE_EFFECTS = re.compile(
    r"\b(INTO|INSERT|UPDATE|DELETE|MERGE|TRUNCATE|COPY|CALL|DO|NEXTVAL|SETVAL|"
    r"PG_(TRY_)?ADVISORY\w*|PG_NOTIFY|PG_(TERMINATE|CANCEL)_BACKEND|PG_RELOAD_CONF|"
    r"SET_CONFIG|LO_\w+|DBLINK\w*|PG_LOGICAL_EMIT_MESSAGE|PG_SWITCH_WAL|"
    r"PG_CREATE_\w+|PG_DROP_\w+|TXID_CURRENT|PG_CURRENT_XACT_ID)\b",
    re.IGNORECASE,
)
_EXPLAIN_ANALYZE = re.compile(
    r"^\s*EXPLAIN\s*(\(([^)]*\bANALY[SZ]E\b)|ANALY[SZ]E\b)", re.IGNORECASE
)


def _first_keyword(sql: str) -> str:
    position = 0
    while True:
        match = _COMMENTS.match(sql, position)
        if not match or match.end() == position:
            break
        position = match.end()
    word = re.match(r"\(*\s*([A-Za-z]+)", sql[position:])
    return word.group(1).upper() if word else ""


def statement_is_read_only(sql: object) -> bool:
    """Tell whether running ``sql`` twice in autocommit mode cannot change data twice.

    Conservative by design: a false "no" costs the caller one exception on a lost connection,
    a false "yes" could duplicate a write. So anything that is not plainly a read is a write:
    SELECT ... INTO, data-modifying WITH, EXPLAIN ANALYZE, sequences, advisory locks,
    notifications, large objects, several statements in one string, and any non-str SQL.
    Functions with side effects the list cannot know about are opted out per call
    (``no_retry()``).
    """
    if not isinstance(sql, str):
        return False
    if _first_keyword(sql) not in _READ_KEYWORDS:
        return False
    if ";" in sql.rstrip().rstrip(";"):
        return False
    if _SIDE_EFFECTS.search(sql):
        return False
    return not _EXPLAIN_ANALYZE.match(sql)


# Statements after which a new connection would not be equivalent to the old one. Matched on
# every statement, so it must fail fast on ordinary ORM SQL: the regex is anchored, and its
# alternatives diverge from SELECT/INSERT/UPDATE/DELETE within three characters.
_SESSION_STATEMENT = re.compile(
    r"\s*(?:SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)|LISTEN\b|PREPARE\b|"
    r"CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP|DECLARE\b[^;]*\bWITH\s+HOLD\b|LOAD\b)",
    re.IGNORECASE,
)


def creates_session_state(sql: object) -> bool:
    """Tell whether a statement leaves state in the session that a reconnect would drop.

    Session advisory locks, LISTEN, temporary tables, session-level SET, prepared statements
    and held cursors. Transaction-scoped variants (pg_advisory_xact_lock, SET LOCAL) end with
    their transaction and do not count.
    """
    if not isinstance(sql, str):
        return False
    if "advisory_lock" in sql:
        return True
    if "set_config" in sql and sql.count("set_config") > len(_LOCAL_SET_CONFIG.findall(sql)):
        return True  # set_config(name, value, false) is a session-level SET
    if sql.startswith(_ORDINARY_STARTS):
        return False  # the ORM's own statements: decided without the regex
    return _SESSION_STATEMENT.match(sql) is not None


_LOCAL_SET_CONFIG = re.compile(r"set_config\s*\([^;]*?,\s*true\s*\)", re.IGNORECASE)
_ORDINARY_STARTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "select", "insert", "update")


# --- What to do after a loss ------------------------------------------------------------------


class Recovery:
    """The possible answers of :func:`decide_after_loss`."""

    RERUN = "rerun"
    """Reconnect and run the statement again: running it twice cannot change data twice."""
    TRANSACTION_LOST = "transaction_lost"
    """The transaction had acknowledged work that died with the connection."""
    OUTCOME_UNKNOWN = "outcome_unknown"
    """The server may or may not have applied the statement: only the caller can decide."""
    SESSION_STATE_LOST = "session_state_lost"
    """The connection held locks, LISTENs or temporary objects that a new one would not."""
    RAISE = "raise"
    """Let the driver's error through; the next statement gets a new connection."""


def decide_after_loss(
    *,
    sent: bool,
    in_transaction: bool,
    transaction_started: bool,
    session_state: bool,
    read_only: bool,
    retry_reads: bool,
    server_side_cursor: bool,
) -> str:
    """Decide what follows a lost connection; each branch is one rule of the safety model.

    ``sent`` is False when the loss was found before the statement left the process (rule 1).
    ``transaction_started`` is True once a statement of the current transaction was
    acknowledged by the server (the driver's transaction status was no longer idle).
    """
    if session_state:
        # Reconnecting silently would let the application believe it still holds a lock.
        return Recovery.SESSION_STATE_LOST
    if in_transaction:
        if transaction_started:
            # Never replay part of a transaction on a new connection (rule 4).
            return Recovery.TRANSACTION_LOST
        # Nothing of this transaction was acknowledged: if the server saw any of it, it
        # rolled it back with the connection, so opening it again keeps the block atomic.
        return Recovery.RERUN
    if not sent:
        return Recovery.RERUN  # rule 1: certainly not executed
    if server_side_cursor:
        return Recovery.RAISE  # rule 6: never restart an iteration silently
    if read_only and retry_reads:
        return Recovery.RERUN  # rule 3: an autocommit read changes nothing
    return Recovery.OUTCOME_UNKNOWN  # rules 3 and 5
