"""A plain driver connection for lab tests: psycopg 3 when importable, else psycopg2.

The lab tests check the testing tools themselves, so they talk to the server without Django.
"""

from __future__ import annotations

from typing import Any

try:
    import psycopg as driver

    DRIVER = "psycopg"
except ImportError:
    import psycopg2 as driver  # type: ignore[no-redef]

    DRIVER = "psycopg2"

#: What a query on a dead connection raises, with either driver.
OperationalError = driver.OperationalError
#: Any driver error (psycopg2 raises InterfaceError on a connection it already closed).
Error = driver.Error


def connect(dsn: str, **params: Any) -> Any:
    """Open an autocommit connection; ``params`` (host, port, application_name...) win."""
    params.setdefault("connect_timeout", 5)
    connection = driver.connect(dsn, **params)
    connection.autocommit = True
    return connection


def query(connection: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement and return its rows (none for a statement without a result)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []
