"""The network drops one flow without a word (no RST, no FIN): a read is served, not hung.

A NAT or firewall that forgets a connection leaves the client's socket open and silent. Only
a round trip can tell: the engine makes one before using a connection that sat idle past
IDLE_CHECK_AFTER (answered within PING_TIMEOUT or dropped), and a statement already in flight
fails after tcp_user_timeout instead of the kernel's ~15 minutes of retransmissions.

These scenarios run PostgreSQL in a network namespace (SilentLink), so they need root.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from django_postgresql_reconnect import drivers
from django_postgresql_reconnect.conf import TCP_DEFAULTS, ReconnectOptions
from django_postgresql_reconnect.testing.pytest_plugin import require_root
from tests.app.models import Item

ENGINE = "django_postgresql_reconnect.backend"
STOCK = "django.db.backends.postgresql"
ALIAS = "silent"
STOCK_ALIAS = "silent_stock"
IDLE_CHECK_AFTER = ReconnectOptions().IDLE_CHECK_AFTER
TCP_USER_TIMEOUT = TCP_DEFAULTS["tcp_user_timeout"] / 1000
#: An in-flight read waits out tcp_user_timeout, then runs again; past this it hangs.
HANG_LIMIT = TCP_USER_TIMEOUT + 10.0
#: How long stock Django is given to answer before the scenario calls it blocked.
STOCK_PATIENCE = 3.0

# The silent link's server is a cluster of its own: it gets the scenario table here.
CREATE_TABLE = (
    "CREATE TABLE app_item (id bigserial PRIMARY KEY, name varchar(100) NOT NULL UNIQUE, "
    "value integer NOT NULL DEFAULT 0)"
)


@pytest.fixture(scope="module")
def link() -> Iterator[Any]:
    """One SilentLink with PostgreSQL behind it, and aliases for this engine and stock Django."""
    require_root("network namespaces and nftables")
    from django_postgresql_reconnect.testing import SilentLink

    silent = SilentLink()
    try:
        server = silent.start_server()
        server.create_database("app")
        server.execute(CREATE_TABLE, dbname="app")
        server.execute("INSERT INTO app_item (name) VALUES ('kept')", dbname="app")
        for alias, engine in ((ALIAS, ENGINE), (STOCK_ALIAS, STOCK)):
            entry = server.database_settings(
                engine=engine, name="app", CONN_MAX_AGE=None, OPTIONS={"sslmode": "disable"}
            )
            # configure_settings() fills in Django's defaults; it insists on a default alias.
            configured = connections.configure_settings(
                {"default": dict(connections.settings["default"]), alias: entry}
            )
            connections.settings[alias] = configured[alias]
        yield silent
    finally:
        for alias in (ALIAS, STOCK_ALIAS):
            with contextlib.suppress(Exception):
                connections[alias].close()
            with contextlib.suppress(AttributeError):
                del connections[alias]
            connections.settings.pop(alias, None)
        silent.close()


@pytest.fixture(autouse=True)
def _healed(link: Any) -> Iterator[None]:
    """Each scenario starts with every packet flowing and no connection open."""
    link.heal()
    connections[ALIAS].close()
    yield
    link.heal()
    with contextlib.suppress(Exception):
        connections[ALIAS].close()


def client_port(alias: str) -> int:
    """The local TCP port of the alias's connection: the flow a firewall would track."""
    connection = connections[alias].connection
    assert connection is not None, f"{alias} has no open connection"
    sock = socket.socket(fileno=drivers.socket_fd(connection))
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.detach()  # the driver owns the descriptor


def read_names(alias: str = ALIAS) -> list[str]:
    return list(Item.objects.using(alias).values_list("name", flat=True))


def test_idle_connection_whose_flow_was_dropped_is_replaced_before_a_read(link):
    assert read_names() == ["kept"]
    dropped = client_port(ALIAS)
    link.drop_flow(dropped)
    time.sleep(IDLE_CHECK_AFTER + 0.5)

    started = time.monotonic()
    names = read_names()
    seconds = time.monotonic() - started

    print(f"idle dropped flow: read served on a new connection in {seconds:.2f} s")
    assert names == ["kept"]
    assert client_port(ALIAS) != dropped


def test_read_in_flight_when_the_flow_drops_runs_again_on_a_new_connection(link):
    assert read_names() == ["kept"]
    dropped = client_port(ALIAS)
    link.drop_flow(dropped)  # at once: the connection is not idle, so no check before sending

    started = time.monotonic()
    names = read_names()
    seconds = time.monotonic() - started

    print(f"in-flight read on a dropped flow: served on a new connection in {seconds:.2f} s")
    assert names == ["kept"]
    assert client_port(ALIAS) != dropped
    assert seconds < HANG_LIMIT, f"the read hung for {seconds:.1f} s"


def test_stock_django_blocks_on_an_idle_connection_whose_flow_was_dropped(link):
    """The baseline: without a round-trip check or tcp_user_timeout, the read just waits."""
    opened, go = threading.Event(), threading.Event()
    ports: list[int] = []
    sockets: list[int] = []
    results: list[object] = []

    def client() -> None:
        try:
            results.append(read_names(STOCK_ALIAS))
            ports.append(client_port(STOCK_ALIAS))
            sockets.append(drivers.socket_fd(connections[STOCK_ALIAS].connection))
            opened.set()
            go.wait()
            results.append(read_names(STOCK_ALIAS))
        except Exception as error:  # the scenario reports what stock Django did
            results.append(error)
        finally:
            opened.set()
            with contextlib.suppress(Exception):
                connections[STOCK_ALIAS].close()

    thread = threading.Thread(target=client, name="stock client", daemon=True)
    thread.start()
    assert opened.wait(30) and ports, f"stock Django could not connect: {results}"
    link.drop_flow(ports[0])
    time.sleep(IDLE_CHECK_AFTER + 0.5)
    go.set()
    thread.join(STOCK_PATIENCE)
    blocked = thread.is_alive()

    # Let the flow through again so that the read finishes instead of waiting out the kernel.
    link.heal()
    thread.join(30)
    if thread.is_alive():  # retransmissions back off to minutes: cut the socket under it
        sock = socket.socket(fileno=os.dup(sockets[0]))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(10)

    print(f"stock Django after {STOCK_PATIENCE} s: {'blocked' if blocked else results[1:]}")
    assert results[:1] == [["kept"]]
    assert blocked or isinstance(results[-1], Exception), (
        f"stock Django served the read on a silently dropped flow: {results}"
    )
