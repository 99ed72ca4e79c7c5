"""Several aliases, a read replica behind a router, and every CONN_MAX_AGE.

A loss on one alias is that alias's business: the others keep their connections. Reads routed
to a replica recover like any other read, and connections live as long as CONN_MAX_AGE says,
across requests (request_started / request_finished), whatever was lost in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.signals import request_finished, request_started
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction

from django_postgresql_reconnect import TransactionLost
from tests.app.models import Item
from tests.faults import backend_pid, item_names, wait_until_server_hung_up

ENGINE = "django_postgresql_reconnect.backend"


def add_alias(name: str, entry: dict[str, Any]) -> None:
    """Add a database alias at run time, with Django's defaults filled in."""
    # configure_settings() insists on a default alias; the configured one passes unchanged.
    databases = {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], name: entry}
    connections.settings[name] = connections.configure_settings(databases)[name]


def remove_alias(name: str) -> None:
    connections[name].close()
    del connections.settings[name]
    del connections[name]


@pytest.fixture
def make_alias(server, proxy) -> Iterator[Any]:
    """Add aliases of this engine (through the proxy unless ``direct``), removed afterwards."""
    added: list[str] = []

    def make(name: str, *, direct: bool = False, **extra: Any) -> str:
        host, port = (server.host, server.port) if direct else (proxy.host, proxy.port)
        entry = server.database_settings(
            engine=ENGINE, name="app", host=host, port=port, OPTIONS={"sslmode": "disable"}
        )
        entry.update(extra)
        add_alias(name, entry)
        added.append(name)
        return name

    yield make
    for name in added:
        remove_alias(name)


def one_request(work: Any) -> Any:
    """Run ``work`` between the signals Django's handlers send around every request."""
    request_started.send(sender=None)
    try:
        return work()
    finally:
        request_finished.send(sender=None)


# --- A loss on one alias leaves the others alone -------------------------------------------------


def test_termination_on_one_alias_leaves_another_connected(server):
    direct_pid = backend_pid("direct")
    default_pid = backend_pid("default")
    server.terminate_backends(pid=default_pid)
    wait_until_server_hung_up("default")

    assert Item.objects.count() == 0
    assert backend_pid("default") != default_pid
    assert backend_pid("direct") == direct_pid


def test_tcp_reset_of_proxied_aliases_leaves_the_direct_one_connected(proxy):
    direct_pid = backend_pid("direct")
    Item.objects.count()
    Item.objects.using("fastfail").count()
    proxy.reset_all()

    assert Item.objects.count() == 0
    assert Item.objects.using("fastfail").count() == 0
    assert backend_pid("direct") == direct_pid


def test_transaction_lost_on_one_alias_leaves_a_transaction_on_another_intact(server):
    with transaction.atomic(using="direct"):
        Item.objects.using("direct").create(name="on direct")
        with pytest.raises(TransactionLost), transaction.atomic():
            Item.objects.create(name="on default")
            server.terminate_backends(pid=backend_pid("default"))
            Item.objects.create(name="on default, after the loss")
        Item.objects.using("direct").create(name="on direct, after")

    assert item_names(server) == ["on direct", "on direct, after"]


# --- A replica behind a router -------------------------------------------------------------------


class PrimaryReplicaRouter:
    """Reads from ``replica``, writes to ``primary``."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "primary"

    def allow_relation(self, *args: Any, **hints: Any) -> bool:
        return True


@pytest.fixture
def replica_router(make_alias, monkeypatch) -> None:
    make_alias("primary", direct=True, CONN_MAX_AGE=None)
    make_alias("replica", CONN_MAX_AGE=None)
    monkeypatch.setattr(router, "routers", [PrimaryReplicaRouter()])


@pytest.mark.usefixtures("replica_router")
def test_read_routed_to_a_replica_recovers_after_its_backend_is_terminated(server):
    Item.objects.create(name="written to the primary")
    assert list(Item.objects.values_list("name", flat=True)) == ["written to the primary"]
    replica_pid = backend_pid("replica")
    primary_pid = backend_pid("primary")
    server.terminate_backends(pid=replica_pid)
    wait_until_server_hung_up("replica")

    assert list(Item.objects.values_list("name", flat=True)) == ["written to the primary"]
    assert backend_pid("replica") != replica_pid
    assert backend_pid("primary") == primary_pid


@pytest.mark.usefixtures("replica_router")
def test_read_routed_to_a_replica_recovers_after_a_tcp_reset(proxy, server):
    Item.objects.create(name="a")
    primary_pid = backend_pid("primary")
    assert Item.objects.count() == 1
    proxy.reset_all()

    assert Item.objects.count() == 1
    Item.objects.create(name="b")
    assert item_names(server) == ["a", "b"]
    assert backend_pid("primary") == primary_pid


# --- CONN_MAX_AGE --------------------------------------------------------------------------------


def test_conn_max_age_0_closes_at_request_end_and_the_next_request_connects(server, make_alias):
    alias = make_alias("per_request", CONN_MAX_AGE=0)

    first_pid = one_request(lambda: backend_pid(alias))
    assert connections[alias].connection is None  # closed by request_finished

    second_pid = one_request(lambda: backend_pid(alias))
    assert connections[alias].connection is None
    assert second_pid != first_pid


def test_conn_max_age_0_recovers_from_a_termination_inside_a_request(server, make_alias):
    alias = make_alias("per_request", CONN_MAX_AGE=0)

    def request() -> int:
        server.terminate_backends(pid=backend_pid(alias))
        wait_until_server_hung_up(alias)
        return Item.objects.using(alias).count()

    assert one_request(request) == 0
    assert connections[alias].connection is None


@pytest.mark.parametrize("max_age", [60, None], ids=["conn_max_age_60", "conn_max_age_none"])
def test_persistent_connection_recovers_from_a_termination_between_requests(
    server, make_alias, max_age
):
    alias = make_alias("persistent", CONN_MAX_AGE=max_age)
    first_pid = one_request(lambda: backend_pid(alias))
    assert one_request(lambda: backend_pid(alias)) == first_pid  # kept across requests

    server.terminate_backends(pid=first_pid)
    wait_until_server_hung_up(alias)

    assert one_request(lambda: Item.objects.using(alias).count()) == 0
    second_pid = one_request(lambda: backend_pid(alias))
    assert second_pid != first_pid
    assert one_request(lambda: backend_pid(alias)) == second_pid  # and kept again


@pytest.mark.parametrize("max_age", [60, None], ids=["conn_max_age_60", "conn_max_age_none"])
def test_persistent_connection_write_after_termination_between_requests_runs_once(
    server, make_alias, max_age
):
    alias = make_alias("persistent", CONN_MAX_AGE=max_age)
    one_request(lambda: Item.objects.using(alias).create(name="first"))
    server.terminate_backends()
    wait_until_server_hung_up(alias)

    one_request(lambda: Item.objects.using(alias).create(name="second"))

    assert item_names(server) == ["first", "second"]
