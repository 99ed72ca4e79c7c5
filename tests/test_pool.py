"""Django's connection pool (OPTIONS={"pool": ...}): a dead pooled connection is thrown away.

The same guarantees as without a pool: a read after a termination succeeds on the first call,
a write runs once, and the pool never hands the dead connection out again.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from django_postgresql_reconnect import drivers
from tests.app.models import Item
from tests.faults import backend_pid, item_names, wait_until_server_hung_up

if django.VERSION < (5, 1):
    pytest.skip("Django's connection pool needs Django 5.1 or later", allow_module_level=True)
if not drivers.IS_PSYCOPG3:
    pytest.skip("Django's connection pool needs psycopg 3 (psycopg_pool)", allow_module_level=True)

POOLED = "pooled"


def add_alias(name: str, entry: dict[str, Any]) -> None:
    """Add a database alias at run time, with Django's defaults filled in."""
    # configure_settings() insists on a default alias; the configured one passes unchanged.
    databases = {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], name: entry}
    connections.settings[name] = connections.configure_settings(databases)[name]


@pytest.fixture
def pooled(server, proxy) -> Iterator[str]:
    """An alias of this engine through the proxy, with a pool of one or two connections.

    CONN_HEALTH_CHECKS stays off (Django's default), so the pool hands out idle connections
    without a check of its own: finding the dead ones is the engine's work.
    """
    entry = server.database_settings(
        engine="django_postgresql_reconnect.backend",
        name="app",
        host=proxy.host,
        port=proxy.port,
        CONN_MAX_AGE=0,
        OPTIONS={"sslmode": "disable", "pool": {"min_size": 1, "max_size": 2, "timeout": 5}},
    )
    add_alias(POOLED, entry)
    yield POOLED
    connections[POOLED].close()
    connections[POOLED].close_pool()  # type: ignore[attr-defined]  # Django 5.1+, not in the stubs
    del connections.settings[POOLED]
    del connections[POOLED]


def wait_until_hung_up(connection: Any, timeout: float = 5.0) -> None:
    """Wait until the server's goodbye reached a driver connection idle in the pool."""
    poller = select.poll()
    poller.register(drivers.socket_fd(connection), select.POLLIN)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poller.poll(50):
            return
    raise AssertionError(f"the server did not hang up on {connection} within {timeout} s")


def driver_connection(alias: str) -> Any:
    connections[alias].ensure_connection()
    return connections[alias].connection


def test_read_after_termination_of_the_checked_out_connection_succeeds(server, pooled):
    first_pid = backend_pid(pooled)
    server.terminate_backends()
    wait_until_server_hung_up(pooled)

    assert Item.objects.using(pooled).count() == 0
    assert backend_pid(pooled) != first_pid


def test_read_after_termination_of_an_idle_pooled_connection_succeeds(server, pooled):
    first_pid = backend_pid(pooled)
    dead = driver_connection(pooled)
    connections[pooled].close()  # back to the pool, as at the end of a request
    server.terminate_backends()
    wait_until_hung_up(dead)

    assert Item.objects.using(pooled).count() == 0
    assert backend_pid(pooled) != first_pid
    assert dead.closed, "the dead connection was kept instead of discarded"


def test_dead_connection_is_not_handed_out_again(server, pooled):
    dead = driver_connection(pooled)
    dead_pid = backend_pid(pooled)
    server.terminate_backends()
    wait_until_server_hung_up(pooled)
    assert Item.objects.using(pooled).count() == 0

    for _ in range(4):  # requests come and go; each takes a connection from the pool
        connections[pooled].close()
        assert driver_connection(pooled) is not dead
        assert backend_pid(pooled) != dead_pid
        assert Item.objects.using(pooled).count() == 0


def idle_pool_of_two(alias: str) -> list[Any]:
    """Fill the pool with two idle connections; return them, to watch their sockets."""
    Item.objects.using(alias).count()
    connections[alias].close()
    pool = connections[alias].pool  # type: ignore[attr-defined]  # Django 5.1+, not in the stubs
    both = [pool.getconn(), pool.getconn()]
    for connection in both:
        pool.putconn(connection)
    return both


def test_write_after_every_pooled_connection_was_terminated_runs_once(server, pooled):
    """All idle connections die together (a failover): the replacement must be checked too."""
    idle = idle_pool_of_two(pooled)
    server.terminate_backends()
    for connection in idle:
        wait_until_hung_up(connection)

    Item.objects.using(pooled).create(name="after")

    assert item_names(server) == ["after"]


def test_read_after_every_pooled_connection_was_terminated_succeeds(server, pooled):
    idle = idle_pool_of_two(pooled)
    server.terminate_backends()
    for connection in idle:
        wait_until_hung_up(connection)

    assert Item.objects.using(pooled).count() == 0
    for connection in idle:
        assert connection.closed, "a dead connection went back to the pool"


def test_atomic_block_after_termination_commits_atomically(server, pooled):
    idle = idle_pool_of_two(pooled)
    server.terminate_backends()
    for connection in idle:
        wait_until_hung_up(connection)

    with transaction.atomic(using=pooled):
        Item.objects.using(pooled).create(name="a")
        Item.objects.using(pooled).create(name="b")

    assert item_names(server) == ["a", "b"]


def test_read_after_tcp_reset_succeeds_and_the_pool_recovers(proxy, pooled):
    Item.objects.using(pooled).count()
    proxy.reset_all()

    assert Item.objects.using(pooled).count() == 0
    connections[pooled].close()
    assert Item.objects.using(pooled).count() == 0
