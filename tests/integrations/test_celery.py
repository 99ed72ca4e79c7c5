"""Celery with the engine: the task_prerun hook, on_commit(task.delay) under retry_atomic,
task retries, and a real prefork worker started from a process that held a connection.

Tasks run eagerly in this process (``task_always_eager``) unless a scenario starts a worker:
the worker uses kombu's filesystem transport, so no broker service is needed.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connections, transaction
from django.db.models import F

from django_postgresql_reconnect import (
    CommitOutcomeUnknown,
    check_pgsql_connections,
    retry_atomic,
)
from tests.app.models import Item
from tests.faults import item_names, lose_connection
from tests.integrations.conftest import ROOT, Project

celery = pytest.importorskip("celery", reason="needs the integrations dependency group")
from celery.signals import task_prerun  # noqa: E402

app = celery.Celery("eager")
app.conf.update(task_always_eager=True, task_eager_propagates=True, broker_url="memory://")
sent: list[str] = []


@app.task
def notify(order: str) -> None:
    """A task with an effect outside the database (an email, say): it must run once."""
    sent.append(order)


@app.task
def record(name: str, using: str = "default") -> object:
    """Write a row; return the driver connection the task found when it started."""
    found = connections[using].connection
    Item.objects.using(using).create(name=name)
    return found


@app.task(autoretry_for=(OperationalError,), max_retries=2)
def bump_with_autoretry() -> None:
    Item.objects.filter(name="counter").update(value=F("value") + 1)


@app.task(autoretry_for=(OperationalError,), max_retries=2)
def bump_with_retry_atomic() -> None:
    retry_atomic(lambda: Item.objects.filter(name="counter").update(value=F("value") + 1))


def _check(**kwargs: object) -> None:
    check_pgsql_connections()


@pytest.fixture
def prerun_hook() -> Iterator[None]:
    """The guide's one line, for the scenarios of this module only."""
    task_prerun.connect(_check, weak=False)
    yield
    task_prerun.disconnect(_check)


@pytest.fixture(autouse=True)
def _nothing_sent() -> None:
    sent.clear()


def test_a_task_after_its_connection_was_terminated_starts_on_a_live_one(server, prerun_hook):
    Item.objects.count()
    dead = connections["default"].connection
    lose_connection(server)

    found = record.delay("after termination").get()

    assert found is not None and found is not dead  # replaced by the hook, before the task
    assert item_names(server) == ["after termination"]


def test_stock_django_fails_the_same_task(server):
    Item.objects.using("stock").count()
    lose_connection(server, "stock")

    with pytest.raises(OperationalError):
        record.delay("after termination", using="stock")
    assert item_names(server) == []


def test_on_commit_delay_runs_once_when_the_commit_reply_was_lost(server, proxy):
    def place_order() -> None:
        Item.objects.create(name="order 1")
        transaction.on_commit(functools.partial(notify.delay, "order 1"))

    Item.objects.count()
    swallowed = proxy.swallow_reply("COMMIT")
    retry_atomic(place_order)

    assert swallowed.is_set()
    assert sent == ["order 1"]  # enqueued exactly once: the server said it committed
    assert item_names(server) == ["order 1"]


def test_plain_atomic_drops_the_on_commit_task_of_a_transaction_that_committed(server, proxy):
    Item.objects.count()
    proxy.swallow_reply("COMMIT")
    with pytest.raises(CommitOutcomeUnknown), transaction.atomic():
        Item.objects.create(name="order 2")
        transaction.on_commit(functools.partial(notify.delay, "order 2"))

    assert item_names(server) == ["order 2"]  # committed ...
    assert sent == []  # ... and never announced


def test_autoretry_for_operational_error_applies_a_lost_update_twice(server, proxy):
    Item.objects.create(name="counter")
    proxy.swallow_reply("UPDATE")

    # StatementOutcomeUnknown, then the task again (apply() runs an eager retry, where
    # task_eager_propagates would raise it).
    result = bump_with_autoretry.apply(throw=False)

    assert result.successful()
    assert Item.objects.get(name="counter").value == 2


def test_retry_atomic_in_the_task_applies_a_lost_update_once(server, proxy):
    Item.objects.create(name="counter")
    swallowed = proxy.swallow_reply("UPDATE")

    result = bump_with_retry_atomic.apply(throw=False)

    assert result.successful() and result.get() is None
    assert swallowed.is_set()
    assert Item.objects.get(name="counter").value == 1


# --- A real worker ------------------------------------------------------------------------------


def _wait_for_rows(server, count: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = item_names(server)
        if len(names) >= count:
            return names
        time.sleep(0.05)
    raise AssertionError(f"expected {count} rows, found {item_names(server)}")


def test_a_prefork_worker_never_uses_its_parents_connection(project: Project, tmp_path: Path):
    from tests.integrations.project.celery_app import broker_settings

    broker = tmp_path / "broker"
    broker.mkdir()
    warm_up = tmp_path / "parent-backend"
    producer = celery.Celery("producer")
    producer.conf.update(broker_settings(str(broker)))
    env = project.env(DPR_CELERY_BROKER=str(broker), DPR_SITE_WARM_UP=str(warm_up))
    argv = [
        sys.executable, "-m", "celery", "-A", "tests.integrations.project.celery_app",
        "worker", "--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        producer.send_task("project.record", args=["first"])
        producer.send_task("project.record", args=["second"])
        first, second = (name.split() for name in _wait_for_rows(project.server, 2))
        parent = int(warm_up.read_text())
        parent_session = project.server.execute(
            f"SELECT state, query FROM pg_stat_activity WHERE pid = {parent}"
        )

        project.server.terminate_backends()
        producer.send_task("project.record", args=["third"])
        third = _wait_for_rows(project.server, 3)[2].split()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool: nothing to keep
        worker.wait()
    output = log.read_text()

    assert parent not in {int(first[1]), int(second[1])}, output
    assert parent_session == [("idle", "SELECT pg_backend_pid()")]  # untouched by the children
    assert int(first[2]) != os.getpid() and first[2] == second[2]  # one pool process ran them
    # Celery's Django fixup closes every connection after each task: a backend per task.
    assert first[1] != second[1]
    assert third[0] == "third", output
