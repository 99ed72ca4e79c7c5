"""PostgresServer: a throwaway cluster that tests can stop, restart and cut sessions on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_postgresql_reconnect.testing import PostgresServer, ServerError

from ._client import OperationalError, connect, query


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A server of the test's own, for scenarios that stop or break it."""
    with PostgresServer() as server:
        yield server


def test_committed_rows_survive_stop_and_restart_on_the_same_port(server: PostgresServer) -> None:
    connection = connect(server.dsn())
    query(connection, "CREATE TABLE item (name text)")
    query(connection, "INSERT INTO item VALUES ('kept')")
    connection.close()
    port = server.port

    server.restart()
    server.stop("immediate")  # a crash: acknowledged commits must still be there
    assert not server.is_running
    server.start()

    assert server.port == port
    assert server.execute("SELECT name FROM item") == [("kept",)]


def test_old_connection_fails_after_terminate_backends(postgres_server: PostgresServer) -> None:
    old = connect(postgres_server.dsn())
    query(old, "SELECT 1")

    assert postgres_server.terminate_backends() >= 1

    with pytest.raises(OperationalError):
        query(old, "SELECT 1")
    new = connect(postgres_server.dsn())
    assert query(new, "SELECT 1") == [(1,)]
    new.close()


def test_terminate_backends_by_application_name_spares_other_sessions(
    postgres_server: PostgresServer,
) -> None:
    victim = connect(postgres_server.dsn(), application_name="victim")
    bystander = connect(postgres_server.dsn(), application_name="bystander")

    assert postgres_server.terminate_backends(application_name="victim") == 1

    with pytest.raises(OperationalError):
        query(victim, "SELECT 1")
    assert query(bystander, "SELECT 1") == [(1,)]
    bystander.close()


def test_terminate_backends_by_pid_hits_only_that_backend(postgres_server: PostgresServer) -> None:
    victim = connect(postgres_server.dsn())
    bystander = connect(postgres_server.dsn())
    [(pid,)] = query(victim, "SELECT pg_backend_pid()")

    assert postgres_server.terminate_backends(pid=pid) == 1

    with pytest.raises(OperationalError):
        query(victim, "SELECT 1")
    assert query(bystander, "SELECT 1") == [(1,)]
    bystander.close()


def test_execute_returns_rows_of_text_and_spares_the_admin_session(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.create_database("lab execute")

    rows = postgres_server.execute("SELECT 1, NULL, 'a b'", dbname="lab execute")

    assert rows == [("1", "", "a b")]
    assert postgres_server.execute("SELECT 1 WHERE false") == []


def test_execute_reports_the_servers_error(postgres_server: PostgresServer) -> None:
    with pytest.raises(ServerError, match="no_such_table"):
        postgres_server.execute("SELECT * FROM no_such_table")


def test_password_auth_rejects_a_wrong_password() -> None:
    with PostgresServer(auth="password", password="right") as server:
        with pytest.raises(OperationalError, match="password authentication failed"):
            connect(server.dsn(), password="wrong")
        connection = connect(server.dsn())  # the DSN carries the right password
        assert query(connection, "SELECT current_user") == [("postgres",)]
        connection.close()


def test_close_leaves_no_process_and_no_directory() -> None:
    server = PostgresServer()
    server.start()
    pid = server.pid
    assert pid is not None
    data_dir = server.data_dir

    server.close()
    server.close()  # twice is fine

    assert not _alive(pid)
    assert not data_dir.exists()
    assert not server.is_running


def test_failed_start_shows_the_server_log() -> None:
    server = PostgresServer(settings={"shared_buffers": "not a size"})
    try:
        with pytest.raises(ServerError, match=r"(?s)did not start.*shared_buffers"):
            server.start()
    finally:
        server.close()
    assert not server.data_dir.exists()


def test_database_settings_point_django_at_the_server_or_a_proxy(
    postgres_server: PostgresServer,
) -> None:
    direct = postgres_server.database_settings()
    proxied = postgres_server.database_settings(host="127.0.0.2", port=6000, CONN_MAX_AGE=None)

    assert direct["ENGINE"] == "django_postgresql_reconnect.backend"
    assert (direct["HOST"], direct["PORT"]) == (postgres_server.host, str(postgres_server.port))
    assert (direct["NAME"], direct["USER"], direct["OPTIONS"]) == ("postgres", "postgres", {})
    assert (proxied["HOST"], proxied["PORT"]) == ("127.0.0.2", "6000")
    assert proxied["CONN_MAX_AGE"] is None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return os.path.exists(f"/proc/{pid}")
    return state not in ("Z", "X")
