"""Small steps the scenarios share: waiting for a hang-up, reading what the server holds."""

from __future__ import annotations

import select
import time

from django.db import connections

from django_postgresql_reconnect import drivers
from django_postgresql_reconnect.testing import PostgresServer


def wait_until_server_hung_up(alias: str = "default", timeout: float = 5.0) -> None:
    """Wait until the server's goodbye (FATAL, FIN) reached the idle connection's socket.

    Termination is asynchronous: the backend exits a moment after pg_terminate_backend()
    returns. Scenarios that say "the connection died while idle" wait for that here.
    """
    connection = connections[alias].connection
    assert connection is not None, f"{alias} has no open connection"
    fd = drivers.socket_fd(connection)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poller.poll(50):
            return
    raise AssertionError(f"the server did not hang up on {alias} within {timeout} s")


def item_names(server: PostgresServer) -> list[str]:
    """The rows of the scenario table, as the server sees them (over its admin socket)."""
    return [
        row[0] for row in server.execute("SELECT name FROM app_item ORDER BY id", dbname="app")
    ]


def backend_pid(alias: str = "default") -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    return int(row[0])


def add_database(alias: str, entry: dict[str, object]) -> None:
    """Add a DATABASES entry at run time (Django's settings were fixed at startup)."""
    configured = connections.configure_settings(
        {"default": connections.settings["default"], alias: entry}
    )
    connections.settings[alias] = configured[alias]


def remove_database(alias: str) -> None:
    """Close and forget an entry added with add_database()."""
    if alias in connections.settings:
        connections[alias].close()
        del connections[alias]  # the wrapper this thread cached, with the old settings
        del connections.settings[alias]


def lose_connection(server: PostgresServer, alias: str = "default") -> None:
    """Terminate the server side of every client session and wait until ``alias`` heard it."""
    server.terminate_backends()
    wait_until_server_hung_up(alias)


def run(sql: object, params: object = None, using: str = "default") -> list[tuple[object, ...]]:
    """Run one statement through Django's cursor (and so through the engine); return its rows."""
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def setting(name: str, using: str = "default") -> str:
    """A setting of the session, as the server reports it."""
    return str(run("SELECT current_setting(%s)", [name], using)[0][0])
