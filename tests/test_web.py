"""A web app behind Django's own WSGI and ASGI handlers, with the middleware, under real faults.

Requests are plain WSGI environs and ASGI scopes handed to ``WSGIHandler`` and ``ASGIHandler``,
so request_started/request_finished, the middleware chain and the views run as in production.
What users must see: no failed request while the server is stopped for 3 s, none slower than the
engine's deadline, the request after pg_terminate_backend succeeds on the first try, and a warm
request reaches the server as exactly one statement.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.test import override_settings

from django_postgresql_reconnect.conf import ReconnectOptions
from tests.app.models import Item
from tests.faults import backend_pid, item_names, wait_until_server_hung_up

MIDDLEWARE = ["django_postgresql_reconnect.middleware"]
DEADLINE = ReconnectOptions().DEADLINE
COUNT_SQL = 'SELECT COUNT(*) AS "__count" FROM "app_item"'
OUTAGE = 3.0


# --- Driving Django's handlers ----------------------------------------------------------------


def wsgi_app(middleware: list[str] = MIDDLEWARE) -> WSGIHandler:
    # The handler loads its middleware when it is built.
    with override_settings(MIDDLEWARE=middleware, ROOT_URLCONF="tests.urls"):
        return WSGIHandler()


def wsgi_request(app: WSGIHandler, path: str, **query: str) -> tuple[int, Any]:
    """Serve one GET as a WSGI server would, closing the response (request_finished)."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": urlencode(query),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }
    statuses: list[str] = []
    result = app(environ, lambda status, headers: statuses.append(status))
    try:
        body = b"".join(result)
    finally:
        result.close()
    return _decoded(int(statuses[0].split()[0]), body)


def asgi_app(middleware: list[str] = MIDDLEWARE) -> ASGIHandler:
    with override_settings(MIDDLEWARE=middleware, ROOT_URLCONF="tests.urls"):
        return ASGIHandler()


async def asgi_request(app: ASGIHandler, path: str, **query: str) -> tuple[int, Any]:
    """Serve one GET as an ASGI server would: one request message, then wait for the response."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urlencode(query).encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    pending = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Mapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.Future()  # the client stays connected; Django cancels this listener
        raise AssertionError("unreachable")

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return _decoded(status, body)


def _decoded(status: int, body: bytes) -> tuple[int, Any]:
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")[:500]


@pytest.fixture
def per_request_connections() -> Iterator[None]:
    """CONN_MAX_AGE=0 for ``default``, as Django advises under ASGI.

    ASGIHandler runs each request's sync work in a thread of its own, so a persistent
    connection would be left behind by every request.
    """
    entry = connections.settings["default"]
    saved = entry["CONN_MAX_AGE"]
    entry["CONN_MAX_AGE"] = 0
    try:
        yield
    finally:
        entry["CONN_MAX_AGE"] = saved


@pytest.fixture
def stock_with_health_checks() -> Iterator[str]:
    """Django's own backend through the proxy, with CONN_HEALTH_CHECKS on."""
    name = "stock_health_checks"
    # A copy of an entry Django already completed with its defaults.
    connections.settings[name] = {**connections.settings["stock"], "CONN_HEALTH_CHECKS": True}
    try:
        yield name
    finally:
        connections[name].close()
        del connections[name]
        del connections.settings[name]


def _sent(proxy) -> list[str]:
    """The statements the server received, without the liveness rule's empty queries."""
    return [sql for sql in proxy.statements if sql.strip()]


# --- Statements per warm request ---------------------------------------------------------------


def test_warm_wsgi_request_reaches_the_server_as_one_statement(proxy):
    app = wsgi_app()
    assert wsgi_request(app, "/items/count") == (200, {"count": 0})
    proxy.reset_counters()

    assert wsgi_request(app, "/items/count") == (200, {"count": 0})

    assert proxy.statements == [COUNT_SQL]
    assert proxy.round_trips == 1


def test_stock_django_with_health_checks_sends_two_statements_per_warm_request(
    proxy, stock_with_health_checks
):
    """The baseline the issue compares with: CONN_HEALTH_CHECKS adds a SELECT 1 per request."""
    app = wsgi_app(middleware=[])
    using = stock_with_health_checks
    assert wsgi_request(app, "/items/count", using=using) == (200, {"count": 0})
    proxy.reset_counters()

    assert wsgi_request(app, "/items/count", using=using) == (200, {"count": 0})

    assert len(_sent(proxy)) == 2
    assert _sent(proxy)[-1] == COUNT_SQL


def test_idle_wsgi_request_adds_one_empty_round_trip_and_no_statement(proxy):
    app = wsgi_app()
    wsgi_request(app, "/items/count")
    time.sleep(2.2)  # longer than IDLE_CHECK_AFTER
    proxy.reset_counters()

    assert wsgi_request(app, "/items/count") == (200, {"count": 0})

    assert proxy.statements == ["", COUNT_SQL]


# --- pg_terminate_backend ----------------------------------------------------------------------


def test_wsgi_request_after_backend_terminated_succeeds_on_the_first_try(server, proxy):
    app = wsgi_app()
    wsgi_request(app, "/items/create", name="before")
    old_pid = backend_pid()
    server.terminate_backends()
    wait_until_server_hung_up()
    proxy.reset_counters()

    assert wsgi_request(app, "/items/count") == (200, {"count": 1})

    # Found dead before the view ran: the query went once, on the new connection.
    assert _sent(proxy).count(COUNT_SQL) == 1
    assert backend_pid() != old_pid


def test_wsgi_request_succeeds_when_the_new_connection_dies_during_django_setup(proxy):
    """A connection lost while Django sets it up (SET TimeZone) is a failed connect: retry it.

    This is what a request meets when the server goes down a moment after accepting its new
    connection (seen in the 3-s outage scenarios). The setup statements only configure the
    session, so opening another connection and running them again is always safe.
    """
    app = wsgi_app()
    connections["default"].close()
    proxy.swallow_reply(r"set_config\('TimeZone'")

    assert wsgi_request(app, "/items/count") == (200, {"count": 0})


def test_wsgi_write_after_backend_terminated_is_applied_once(server):
    app = wsgi_app()
    wsgi_request(app, "/items/count")
    server.terminate_backends()
    wait_until_server_hung_up()

    status, _ = wsgi_request(app, "/items/create", name="after")

    assert status == 201
    assert item_names(server) == ["after"]


def test_asgi_requests_after_backend_terminated_succeed_on_the_first_try(
    server, per_request_connections
):
    app = asgi_app()

    async def scenario() -> list[tuple[int, Any]]:
        await asgi_request(app, "/async/items/create", name="before")
        server.terminate_backends()
        return [
            await asgi_request(app, "/async/items/count"),
            await asgi_request(app, "/items/count"),  # a sync view under ASGI
            await asgi_request(app, "/async/items/get", name="before"),
        ]

    count, sync_count, get = asyncio.run(scenario())

    assert count == (200, {"count": 1})
    assert sync_count == (200, {"count": 1})
    assert get[0] == 200 and get[1]["name"] == "before"


# --- The server stopped for 3 s, 4 concurrent clients ------------------------------------------


def _outage(server) -> threading.Timer:
    """Stop the server now and start it again OUTAGE seconds later."""
    server.stop()
    restart = threading.Timer(OUTAGE, server.start)
    restart.start()
    return restart


def test_wsgi_app_serves_four_threads_through_a_3_s_outage_without_a_failed_request(server):
    app = wsgi_app()
    failures: list[tuple[str, int, Any]] = []
    slowest: list[float] = []
    written: list[str] = []
    lock = threading.Lock()
    stop_at: list[float] = []

    def client(number: int) -> int:
        served = 0
        try:
            while not stop_at or time.monotonic() < stop_at[0]:
                name = f"c{number}-{served}"
                path, query = (
                    ("/items/create", {"name": name}) if served % 2 else ("/items/count", {})
                )
                started = time.monotonic()
                status, body = wsgi_request(app, path, **query)
                took = time.monotonic() - started
                with lock:
                    slowest.append(took)
                    if status >= 400:
                        failures.append((path, status, body))
                    elif path == "/items/create":
                        written.append(name)
                served += 1
                time.sleep(0.01)
            return served
        finally:
            connections.close_all()  # this thread's connections

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client, n) for n in range(4)]
        time.sleep(0.5)  # all four serving on warm connections
        restart = _outage(server)
        stop_at.append(time.monotonic() + OUTAGE + 1.5)
        served = [c.result(timeout=OUTAGE + DEADLINE + 30) for c in clients]
        restart.join()

    assert failures == []
    assert max(slowest) < DEADLINE
    assert all(n > 5 for n in served)
    assert sorted(item_names(server)) == sorted(written)


def test_asgi_app_serves_four_clients_through_a_3_s_outage_without_a_failed_request(
    server, per_request_connections
):
    app = asgi_app()
    failures: list[tuple[str, int, Any]] = []
    slowest: list[float] = []
    written: list[str] = []
    paths = ["/async/items/count", "/async/items/create", "/async/items/names", "/items/create"]

    async def client(number: int, stop_at: asyncio.Future[float]) -> int:
        served = 0
        while not stop_at.done() or time.monotonic() < stop_at.result():
            path = paths[served % len(paths)]
            name = f"c{number}-{served}"
            query = {"name": name} if path.endswith("create") else {}
            started = time.monotonic()
            status, body = await asgi_request(app, path, **query)
            slowest.append(time.monotonic() - started)
            if status >= 400:
                failures.append((path, status, body))
            elif path.endswith("create"):
                written.append(name)
            served += 1
            await asyncio.sleep(0.01)
        return served

    async def scenario() -> tuple[list[int], threading.Timer]:
        stop_at: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        clients = asyncio.gather(*(client(n, stop_at) for n in range(4)))
        await asyncio.sleep(0.5)
        restart = await asyncio.to_thread(_outage, server)
        stop_at.set_result(time.monotonic() + OUTAGE + 1.5)
        served = await asyncio.wait_for(clients, timeout=OUTAGE + DEADLINE + 30)
        return served, restart

    served, restart = asyncio.run(scenario())
    restart.join()

    assert failures == []
    assert max(slowest) < DEADLINE
    assert all(n > 5 for n in served)
    assert sorted(item_names(server)) == sorted(written)
    assert Item.objects.count() == len(written)
