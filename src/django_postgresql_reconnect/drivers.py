"""Every difference between psycopg 3 and psycopg2 that the engine needs, and nowhere else.

The driver is chosen the way Django chooses it: psycopg 3 when it can be imported, else
psycopg2. Both wrap libpq, so each answer below is the same libpq fact read two ways.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .liveness import wait_readable

try:
    import psycopg

    IS_PSYCOPG3 = True
except ImportError:
    psycopg = None  # type: ignore[assignment]
    IS_PSYCOPG3 = False

__all__ = [
    "IS_PSYCOPG3",
    "TRANSACTION_IDLE",
    "TRANSACTION_IN_ERROR",
    "TRANSACTION_UNKNOWN",
    "backend_pid",
    "connection_is_broken",
    "execute",
    "ping",
    "render",
    "server_key",
    "silence_inherited",
    "socket_fd",
    "sqlstate",
    "transaction_status",
    "uses_ssl",
]

# libpq's PGTransactionStatusType: PQTRANS_IDLE, ACTIVE, INTRANS, INERROR, UNKNOWN.
TRANSACTION_IDLE = 0
TRANSACTION_IN_ERROR = 3
TRANSACTION_UNKNOWN = 4


def sqlstate(error: BaseException | None) -> str | None:
    """The SQLSTATE of a driver error, or None for a client-side failure."""
    if error is None:
        return None
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def connection_is_broken(connection: Any) -> bool:
    """Tell whether the driver already knows its connection is closed or unusable."""
    if IS_PSYCOPG3:
        # libpq's status (0 is CONNECTION_OK) covers both closed and broken, and is a plain
        # C attribute: this runs before every statement.
        return bool(connection.pgconn.status)
    return bool(connection.closed)


def socket_fd(connection: Any) -> int:
    """The file descriptor of the connection's socket (-1 when there is none)."""
    try:
        return int(connection.pgconn.socket if IS_PSYCOPG3 else connection.fileno())
    except Exception:
        return -1


def transaction_status(connection: Any) -> int:
    """libpq's transaction status: 0 idle (no transaction open), 2 in transaction, 3 failed."""
    try:
        if IS_PSYCOPG3:
            return int(connection.pgconn.transaction_status)
        return int(connection.info.transaction_status)
    except Exception:
        return TRANSACTION_UNKNOWN


def uses_ssl(connection: Any) -> bool:
    try:
        return bool(connection.pgconn.ssl_in_use if IS_PSYCOPG3 else connection.info.ssl_in_use)
    except Exception:
        return False


def backend_pid(connection: Any) -> int | None:
    """The server process of this connection (no round trip), for log lines."""
    try:
        pid = connection.info.backend_pid if IS_PSYCOPG3 else connection.get_backend_pid()
        return int(pid) or None
    except Exception:
        return None


def server_key(connection: Any) -> tuple[str, str, str]:
    """(host, port, database) this connection reached: with several hosts, the one it got."""
    try:
        info = connection.info
        return (str(info.host), str(info.port), str(info.dbname))
    except Exception:
        return ("", "", "")


def render(sql: Any, connection: Any) -> str | None:
    """The text of a statement given as bytes or a composed SQL object; None if unreadable."""
    if isinstance(sql, str):
        return sql
    if isinstance(sql, (bytes, bytearray, memoryview)):
        try:
            return bytes(sql).decode()
        except UnicodeDecodeError:
            return None
    as_string = getattr(sql, "as_string", None)
    if as_string is None:
        return None
    try:
        text = as_string(connection)
    except Exception:
        return None
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text if isinstance(text, str) else None


def execute(connection: Any, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
    """Run one statement on a driver connection, outside Django; return its rows."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql, params)
        if cursor.description is None:
            return []
        return list(cursor.fetchall())
    finally:
        cursor.close()


def silence_inherited(connection: Any) -> None:
    """Make a connection inherited across fork() unable to send a byte on the parent's socket.

    libpq says goodbye (a Terminate message, or a TLS close) when a connection is closed, and
    the child would otherwise send it on the socket the parent still talks to the server
    over. The child's descriptor is pointed at /dev/null instead: whatever the child's copy
    of the connection writes, when it is closed or collected, goes nowhere. Only a system
    call, so that it is safe in an at-fork hook (a lock the parent's other threads held stays
    held in the child: closing the connection there could wait forever).
    """
    fd = socket_fd(connection)
    if fd < 0 or sys.platform == "win32":
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


# --- The round-trip check ---------------------------------------------------------------------
# An empty query is the cheapest message the protocol answers: no parse, no plan, no snapshot;
# the server replies EmptyQueryResponse and ReadyForQuery. It must not wait longer than its
# timeout, which libpq's blocking calls cannot promise, so it is sent asynchronously and the
# socket is polled against a deadline. PQgetResult is called only when PQisBusy says it will
# not block, before every call: after the first result it waits for ReadyForQuery, and
# psycopg 3 makes that call holding the GIL, so a blocking one would freeze every thread of
# the process (the FaultProxy of the tests included) until the server answered.


def _ping_psycopg3(connection: Any, timeout: float) -> bool:
    pgconn = connection.pgconn
    deadline = time.monotonic() + timeout
    pgconn.send_query(b"")
    while pgconn.flush():
        if not wait_readable(pgconn.socket, deadline):
            return False
    ok = True
    while True:
        pgconn.consume_input()
        if pgconn.is_busy():
            if not wait_readable(pgconn.socket, deadline):
                return False
            continue
        result = pgconn.get_result()
        if result is None:
            return ok
        ok = ok and result.status == psycopg.pq.ExecStatus.EMPTY_QUERY


class _LibPQ:
    """The libpq that psycopg2 itself loaded, reached through ctypes for asynchronous calls.

    psycopg2's synchronous connections offer no way to bound a round trip; libpq does. Opening
    the very file psycopg2 mapped returns the same library instance, so the PGconn pointer
    psycopg2 exposes (``pgconn_ptr``) is valid for it.
    """

    _lib: ctypes.CDLL | None = None
    _looked = False

    @classmethod
    def get(cls) -> ctypes.CDLL | None:
        if cls._looked:
            return cls._lib
        cls._looked = True
        path = _psycopg2_libpq_path()
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            return None
        lib.PQsendQuery.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.PQflush.argtypes = lib.PQconsumeInput.argtypes = [ctypes.c_void_p]
        lib.PQisBusy.argtypes = lib.PQgetResult.argtypes = [ctypes.c_void_p]
        lib.PQgetResult.restype = ctypes.c_void_p
        lib.PQresultStatus.argtypes = lib.PQclear.argtypes = [ctypes.c_void_p]
        cls._lib = lib
        return lib


def _psycopg2_libpq_path() -> str | None:
    """The libpq file psycopg2 uses: mapped into this process (Linux), or shipped beside it."""
    candidates: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            candidates = [
                line.split()[-1] for line in maps if "libpq" in line and "/" in line.split()[-1]
            ]
    except OSError:
        pass
    for candidate in candidates:
        if "psycopg2" in candidate:
            return candidate
    if len(set(candidates)) == 1:
        return candidates[0]
    try:
        import psycopg2
    except ImportError:
        return None
    package = Path(psycopg2.__file__).parent
    # The wheels' bundled copies: psycopg2_binary.libs (Linux), .dylibs (macOS), the package
    # folder itself (Windows).
    for folder in (package.parent / "psycopg2_binary.libs", package / ".dylibs", package):
        for found in sorted(folder.glob("libpq*")) if folder.is_dir() else []:
            return str(found)
    return None


_PGRES_EMPTY_QUERY = 0


def _ping_psycopg2(connection: Any, timeout: float) -> bool:
    lib = _LibPQ.get()
    if lib is None:
        # No way to bound the wait: a plain round trip, limited by tcp_user_timeout.
        with connection.cursor() as cursor:
            cursor.execute("")
        return True
    conn = ctypes.c_void_p(connection.pgconn_ptr)
    fd = connection.fileno()
    deadline = time.monotonic() + timeout
    if not lib.PQsendQuery(conn, b""):
        return False
    while (flushed := lib.PQflush(conn)) == 1:
        if not wait_readable(fd, deadline):
            return False
    if flushed < 0:
        return False
    ok = True
    while True:
        if not lib.PQconsumeInput(conn):
            return False
        if lib.PQisBusy(conn):
            if not wait_readable(fd, deadline):
                return False
            continue
        result = lib.PQgetResult(conn)
        if not result:
            return ok
        ok = ok and lib.PQresultStatus(result) == _PGRES_EMPTY_QUERY
        lib.PQclear(result)


def ping(connection: Any, timeout: float) -> bool:
    """Make one bounded round trip; False when the server did not answer in time.

    After a False the connection is in an unknown protocol state and must be discarded.
    """
    try:
        if IS_PSYCOPG3:
            return _ping_psycopg3(connection, timeout)
        return _ping_psycopg2(connection, timeout)
    except Exception:
        return False
