"""django-prometheus composed with the engine: it recovers, and django-prometheus still counts.

The backend is ``class DatabaseWrapper(ReconnectMixin, django_prometheus's DatabaseWrapper)``
(tests/integrations/prometheus_backend). django-prometheus counts what goes through the
driver's cursors, and so exactly what the server received: the replacement connection's
set-up, and the engine's read-only re-run of a read whose reply was lost (with the driver's
error once), while the caller saw one success.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connections

from django_postgresql_reconnect.mixin import ReconnectMixin
from tests.faults import add_database, lose_connection, remove_database, run

pytest.importorskip("django_prometheus", reason="needs the integrations dependency group")
from prometheus_client import REGISTRY

ALIAS = "prometheus"
LABELS = {"alias": ALIAS, "vendor": "postgresql"}


def count(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, {**LABELS, **labels}) or 0.0


def decisions(decision: str) -> float:
    labels = {"alias": ALIAS, "decision": decision}
    return REGISTRY.get_sample_value("django_postgresql_reconnect_decisions_total", labels) or 0.0


@pytest.fixture
def alias() -> Iterator[str]:
    entry = {**connections.settings["default"], "ENGINE": "tests.integrations.prometheus_backend"}
    add_database(ALIAS, entry)
    yield ALIAS
    remove_database(ALIAS)


def test_the_composed_backend_is_both(alias):
    from django_prometheus.db.common import DatabaseWrapperMixin

    wrapper = connections[alias]
    assert isinstance(wrapper, ReconnectMixin) and isinstance(wrapper, DatabaseWrapperMixin)
    assert wrapper.reconnect_options is not None  # RECONNECT absent: on


def test_a_terminated_backend_is_replaced_and_every_statement_is_counted(server, proxy, alias):
    run("SELECT 1", using=alias)
    executed = count("django_db_execute_total")
    opened = count("django_db_new_connections_total")
    lost = decisions("connection lost")
    proxy.reset_counters()

    lose_connection(server, alias)
    assert run("SELECT 2", using=alias) == [(2,)]
    run("SELECT 3", using=alias)

    # Django's time zone set-up on the new connection, then the two statements.
    assert proxy.statements[1:] == ["SELECT 2", "SELECT 3"]
    assert count("django_db_execute_total") == executed + len(proxy.statements)
    assert count("django_db_new_connections_total") == opened + 1  # the replacement
    assert decisions("connection lost") == lost + 1  # and the engine's own metric


def test_a_read_run_again_after_a_lost_reply_is_counted_as_the_server_saw_it(proxy, alias):
    run("SELECT 1", using=alias)
    executed = count("django_db_execute_total")
    errors = count("django_db_errors_total", type="OperationalError")
    proxy.reset_counters()
    swallowed = proxy.swallow_reply("SELECT 42")

    assert run("SELECT 42", using=alias) == [(42,)]  # the caller saw no error

    assert swallowed.is_set()
    assert proxy.statements[0] == "SELECT 42"
    assert proxy.statements[-3:] == ["BEGIN READ ONLY", "SELECT 42", "COMMIT"]  # the re-run
    assert count("django_db_execute_total") == executed + len(proxy.statements)
    assert count("django_db_errors_total", type="OperationalError") == errors + 1
