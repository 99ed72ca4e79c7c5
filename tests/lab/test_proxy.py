"""FaultProxy does to plain driver connections what each of its faults claims."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_postgresql_reconnect.testing import FaultProxy, PostgresServer

from ._client import OperationalError, connect, query


def through(proxy: FaultProxy, server: PostgresServer) -> Any:
    """An autocommit connection to the server by way of the proxy."""
    return connect(server.dsn(), host=proxy.host, port=proxy.port)


def client_port(conn: Any) -> int:
    """The local port of a connection's socket, as the proxy sees it from the other end."""
    fileno = conn.pgconn.socket if hasattr(conn, "pgconn") else conn.fileno()
    sock = socket.socket(fileno=os.dup(fileno))
    try:
        port: int = sock.getsockname()[1]
        return port
    finally:
        sock.close()


class Background:
    """Run a call in a thread, so a test can see that it blocks without blocking itself."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as error:
            self.error = error

    def finished_within(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def proxy(server: PostgresServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.host, server.port) as proxy:
        yield proxy


def test_reset_all_breaks_open_connections_and_new_ones_work(
    server: PostgresServer, proxy: FaultProxy
) -> None:
    conn = through(proxy, server)
    assert query(conn, "SELECT 1") == [(1,)]

    proxy.reset_all()

    with pytest.raises(OperationalError):
        query(conn, "SELECT 1")
    assert query(through(proxy, server), "SELECT 2") == [(2,)]


def test_close_all_breaks_open_connections_and_new_ones_work(
    server: PostgresServer, proxy: FaultProxy
) -> None:
    conn = through(proxy, server)
    assert query(conn, "SELECT 1") == [(1,)]

    proxy.close_all()

    with pytest.raises(OperationalError):
        query(conn, "SELECT 1")
    assert query(through(proxy, server), "SELECT 2") == [(2,)]
    assert [record.closed for record in proxy.connections] == [True, False]


def test_swallowed_insert_is_committed_though_the_client_saw_an_error(
    server: PostgresServer, proxy: FaultProxy
) -> None:
    server.execute("DROP TABLE IF EXISTS swallowed; CREATE TABLE swallowed (x int)")
    conn = through(proxy, server)
    fired = proxy.swallow_reply("INSERT")

    with pytest.raises(OperationalError):
        query(conn, "INSERT INTO swallowed VALUES (42)")

    assert fired.is_set()
    assert server.execute("SELECT x FROM swallowed") == [("42",)]
    # Only the next match is swallowed: the fault is spent.
    other = through(proxy, server)
    query(other, "INSERT INTO swallowed VALUES (43)")
    assert server.execute("SELECT count(*) FROM swallowed") == [("2",)]


def test_swallow_then_blackhole_leaves_the_client_waiting(
    server: PostgresServer, proxy: FaultProxy
) -> None:
    server.execute("DROP TABLE IF EXISTS swallowed; CREATE TABLE swallowed (x int)")
    conn = through(proxy, server)
    assert query(conn, "SELECT 1") == [(1,)]  # earlier replies on the connection still arrive
    fired = proxy.swallow_reply(r"INSERT INTO swallowed", then="blackhole")

    insert = Background(lambda: query(conn, "INSERT INTO swallowed VALUES (7)"))

    assert fired.wait(5)
    assert not insert.finished_within(1.0)
    assert server.execute("SELECT x FROM swallowed") == [("7",)]


def test_blackhole_stalls_open_and_new_connections_until_healed(
    server: PostgresServer, proxy: FaultProxy
) -> None:
    conn = through(proxy, server)
    assert query(conn, "SELECT 1") == [(1,)]

    proxy.blackhole()
    stalled = Background(lambda: query(conn, "SELECT 2"))
    newcomer = Background(lambda: query(through(proxy, server), "SELECT 3"))

    assert not stalled.finished_within(1.0)
    assert not newcomer.finished_within(0.2)
    proxy.heal()
    assert stalled.finished_within(5) and newcomer.finished_within(5)
    assert (stalled.error, stalled.result) == (None, [(2,)])
    assert (newcomer.error, newcomer.result) == (None, [(3,)])


def test_refuse_fails_new_connections_while_it_lasts(
    server: PostgresServer, proxy: FaultProxy
) -> None:
    conn = through(proxy, server)

    proxy.refuse()
    with pytest.raises(OperationalError):
        through(proxy, server)
    assert query(conn, "SELECT 1") == [(1,)]  # connections already open are left alone
    proxy.heal()
    assert query(through(proxy, server), "SELECT 2") == [(2,)]

    proxy.refuse(0.3)
    with pytest.raises(OperationalError):
        through(proxy, server)
    time.sleep(0.4)
    assert query(through(proxy, server), "SELECT 3") == [(3,)]


def test_counts_one_statement_and_one_round_trip_for_a_select(
    server: PostgresServer, proxy: FaultProxy
) -> None:
    conn = through(proxy, server)
    statements_before, round_trips_before = len(proxy.statements), proxy.round_trips

    query(conn, "SELECT 1")

    assert proxy.statements[statements_before:] == ["SELECT 1"]
    assert proxy.round_trips - round_trips_before == 1
    assert proxy.connections_accepted == 1
    (record,) = proxy.connections
    assert record.client_port == client_port(conn)
    assert record.statements[-1] == "SELECT 1"


def test_reset_counters_starts_from_zero(server: PostgresServer, proxy: FaultProxy) -> None:
    conn = through(proxy, server)
    query(conn, "SELECT 1")

    proxy.reset_counters()
    query(conn, "SELECT 2")

    assert proxy.statements == ["SELECT 2"]
    assert proxy.round_trips == 1
    assert proxy.connections_accepted == 0
    assert [record.statements for record in proxy.connections] == [["SELECT 2"]]


def test_latency_delays_every_round_trip(server: PostgresServer, proxy: FaultProxy) -> None:
    conn = through(proxy, server)
    proxy.latency(0.2)

    started = time.monotonic()
    query(conn, "SELECT 1")
    elapsed = time.monotonic() - started

    assert elapsed >= 0.2
    proxy.heal()
