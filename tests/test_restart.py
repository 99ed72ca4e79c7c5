"""The server restarts or goes away for a few seconds: callers wait within the deadline."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import transaction

from django_postgresql_reconnect import DatabaseUnavailable, signals
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


def test_callers_fail_fast_while_the_breaker_is_open_and_a_probe_finds_the_server_back(server):
    Item.objects.using("fastfail").count()
    server.stop()
    with pytest.raises(DatabaseUnavailable):
        Item.objects.using("fastfail").count()  # spends its whole deadline: the breaker opens

    with pytest.raises(DatabaseUnavailable) as caught:
        Item.objects.using("fastfail").count()
    assert caught.value.attempts == 0  # failed at once: no connection attempt was made
    assert "probe" in str(caught.value)

    server.start()
    assert count_once_the_probe_lets_through("fastfail") == 0


def test_a_probe_interrupted_by_a_base_exception_does_not_leave_the_breaker_stuck(server):
    """A Celery soft time limit, KeyboardInterrupt or gevent.Timeout during the probe."""

    class Interrupted(BaseException):
        pass

    def interrupt(**kwargs: object) -> None:
        raise Interrupted

    Item.objects.using("fastfail").count()
    server.stop()
    with pytest.raises(DatabaseUnavailable):
        Item.objects.using("fastfail").count()
    signals.pre_reconnect.connect(interrupt)
    try:
        with pytest.raises(Interrupted):
            wait_for_probe(lambda: Item.objects.using("fastfail").count())
    finally:
        signals.pre_reconnect.disconnect(interrupt)

    server.start()
    assert count_once_the_probe_lets_through("fastfail") == 0


def wait_for_probe(call, limit: float = 10.0):
    """Call until the breaker lets the call through (it then succeeds or fails otherwise)."""
    give_up = time.monotonic() + limit
    while True:
        try:
            return call()
        except DatabaseUnavailable as error:
            if error.attempts or time.monotonic() > give_up:
                raise
            time.sleep(0.02)


def count_once_the_probe_lets_through(alias: str) -> int:
    return wait_for_probe(lambda: Item.objects.using(alias).count())


def test_atomic_block_across_a_restart_before_its_first_statement_commits(server):
    Item.objects.count()
    server.restart()

    with transaction.atomic():
        Item.objects.create(name="a")
        Item.objects.create(name="b")

    assert item_names(server) == ["a", "b"]
