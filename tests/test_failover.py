"""Failover with several hosts: a write refused by a node that became a standby moves on."""

from __future__ import annotations

import time

import pytest
from django.db import connections

from django_postgresql_reconnect.testing import PostgresServer
from tests.conftest import PASSWORD
from tests.faults import add_database, remove_database


@pytest.fixture
def new_primary():
    server = PostgresServer(auth="password", password=PASSWORD)
    server.start()
    server.create_database("app")
    server.execute(
        "CREATE TABLE app_item (id serial PRIMARY KEY, name text, value int)", dbname="app"
    )
    yield server
    server.close()


@pytest.fixture
def two_hosts(server, new_primary):
    entry = dict(connections.settings["direct"])
    entry.update(
        HOST=f"{server.host},{new_primary.host}",
        PORT=f"{server.port},{new_primary.port}",
        OPTIONS={"sslmode": "disable", "target_session_attrs": "read-write"},
    )
    add_database("two_hosts", entry)
    yield connections["two_hosts"]
    remove_database("two_hosts")
    server.execute("ALTER SYSTEM RESET default_transaction_read_only")
    server.execute("SELECT pg_reload_conf()")


def _wait_until_the_session_is_read_only(wrapper):
    """A backend applies a reloaded configuration between two commands, not while it waits
    for one: without this, the first INSERT after the reload could still run read-write."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with wrapper.cursor() as cursor:
            cursor.execute("SHOW default_transaction_read_only")
            if cursor.fetchone()[0] == "on":
                return
        time.sleep(0.01)
    raise AssertionError("the server never turned read-only")


def _port_in_use(wrapper):
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT current_setting('port')")
        return int(cursor.fetchone()[0])


def test_write_refused_by_a_node_turned_read_only_runs_on_the_new_primary(
    server, new_primary, two_hosts
):
    assert _port_in_use(two_hosts) == server.port
    server.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    server.execute("SELECT pg_reload_conf()")
    _wait_until_the_session_is_read_only(two_hosts)

    with two_hosts.cursor() as cursor:
        cursor.execute("INSERT INTO app_item (name, value) VALUES ('moved', 1)")

    assert new_primary.execute("SELECT name FROM app_item", dbname="app") == [("moved",)]
    assert server.execute("SELECT count(*) FROM app_item WHERE name = 'moved'", dbname="app") == [
        ("0",)
    ]
    assert _port_in_use(two_hosts) == new_primary.port


def test_single_host_read_only_refusal_passes_through(server):
    from django.db import InternalError, OperationalError, ProgrammingError

    wrapper = connections["direct"]
    with wrapper.cursor() as cursor:
        cursor.execute("SET default_transaction_read_only = on")
        with pytest.raises((InternalError, OperationalError, ProgrammingError)) as caught:
            cursor.execute("INSERT INTO app_item (name, value) VALUES ('refused', 1)")
    assert "read-only" in str(caught.value)
