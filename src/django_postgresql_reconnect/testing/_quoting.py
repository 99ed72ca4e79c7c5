"""Quoting values for the places the tools write them: SQL, postgresql.conf, libpq strings.

Each function is the quoting rule of one format, so no value reaches a server, a
configuration file or a connection string unescaped.
"""

from __future__ import annotations

from collections.abc import Mapping


def literal(value: str) -> str:
    """Quote a SQL string literal, which is also a postgresql.conf string value."""
    return "'" + value.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """Quote a SQL identifier (a database or role name)."""
    return '"' + name.replace('"', '""') + '"'


def libpq_value(value: str) -> str:
    """Quote a value of a libpq keyword/value connection string (also PgBouncer's)."""
    if value and not any(char in value for char in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(params: Mapping[str, str | None]) -> str:
    """A libpq keyword/value connection string of ``params``; a None value leaves its
    keyword out (a password that is not set, say)."""
    return " ".join(
        f"{key}={libpq_value(value)}" for key, value in params.items() if value is not None
    )


def auth_file_value(value: str) -> str:
    """Quote a value of PgBouncer's auth_file: in double quotes, a double quote doubled."""
    return '"' + value.replace('"', '""') + '"'
