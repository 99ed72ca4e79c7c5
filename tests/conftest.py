"""One real PostgreSQL for the whole run, a fault proxy in front of it, and Django set up on it.

Aliases: ``default`` is this engine through the proxy (so tests can reset, blackhole and
swallow replies), ``direct`` is this engine straight to the server, ``stock`` is Django's own
PostgreSQL backend through the proxy, for side-by-side scenarios. The database driver is chosen
by DPR_TEST_DRIVER (psycopg or psycopg2) before Django loads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests._driver import select_driver

select_driver()

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from django_postgresql_reconnect.testing import FaultProxy, PostgresServer  # noqa: E402

pytest_plugins = ["django_postgresql_reconnect.testing.pytest_plugin"]

ENGINE = "django_postgresql_reconnect.backend"
STOCK = "django.db.backends.postgresql"
PASSWORD = "s3cret-pw"

_server: PostgresServer | None = None
_proxy: FaultProxy | None = None


def _entry(engine: str, host: str, port: int, **extra: Any) -> dict[str, Any]:
    assert _server is not None
    entry = _server.database_settings(engine=engine, name="app", host=host, port=port)
    entry.update({"CONN_MAX_AGE": None, "OPTIONS": {"sslmode": "disable"}})
    entry.update(extra)
    return entry


def pytest_configure(config: pytest.Config) -> None:
    global _server, _proxy
    _server = PostgresServer(auth="password", password=PASSWORD)
    _server.start()
    _server.create_database("app")
    _proxy = FaultProxy(_server.host, _server.port)
    _proxy.start()
    via_proxy = (_proxy.host, _proxy.port)
    direct = (_server.host, _server.port)
    settings.configure(
        DATABASES={
            "default": _entry(ENGINE, *via_proxy),
            "direct": _entry(ENGINE, *direct),
            "stock": _entry(STOCK, *via_proxy),
            "fastfail": _entry(
                ENGINE, *via_proxy, RECONNECT={"DEADLINE": 1.0, "BREAKER_PROBE_INTERVAL": 0.2}
            ),
            "disabled": _entry(ENGINE, *via_proxy, RECONNECT=False),
        },
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.app.apps.TestAppConfig"],
        USE_TZ=True,
        SECRET_KEY="tests",
        ROOT_URLCONF="tests.urls",
        MIDDLEWARE=[],
        ALLOWED_HOSTS=["*"],
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0, database="direct")
    from django.db import connections

    connections.close_all()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _proxy is not None:
        _proxy.stop()
    if _server is not None:
        _server.close()


def pytest_report_header(config: pytest.Config) -> str:
    from django_postgresql_reconnect import drivers

    return f"database driver: {'psycopg 3' if drivers.IS_PSYCOPG3 else 'psycopg2'}"


@pytest.fixture
def server() -> PostgresServer:
    assert _server is not None
    return _server


@pytest.fixture
def proxy() -> FaultProxy:
    assert _proxy is not None
    return _proxy


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """Each scenario starts with healthy connections, no armed fault and an empty table."""
    from django.db import connections

    from django_postgresql_reconnect import state as engine_state

    assert _proxy is not None and _server is not None
    _proxy.heal()
    if not _server.is_running:
        _server.start()
    _server.execute("TRUNCATE app_item RESTART IDENTITY", dbname="app")
    for health in engine_state.all_alias_health():
        health.breaker.reset()  # a breaker opened by the last scenario is closed
    _proxy.reset_counters()
    yield
    _proxy.heal()
    if not _server.is_running:
        _server.start()
    for connection in connections.all(initialized_only=True):
        connection.in_atomic_block = False
        connection.closed_in_transaction = False
        connection.close()
