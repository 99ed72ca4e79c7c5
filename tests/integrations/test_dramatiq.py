"""Dramatiq with the engine: a middleware that checks connections before each message, run
with the StubBroker and a real in-process Worker (its own threads), and retries that must not
repeat a write whose outcome is unknown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.db.models import F

from django_postgresql_reconnect import (
    CommitOutcomeUnknown,
    StatementOutcomeUnknown,
    check_pgsql_connections,
    signals,
)
from tests.app.models import Item
from tests.faults import item_names
from tests.integrations.conftest import wait_until_proxy_closed

dramatiq = pytest.importorskip("dramatiq", reason="needs the integrations dependency group")
from dramatiq.brokers.stub import StubBroker  # noqa: E402
from dramatiq.middleware import Middleware  # noqa: E402


class DatabaseConnections(Middleware):
    """As docs/guides/task-queues.md shows it: check before each message; close at thread exit."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        check_pgsql_connections()

    def after_worker_thread_shutdown(self, broker: Any, thread: Any) -> None:
        connections.close_all()


broker = StubBroker()
broker.add_middleware(DatabaseConnections())
events: list[str] = []


@dramatiq.actor(broker=broker)
def record(name: str) -> None:
    events.append(f"{name} starts")
    Item.objects.create(name=name)


@dramatiq.actor(broker=broker, max_retries=1, min_backoff=10, max_backoff=20)
def bump() -> None:
    Item.objects.filter(name="counter").update(value=F("value") + 1)


@dramatiq.actor(
    broker=broker,
    max_retries=1,
    min_backoff=10,
    max_backoff=20,
    throws=(StatementOutcomeUnknown, CommitOutcomeUnknown),
)
def bump_unless_unknown() -> None:
    Item.objects.filter(name="counter").update(value=F("value") + 1)


def _lost(sender: Any, alias: str, **kwargs: Any) -> None:
    events.append(f"{alias} lost")


def _reconnected(sender: Any, alias: str, **kwargs: Any) -> None:
    events.append(f"{alias} reconnected")


@pytest.fixture
def worker() -> Iterator[Any]:
    events.clear()
    signals.connection_lost.connect(_lost)
    signals.reconnected.connect(_reconnected)
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    yield worker
    worker.stop()
    signals.connection_lost.disconnect(_lost)
    signals.reconnected.disconnect(_reconnected)


def test_a_message_after_the_workers_connection_was_terminated_succeeds(server, proxy, worker):
    record.send("first")
    broker.join(record.queue_name)
    worker.join()
    server.terminate_backends()
    wait_until_proxy_closed(proxy)  # the hang-up is in the worker thread's idle socket

    record.send("second")
    broker.join(record.queue_name)
    worker.join()

    assert item_names(server) == ["first", "second"]
    # The middleware replaced the connection before the actor ran.
    assert events == ["first starts", "default lost", "default reconnected", "second starts"]


def test_default_retries_apply_a_lost_update_twice(server, proxy, worker):
    Item.objects.create(name="counter")
    proxy.swallow_reply("UPDATE")

    bump.send()
    broker.join(bump.queue_name, fail_fast=False)
    worker.join()

    assert Item.objects.get(name="counter").value == 2  # StatementOutcomeUnknown, then again


def test_throws_keeps_an_unknown_outcome_from_being_retried(server, proxy, worker):
    Item.objects.create(name="counter")
    proxy.swallow_reply("UPDATE")

    bump_unless_unknown.send()
    broker.join(bump_unless_unknown.queue_name, fail_fast=False)
    worker.join()

    assert Item.objects.get(name="counter").value == 1
    assert len(broker.dead_letters) == 1  # failed for a person (or a check) to decide
