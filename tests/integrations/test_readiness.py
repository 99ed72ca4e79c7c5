"""The Kubernetes probes of docs/guides/kubernetes.md, served by Django's test client.

Readiness follows the breaker: ready while it is closed (no query per probe), not ready at
once while it is open, and ready again within a probe interval of the database's return,
with no other traffic: a pod out of the Service's endpoints gets none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connections
from django.test import Client, override_settings

from django_postgresql_reconnect import DatabaseUnavailable, breaker_states
from tests.faults import run


@pytest.fixture
def client() -> Iterator[Client]:
    with override_settings(
        ROOT_URLCONF="tests.integrations.project.urls",
        MIDDLEWARE=["django_postgresql_reconnect.middleware"],
        READINESS_DATABASES=["fastfail"],  # DEADLINE 1 s, BREAKER_PROBE_INTERVAL 0.2 s
    ):
        yield Client()


def test_readiness_follows_the_breaker_and_probes_for_the_database_itself(server, proxy, client):
    connections["default"].close()
    run("SELECT 1", using="fastfail")
    statements = len(proxy.statements)
    assert client.get("/readyz").status_code == 200
    assert len(proxy.statements) == statements  # a closed breaker costs the probe no query

    proxy.refuse()
    server.terminate_backends()
    with pytest.raises(DatabaseUnavailable):
        run("SELECT 1", using="fastfail")  # a whole DEADLINE: the breaker opens
    assert breaker_states()["fastfail"]["state"] == "open"

    started = time.monotonic()
    response = client.get("/readyz")
    not_ready_after = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["database"] == "fastfail"
    assert client.get("/healthz").status_code == 200  # alive all the same

    proxy.heal()
    time.sleep(0.5)
    assert breaker_states()["fastfail"]["state"] == "open"  # nothing else would close it
    started = time.monotonic()
    while client.get("/readyz").status_code != 200:
        # A guard against hanging, not a speed claim (the guide quotes the measured time).
        assert time.monotonic() - started < 30, "never ready again after the database is back"
        time.sleep(0.05)
    ready_after = time.monotonic() - started

    assert breaker_states()["fastfail"]["state"] == "closed"
    # Failed fast on the open breaker, not after a whole DEADLINE (1 s) of connect attempts.
    assert not_ready_after < 1.0
    print(f"not ready in {not_ready_after * 1000:.1f} ms; ready again in {ready_after:.2f} s")
