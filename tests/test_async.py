"""Async code: the async ORM, decorated coroutines, ``async with reconnect()`` and the middleware.

The async ORM runs its queries in asgiref's thread-sensitive thread, and the connection lives
there across calls; these scenarios kill it between calls. The guards must replace it in that
thread, never on the event loop: a replacement can take seconds while the server restarts.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from django_postgresql_reconnect import ReconnectMiddleware, reconnect, retry_atomic
from django_postgresql_reconnect.conf import ReconnectOptions
from tests.app.models import Item
from tests.faults import backend_pid, item_names, wait_until_server_hung_up
from tests.test_web import asgi_app, asgi_request, per_request_connections  # noqa: F401

DEADLINE = ReconnectOptions().DEADLINE


@pytest.fixture(autouse=True)
def _close_async_connections() -> Iterator[None]:
    """Close the connections the async ORM opened in asgiref's thread-sensitive thread."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


def _driver_select_1(alias: str = "default") -> object:
    """Run SELECT 1 on the driver connection itself, past the engine."""
    with connections[alias].connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


async def _terminate(server) -> int:
    """Kill the backend of the async ORM's connection; return its pid."""
    pid = await sync_to_async(backend_pid)()
    server.terminate_backends()
    await sync_to_async(wait_until_server_hung_up)()
    return pid


async def _ticks_while(work: Any) -> tuple[Any, int, float]:
    """Await ``work`` while a ticker runs on the loop: (result, ticks, longest gap)."""
    ticks: list[float] = [time.monotonic()]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    task = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        done.set()
        await task
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    return result, len(ticks), max(gaps, default=0.0)


# --- The async ORM after pg_terminate_backend --------------------------------------------------


def test_async_orm_reads_succeed_on_the_first_call_after_termination(server):
    Item.objects.create(name="kept")

    async def scenario() -> tuple[int, str, list[str], int, int]:
        await Item.objects.acount()
        old_pid = await _terminate(server)
        count = await Item.objects.acount()
        await _terminate(server)
        got = await Item.objects.aget(name="kept")
        await _terminate(server)
        names = [item.name async for item in Item.objects.order_by("id")]
        return count, got.name, names, old_pid, await sync_to_async(backend_pid)()

    count, name, names, old_pid, new_pid = asyncio.run(scenario())

    assert (count, name, names) == (1, "kept", ["kept"])
    assert new_pid != old_pid


def test_async_orm_write_after_termination_is_applied_once(server):
    async def scenario() -> None:
        await Item.objects.acount()
        await _terminate(server)
        await Item.objects.acreate(name="after")

    asyncio.run(scenario())

    assert item_names(server) == ["after"]


# --- Decorated coroutines and async with ---------------------------------------------------------


def test_decorated_coroutine_gets_a_live_connection_after_termination(server):
    @reconnect
    async def job(value: int) -> tuple[object, int]:
        return await sync_to_async(_driver_select_1)(), value

    async def scenario() -> tuple[object, int]:
        await Item.objects.acount()
        await _terminate(server)
        return await job(3)

    assert asyncio.run(scenario()) == (1, 3)


def test_decorated_coroutine_with_using_and_async_with_check_their_alias(server):
    @reconnect(using=["default"])
    async def job() -> object:
        return await sync_to_async(_driver_select_1)()

    async def scenario() -> tuple[object, object]:
        await Item.objects.acount()
        await _terminate(server)
        first = await job()
        await _terminate(server)
        async with reconnect(using="default"):
            second = await sync_to_async(_driver_select_1)()
        return first, second

    assert asyncio.run(scenario()) == (1, 1)


def test_decorated_coroutine_waits_out_a_restart_off_the_event_loop(server):
    """The check replaces the connection in the ORM's thread; the loop keeps running meanwhile."""

    @reconnect
    async def job() -> object:
        return await sync_to_async(_driver_select_1)()

    async def scenario() -> tuple[Any, int, float]:
        await Item.objects.acount()
        server.stop()
        restart = threading.Timer(2.0, server.start)
        restart.start()
        try:
            return await _ticks_while(job())
        finally:
            await asyncio.to_thread(restart.join)

    result, ticks, longest_gap = asyncio.run(scenario())

    assert result == 1
    assert ticks > 20  # the loop ran other tasks while the check waited for the server
    assert longest_gap < 1.0  # hang detector: the loop never waited for the reconnect


def test_async_worker_loop_across_a_server_restart_has_no_failed_iteration(server):
    failures: list[BaseException] = []

    @reconnect
    async def work(turn: int) -> None:
        # A write caught in flight by the restart has an unknown outcome; retry_atomic is how
        # a worker makes it safe to repeat (the engine never repeats it on its own).
        await sync_to_async(retry_atomic)(lambda: Item.objects.create(name=f"turn-{turn}"))

    async def scenario() -> int:
        await work(-1)
        restart = threading.Timer(0.3, server.restart)
        restart.start()
        turn = 0
        stop_at = time.monotonic() + 3.0
        while time.monotonic() < stop_at or restart.is_alive():
            try:
                async with reconnect():
                    await Item.objects.filter(name=f"turn-{turn - 1}").aexists()
                await work(turn)
            except Exception as error:
                failures.append(error)
            turn += 1
            await asyncio.sleep(0.02)
        await asyncio.to_thread(restart.join)
        return turn

    turns = asyncio.run(scenario())

    assert failures == []
    assert item_names(server) == [f"turn-{n}" for n in range(-1, turns)]


# --- The middleware under async ------------------------------------------------------------------


def test_async_middleware_replaces_the_dead_connection_before_the_view(server):
    async def view(request: object) -> object:
        return await sync_to_async(_driver_select_1)()

    middleware = ReconnectMiddleware(view)

    async def scenario() -> object:
        await Item.objects.acount()
        await _terminate(server)
        return await middleware(object())

    assert asyncio.run(scenario()) == 1


def test_async_middleware_waits_out_a_restart_off_the_event_loop(server):
    async def view(request: object) -> object:
        return await Item.objects.acount()

    middleware = ReconnectMiddleware(view)

    async def scenario() -> tuple[Any, int, float]:
        await Item.objects.acount()
        server.stop()
        restart = threading.Timer(2.0, server.start)
        restart.start()
        try:
            return await _ticks_while(middleware(object()))
        finally:
            await asyncio.to_thread(restart.join)

    count, ticks, longest_gap = asyncio.run(scenario())

    assert count == 0
    assert ticks > 20
    assert longest_gap < 1.0  # hang detector


@pytest.mark.usefixtures("per_request_connections")
def test_async_views_under_asgi_handler_after_termination(server):
    Item.objects.create(name="kept")
    app = asgi_app()

    async def scenario() -> list[tuple[int, Any]]:
        await asgi_request(app, "/async/items/count")
        server.terminate_backends()
        reads = await asyncio.gather(
            asgi_request(app, "/async/items/get", name="kept"),
            asgi_request(app, "/async/items/names"),
            asgi_request(app, "/async/items/count"),
        )
        return [*reads, await asgi_request(app, "/async/items/create", name="new")]

    got, names, count, created = asyncio.run(scenario())

    assert got[0] == 200 and got[1]["name"] == "kept"
    assert names == (200, {"names": ["kept"]})
    assert count == (200, {"count": 1})
    assert created[0] == 201
    assert item_names(server) == ["kept", "new"]
