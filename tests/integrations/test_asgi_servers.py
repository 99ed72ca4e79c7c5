"""uvicorn and daphne serving the project's ASGI application: async views, the async ORM,
the middleware in its async form, aretry_atomic, and Django's connection pool.

Under ASGI Django runs each request's ORM calls in a thread of that request, so the project
runs with ``CONN_MAX_AGE = 0`` (a connection per request), as Django advises, or with Django's
own pool (psycopg 3), whose connections outlive requests and so meet the faults.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import pytest

from django_postgresql_reconnect import drivers
from tests.faults import item_names
from tests.integrations.conftest import BIN, Project, Served, free_port, serve

pytest.importorskip("uvicorn", reason="needs the integrations dependency group")
pytest.importorskip("daphne", reason="needs the integrations dependency group")

APP = "tests.integrations.project.asgi:application"


def command(name: str, port: int) -> list[str]:
    if name == "uvicorn":
        return [str(BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port),
                "--lifespan", "off", "--log-level", "warning"]  # fmt: skip
    return [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0", APP]


@pytest.fixture(params=["uvicorn", "daphne"])
def asgi_server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def started(project: Project, name: str, **entry: Any) -> AbstractContextManager[Served]:
    port = free_port()
    databases = {"default": project.entry(**{"CONN_MAX_AGE": 0, **entry})}
    return serve(command(name, port), port, project.env(databases))


def test_async_views_are_served_through_a_server_restart_without_a_failed_request(
    project: Project, asgi_server: str
):
    with started(project, asgi_server) as site:
        assert site.get("/async/backend")[0] == 200
        answers: list[tuple[int, float]] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                began = time.monotonic()
                status, _ = site.get("/async/backend")
                answers.append((status, time.monotonic() - began))
                time.sleep(0.02)

        with ThreadPoolExecutor(2) as pool:
            clients = [pool.submit(client) for _ in range(2)]
            time.sleep(0.3)
            project.server.stop()
            time.sleep(1.5)  # the database is down for 1.5 s
            project.server.start()
            time.sleep(0.3)
            stop.set()
            for future in clients:
                future.result()

    assert answers and {status for status, _ in answers} == {200}, answers
    slowest = max(seconds for _, seconds in answers)
    assert slowest < 1.5 + 2.0  # waited for the server, within the DEADLINE
    print(f"{asgi_server}: {len(answers)} requests, none failed, slowest {slowest:.2f} s")


def test_aretry_atomic_in_an_async_view_resolves_a_lost_commit_reply(
    project: Project, asgi_server: str
):
    with started(project, asgi_server) as site:
        swallowed = project.proxy.swallow_reply("COMMIT")
        status, answer = site.get("/async/items/create?name=once")

    assert swallowed.is_set()
    assert status == 201, answer
    assert "the server says transaction" in site.output()  # asked, not guessed
    assert item_names(project.server) == ["once"]


@pytest.mark.skipif(not drivers.IS_PSYCOPG3, reason="Django's pool needs psycopg 3")
def test_pooled_connections_terminated_between_requests_are_replaced(
    project: Project, asgi_server: str
):
    pool = {"min_size": 2, "max_size": 4, "timeout": 5}
    options = {"sslmode": "disable", "pool": pool}
    with started(project, asgi_server, OPTIONS=options) as site, ThreadPoolExecutor(4) as clients:
        before = list(clients.map(lambda _: site.get("/backend"), range(16)))
        project.server.terminate_backends()
        after = list(clients.map(lambda _: site.get("/backend"), range(16)))

    assert {status for status, _ in before} == {200}
    assert [status for status, _ in after] == [200] * 16, after
    old = {answer["backend_pid"] for _, answer in before}
    assert old.isdisjoint(answer["backend_pid"] for _, answer in after)
    assert "replaced before anything was sent" in site.output()  # dead ones came out of the pool
