"""SilentLink makes packets vanish: clients learn of it only from their own timeouts."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_postgresql_reconnect.testing import PostgresServer, SilentLink

from ._client import OperationalError, connect, query

#: With DPR_REQUIRE_ROOT_TESTS=1 (CI as root) these tests must run: not being root fails them.
REQUIRED = os.environ.get("DPR_REQUIRE_ROOT_TESTS") == "1"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 and not REQUIRED, reason="needs root: network namespaces and nftables"
    ),
]

#: Give up on unacknowledged data after 2 s, and probe an idle connection every second.
SHORT_TCP_TIMEOUTS = {
    "tcp_user_timeout": 2000,
    "keepalives": 1,
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
}
#: Far above what 2 s of tcp_user_timeout needs; only a hang goes past it.
GIVE_UP = 30.0


@pytest.fixture(scope="module")
def link() -> Iterator[SilentLink]:
    with SilentLink() as link:
        link.start_server()
        yield link


@pytest.fixture(autouse=True)
def _healed(link: SilentLink) -> Iterator[None]:
    yield
    link.heal()


def over(link: SilentLink) -> Any:
    assert link.server is not None
    return connect(link.server.dsn(), **SHORT_TCP_TIMEOUTS)


def client_port(conn: Any) -> int:
    fileno = conn.pgconn.socket if hasattr(conn, "pgconn") else conn.fileno()
    sock = socket.socket(fileno=os.dup(fileno))
    try:
        port: int = sock.getsockname()[1]
        return port
    finally:
        sock.close()


def fail_slowly(conn: Any) -> tuple[OperationalError, float]:
    """Run a query that must fail; return the error and how long the failure took."""
    started = time.monotonic()
    with pytest.raises(OperationalError) as caught:
        query(conn, "SELECT 1")
    return caught.value, time.monotonic() - started


def test_queries_cross_the_link(link: SilentLink) -> None:
    assert link.host.startswith("198.1")
    assert query(over(link), "SELECT inet_server_addr()::text") == [(f"{link.host}/32",)]


def test_drop_all_fails_a_query_by_timeout_not_by_reset(link: SilentLink) -> None:
    conn = over(link)
    assert query(conn, "SELECT 1") == [(1,)]

    link.drop_all()
    error, seconds = fail_slowly(conn)

    print(f"dropped link: failed after {seconds:.1f} s with {error!r}")
    assert seconds < GIVE_UP
    assert "reset" not in str(error).lower()
    assert "timed out" in str(error).lower()
    link.heal()
    assert query(over(link), "SELECT 2") == [(2,)]


def test_drop_flow_fails_one_connection_while_new_ones_work(link: SilentLink) -> None:
    forgotten = over(link)
    assert query(forgotten, "SELECT 1") == [(1,)]

    link.drop_flow(client_port(forgotten))
    failure: list[tuple[OperationalError, float]] = []
    waiting = threading.Thread(target=lambda: failure.append(fail_slowly(forgotten)))
    waiting.start()
    fresh = over(link)
    assert query(fresh, "SELECT 2") == [(2,)]
    waiting.join(GIVE_UP)

    assert failure, "the forgotten connection neither failed nor answered"
    error, seconds = failure[0]
    print(f"dropped flow: failed after {seconds:.1f} s with {error!r}")
    assert "timed out" in str(error).lower()
    assert query(fresh, "SELECT 3") == [(3,)]


def test_close_leaves_no_namespace_link_or_table() -> None:
    link = SilentLink()
    link.setup()
    server: PostgresServer = link.start_server()
    names = (link.namespace, link.host_interface, link.table)

    link.close()

    assert not server.is_running
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert names[0] not in namespaces.split()
    assert f" {names[1]}@" not in links and f" {names[1]}:" not in links
    assert names[2] not in tables
