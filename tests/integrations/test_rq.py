"""RQ with the engine: a job class that checks connections before each job, in RQ's
synchronous mode and under a real forking Worker (a work horse forked per job) on fakeredis."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from django_postgresql_reconnect import check_pgsql_connections, signals
from tests.app.models import Item
from tests.faults import backend_pid, item_names, lose_connection
from tests.integrations.conftest import free_port

rq = pytest.importorskip("rq", reason="needs the integrations dependency group")
fakeredis = pytest.importorskip("fakeredis", reason="needs the integrations dependency group")
import redis  # noqa: E402  (rq's own dependency)
from rq.job import Job  # noqa: E402


class CheckedJob(Job):
    """As docs/guides/task-queues.md shows it: check this process's connections before each job."""

    def perform(self) -> Any:
        check_pgsql_connections()
        return super().perform()


events: list[str] = []


def record(name: str) -> None:
    """The job: a row naming the backend and the process that ran it."""
    events.append(f"{name} starts")
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    Item.objects.create(name=f"{name} {pid} {os.getpid()}")


def _lost(sender: Any, alias: str, **kwargs: Any) -> None:
    events.append(f"{alias} lost")


@pytest.fixture(autouse=True)
def _events() -> Iterator[None]:
    events.clear()
    signals.connection_lost.connect(_lost)
    yield
    signals.connection_lost.disconnect(_lost)


def test_a_synchronous_job_after_termination_starts_on_a_live_connection(server):
    queue = rq.Queue(connection=fakeredis.FakeStrictRedis(), is_async=False, job_class=CheckedJob)
    Item.objects.count()
    lose_connection(server)

    job = queue.enqueue(record, "sync")

    assert job.is_finished
    assert events == ["default lost", "sync starts"]  # replaced before the job ran
    assert [name.split()[0] for name in item_names(server)] == ["sync"]


@pytest.fixture
def redis_server() -> Iterator[Any]:
    """fakeredis over TCP, so that RQ's forked work horses share the worker's queues."""
    from fakeredis import TcpFakeServer

    port = free_port()
    fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    client = redis.Redis(host="127.0.0.1", port=port)
    yield client
    client.close()
    fake.shutdown()
    fake.server_close()


def test_forked_work_horses_open_their_own_connections(server, proxy, redis_server):
    parent_backend = backend_pid()
    parent_ports = {c.client_port for c in proxy.connections if not c.closed}
    sent_before = {c.client_port: len(c.statements) for c in proxy.connections}
    queue = rq.Queue(connection=redis_server, job_class=CheckedJob)
    jobs = [queue.enqueue(record, f"horse{n}") for n in range(3)]
    worker = rq.Worker([queue], connection=redis_server, job_class=CheckedJob)

    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads (the proxy's, fakeredis's)
        # may deadlock; the work horse touches nothing they hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        worker.work(burst=True)

    assert [job.get_status(refresh=True) for job in jobs] == ["finished"] * 3
    rows = [name.split() for name in item_names(server)]
    assert [row[0] for row in rows] == ["horse0", "horse1", "horse2"]
    assert parent_backend not in {int(row[1]) for row in rows}
    assert len({row[2] for row in rows} | {str(os.getpid())}) == 4  # a process per job
    # Nothing was sent on the parent's connection, which is still the same session.
    sent_after = {c.client_port: len(c.statements) for c in proxy.connections}
    assert {port: sent_after[port] for port in parent_ports} == {
        port: sent_before[port] for port in parent_ports
    }
    assert backend_pid() == parent_backend
