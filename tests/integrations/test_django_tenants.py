"""django-tenants composed with the engine: a tenant's schema after a lost connection.

The backend is ``class DatabaseWrapper(ReconnectMixin, django_tenants's DatabaseWrapper)``
(tests/integrations/tenants_backend). django-tenants sets ``search_path`` with a ``SET`` on
the driver's cursor, before every statement or (``TENANT_LIMIT_SET_CALLS``) once per
connection. The public schema's table is empty and the tenant's holds one row, so a query
that ran in the wrong schema after a reconnect would read nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from django_postgresql_reconnect import signals
from django_postgresql_reconnect.mixin import ReconnectMixin
from tests.app.models import Item
from tests.faults import add_database, lose_connection, remove_database, run

pytest.importorskip("django_tenants", reason="needs the integrations dependency group")

ALIAS = "tenants"
SCHEMA = "tenant1"


@pytest.fixture(params=[False, True], ids=["set-every-cursor", "limit-set-calls"])
def alias(request: pytest.FixtureRequest, server) -> Iterator[str]:
    server.execute(
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};"
        f" CREATE TABLE {SCHEMA}.app_item (LIKE public.app_item INCLUDING ALL);"
        f" INSERT INTO {SCHEMA}.app_item (name, value) VALUES ('in the tenant', 0)",
        dbname="app",
    )
    entry = {**connections.settings["default"], "ENGINE": "tests.integrations.tenants_backend"}
    add_database(ALIAS, entry)
    connections[ALIAS].set_schema(SCHEMA)  # type: ignore[attr-defined]
    with override_settings(TENANT_LIMIT_SET_CALLS=request.param):
        yield ALIAS
    remove_database(ALIAS)
    server.execute(f"DROP SCHEMA {SCHEMA} CASCADE", dbname="app")


def tenant_rows() -> list[str]:
    return list(Item.objects.using(ALIAS).values_list("name", flat=True))


def test_the_composed_backend_is_both(alias):
    from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantDatabaseWrapper

    wrapper = connections[alias]
    assert isinstance(wrapper, ReconnectMixin) and isinstance(wrapper, TenantDatabaseWrapper)


def test_a_tenants_query_after_termination_reads_the_tenants_schema(server, proxy, alias):
    restored: list[list[str]] = []

    def on_restored(sender: Any, settings: list[str], **kwargs: Any) -> None:
        restored.append(settings)

    assert tenant_rows() == ["in the tenant"]
    lose_connection(server, alias)
    proxy.reset_counters()
    signals.session_restored.connect(on_restored)
    try:
        assert tenant_rows() == ["in the tenant"]
    finally:
        signals.session_restored.disconnect(on_restored)

    # The engine saw django-tenants' SET and replayed it on the new connection; with
    # TENANT_LIMIT_SET_CALLS that replay is the only SET the new connection gets.
    assert restored == [["search_path"]]
    sets = [sql for sql in proxy.statements if sql.startswith("SET search_path")]
    assert len(sets) == (1 if settings.TENANT_LIMIT_SET_CALLS else 2)
    assert run("SHOW search_path", using=alias) == [(f"{SCHEMA}, public",)]


def test_a_read_run_again_after_a_lost_reply_reads_the_tenants_schema(proxy, alias):
    assert tenant_rows() == ["in the tenant"]
    swallowed = proxy.swallow_reply('FROM "app_item"')

    assert tenant_rows() == ["in the tenant"]  # re-run on a new connection, in the tenant
    assert swallowed.is_set()
    assert (proxy.statements[-3], proxy.statements[-1]) == ("BEGIN READ ONLY", "COMMIT")
