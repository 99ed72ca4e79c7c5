"""PgBouncer: a real pooler in front of the server, restarted and paused by the test."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_postgresql_reconnect.testing import PgBouncer, PgBouncerError, PostgresServer

from ._client import OperationalError, connect, query
from .test_proxy import Background

pytestmark = pytest.mark.pgbouncer

PASSWORD = "bouncer-pw"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """A server with password auth, as the suite's own: pgbouncer must log in with SCRAM."""
    with PostgresServer(auth="password", password=PASSWORD) as server:
        yield server


@pytest.fixture
def session_bouncer(server: PostgresServer) -> Iterator[PgBouncer]:
    with PgBouncer(server, pool_mode="session") as bouncer:
        yield bouncer


@pytest.fixture
def transaction_bouncer(server: PostgresServer) -> Iterator[PgBouncer]:
    with PgBouncer(server, pool_mode="transaction") as bouncer:
        yield bouncer


def backend_pid(connection: Any) -> int:
    [(pid,)] = query(connection, "SELECT pg_backend_pid()")
    return int(pid)


def wait_until_gone(server: PostgresServer, pid: int) -> bool:
    """Whether the backend ``pid`` exits within 5 s (it does once it reads the lost socket)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if server.execute(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == [("0",)]:
            return True
        time.sleep(0.01)
    return False


def test_session_pooling_gives_each_client_its_own_server_connection(
    server: PostgresServer, session_bouncer: PgBouncer
) -> None:
    first, second = connect(session_bouncer.dsn()), connect(session_bouncer.dsn())

    assert query(first, "SELECT current_setting('port')::int") == [(server.port,)]
    assert backend_pid(first) != backend_pid(second)
    assert backend_pid(first) == backend_pid(first)
    pools = {pool["database"]: pool for pool in session_bouncer.console("SHOW POOLS")}
    assert pools["postgres"]["pool_mode"] == "session"


def test_transaction_pooling_shares_a_server_connection_between_clients(
    server: PostgresServer,
) -> None:
    with PgBouncer(
        server, pool_mode="transaction", settings={"default_pool_size": "1"}
    ) as bouncer:
        first, second = connect(bouncer.dsn()), connect(bouncer.dsn())

        assert backend_pid(first) == backend_pid(second)
        assert query(second, "SELECT current_user") == [("postgres",)]


def test_restart_drops_clients_and_server_connections_then_new_clients_connect(
    server: PostgresServer, session_bouncer: PgBouncer
) -> None:
    client = connect(session_bouncer.dsn())
    pid = backend_pid(client)
    port = session_bouncer.port

    session_bouncer.restart()

    with pytest.raises(OperationalError):
        query(client, "SELECT 1")
    assert wait_until_gone(server, pid), "the server connection outlived the restart"
    assert session_bouncer.port == port
    assert query(connect(session_bouncer.dsn()), "SELECT 2") == [(2,)]


def test_pause_holds_queries_until_resume(transaction_bouncer: PgBouncer) -> None:
    client = connect(transaction_bouncer.dsn())
    assert query(client, "SELECT 1") == [(1,)]

    transaction_bouncer.pause()
    held = Background(lambda: query(client, "SELECT 2"))
    newcomer = Background(lambda: query(connect(transaction_bouncer.dsn()), "SELECT 3"))

    assert not held.finished_within(0.5)
    assert not newcomer.finished_within(0.1)
    transaction_bouncer.resume()
    assert held.finished_within(5) and newcomer.finished_within(5)
    assert (held.error, held.result) == (None, [(2,)])
    assert (newcomer.error, newcomer.result) == (None, [(3,)])


def test_pause_in_session_pooling_waits_for_clients_to_leave(session_bouncer: PgBouncer) -> None:
    client = connect(session_bouncer.dsn())
    query(client, "SELECT 1")  # the client now holds a server connection

    with pytest.raises(PgBouncerError, match="session pooling"):
        session_bouncer.pause(timeout=0.3)

    session_bouncer.resume()
    assert query(client, "SELECT 2") == [(2,)]


def test_reconnect_replaces_server_connections_behind_open_clients(
    server: PostgresServer, transaction_bouncer: PgBouncer
) -> None:
    client = connect(transaction_bouncer.dsn())
    before = backend_pid(client)

    transaction_bouncer.reconnect()

    assert backend_pid(client) != before  # the same client connection, a new server one
    assert wait_until_gone(server, before)


@pytest.mark.parametrize("pgbouncer", ["transaction"], indirect=True)
def test_the_fixture_puts_a_bouncer_in_front_of_the_session_server(
    postgres_server: PostgresServer, pgbouncer: PgBouncer
) -> None:
    assert pgbouncer.pool_mode == "transaction"
    entry = pgbouncer.database_settings(name="app", CONN_MAX_AGE=None)
    assert (entry["HOST"], entry["PORT"]) == (pgbouncer.host, str(pgbouncer.port))
    assert entry["DISABLE_SERVER_SIDE_CURSORS"] is True and entry["CONN_MAX_AGE"] is None
    connection = connect(pgbouncer.dsn())
    assert query(connection, "SELECT current_setting('port')::int") == [(postgres_server.port,)]


def test_a_taken_port_fails_the_start_with_the_log(server: PostgresServer) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        bouncer = PgBouncer(server, port=squatter.getsockname()[1])
        try:
            with pytest.raises(PgBouncerError, match=r"(?s)did not start.*cannot listen"):
                bouncer.start()
            assert not bouncer.is_running
        finally:
            bouncer.close()
