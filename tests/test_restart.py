"""The server restarts or goes away for a few seconds: callers wait within the deadline."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import transaction

from django_postgresql_reconnect import DatabaseUnavailable
from tests.app.models import Item
from tests.faults import item_names


def test_read_succeeds_on_first_call_after_server_restart(server):
    Item.objects.create(name="kept")
    server.restart()

    assert list(Item.objects.values_list("name", flat=True)) == ["kept"]


def test_write_after_server_restart_is_applied_once(server):
    Item.objects.count()
    server.restart()

    Item.objects.create(name="once")

    assert item_names(server) == ["once"]


def test_loop_of_reads_across_a_three_second_outage_has_no_failed_call(server):
    Item.objects.count()
    failures = []
    server.stop()
    restart = threading.Timer(3.0, server.start)
    restart.start()
    try:
        stop_at = time.monotonic() + 5.0
        calls = 0
        while time.monotonic() < stop_at:
            try:
                Item.objects.count()
            except Exception as error:
                failures.append(error)
            calls += 1
            time.sleep(0.05)
    finally:
        restart.join()

    assert failures == []
    assert calls > 10


def test_outage_longer_than_the_deadline_raises_database_unavailable(server):
    Item.objects.using("fastfail").count()
    server.stop()

    with pytest.raises(DatabaseUnavailable) as caught:
        Item.objects.using("fastfail").count()

    message = str(caught.value)
    assert "fastfail" in message
    assert "attempt" in message
    assert caught.value.attempts >= 2


def test_callers_fail_fast_during_the_breaker_cooldown_and_recover_after(server):
    Item.objects.using("fastfail").count()
    server.stop()
    with pytest.raises(DatabaseUnavailable):
        Item.objects.using("fastfail").count()

    with pytest.raises(DatabaseUnavailable) as caught:
        Item.objects.using("fastfail").count()
    assert caught.value.attempts == 0  # failed at once: no connection attempt was made
    assert "BREAKER_COOLDOWN" in str(caught.value)

    server.start()
    time.sleep(2.1)  # the cool-down: the next caller probes, and the probe succeeds
    assert Item.objects.using("fastfail").count() == 0


def test_atomic_block_across_a_restart_before_its_first_statement_commits(server):
    Item.objects.count()
    server.restart()

    with transaction.atomic():
        Item.objects.create(name="a")
        Item.objects.create(name="b")

    assert item_names(server) == ["a", "b"]
