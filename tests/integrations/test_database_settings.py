"""The engine with Django's own connection settings and with dj-database-url.

CONN_HEALTH_CHECKS: Django asks ``is_usable()`` once per request before the first query; the
engine's answer is its look at the socket (a round trip only after IDLE_CHECK_AFTER idle), so
turning them on adds no statement. dj-database-url: ``engine=`` gives an entry of this engine,
to which RECONNECT is added like any key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.signals import request_finished, request_started
from django.db import connections

from tests.conftest import PASSWORD
from tests.faults import add_database, lose_connection, remove_database, run

dj_database_url = pytest.importorskip(
    "dj_database_url", reason="needs the integrations dependency group"
)

ENGINE = "django_postgresql_reconnect.backend"
ALIAS = "configured"


@pytest.fixture
def configure() -> Iterator[Any]:
    def add(entry: dict[str, Any]) -> str:
        add_database(ALIAS, entry)
        return ALIAS

    yield add
    remove_database(ALIAS)


def url(proxy, query: str = "sslmode=disable") -> str:
    return f"postgres://postgres:{PASSWORD}@{proxy.host}:{proxy.port}/app?{query}"


def request(sql: str, using: str) -> list[tuple[object, ...]]:
    """One request's worth: Django's request signals around one statement."""
    request_started.send(sender=None)
    try:
        return run(sql, using=using)
    finally:
        request_finished.send(sender=None)


def test_dj_database_url_engine_gives_an_entry_of_this_engine(server, proxy, configure):
    entry = dj_database_url.parse(url(proxy), engine=ENGINE, conn_max_age=600)
    entry["RECONNECT"] = {"DEADLINE": 5.0}
    alias = configure(entry)

    assert entry["ENGINE"] == ENGINE
    assert connections[alias].reconnect_options.DEADLINE == 5.0  # type: ignore[attr-defined]
    run("SELECT 1", using=alias)
    lose_connection(server, alias)
    assert run("SELECT 2", using=alias) == [(2,)]


def test_options_in_the_url_win_over_the_engines_tcp_defaults(proxy, configure):
    entry = dj_database_url.parse(url(proxy, "sslmode=disable&connect_timeout=7"), engine=ENGINE)
    params = connections[configure(entry)].get_connection_params()

    assert params["connect_timeout"] == 7  # yours
    assert (params["keepalives_idle"], params["tcp_user_timeout"]) == (30, 20_000)  # the rest


def test_health_checks_add_no_statement_to_a_warm_request(proxy, configure):
    entry = dj_database_url.parse(
        url(proxy), engine=ENGINE, conn_max_age=None, conn_health_checks=True
    )
    alias = configure(entry)
    request("SELECT 1", alias)
    proxy.reset_counters()

    request("SELECT 2", alias)

    assert proxy.statements == ["SELECT 2"]


def test_health_checks_of_an_idle_connection_cost_one_empty_query(proxy, configure):
    entry = {
        **dj_database_url.parse(url(proxy), engine=ENGINE, conn_health_checks=True),
        "CONN_MAX_AGE": None,
        "RECONNECT": {"IDLE_CHECK_AFTER": 0.2},
    }
    alias = configure(entry)
    request("SELECT 1", alias)

    time.sleep(0.3)
    proxy.reset_counters()

    request("SELECT 2", alias)

    assert proxy.statements == ["", "SELECT 2"]  # Django's check was the engine's one look


def test_a_terminated_backend_is_replaced_at_the_health_check(server, proxy, configure):
    entry = dj_database_url.parse(
        url(proxy), engine=ENGINE, conn_max_age=None, conn_health_checks=True
    )
    alias = configure(entry)
    request("SELECT 1", alias)
    lose_connection(server, alias)
    proxy.reset_counters()

    assert request("SELECT 2", alias) == [(2,)]
    assert proxy.statements[-1] == "SELECT 2"
    assert proxy.connections_accepted == 1
