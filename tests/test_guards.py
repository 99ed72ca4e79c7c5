"""The 1.2.0 guards: check_pgsql_connections(), the decorator and the middleware.

Each replaces a dead connection before a unit of work starts. What a caller can observe: the
driver connection the unit of work finds is alive (even code that talks to the driver
directly, past the engine, can use it), a warm connection costs no statement at the server,
and a worker loop survives a server restart without a failed iteration.
"""

from __future__ import annotations

import inspect
import threading
import time

import pytest
from asgiref.sync import iscoroutinefunction
from django.db import connections, transaction
from django.utils.connection import ConnectionDoesNotExist

import django_postgresql_reconnect
from django_postgresql_reconnect import (
    ReconnectMiddleware,
    check_pgsql_connections,
    reconnect,
    retry_atomic,
)
from tests.app.models import Item
from tests.faults import backend_pid, item_names, wait_until_server_hung_up

ENGINE_ALIASES = ("default", "fastfail")


def _driver_select_1(alias: str) -> object:
    """Run SELECT 1 on the driver connection itself, past the engine (as raw driver code does)."""
    with connections[alias].connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def _sent(proxy) -> list[str]:
    """The statements the server received, without the liveness rule's empty queries."""
    return [sql for sql in proxy.statements if sql.strip()]


# --- Public names --------------------------------------------------------------------------------


def test_the_1_2_0_names_are_the_guards():
    assert isinstance(django_postgresql_reconnect.middleware(lambda r: r), ReconnectMiddleware)
    assert isinstance(django_postgresql_reconnect.decorator(), reconnect)


# --- check_pgsql_connections() -------------------------------------------------------------------


def test_check_replaces_a_terminated_connection_on_every_alias_of_the_engine(server):
    old_pids = {alias: backend_pid(alias) for alias in ENGINE_ALIASES}
    server.terminate_backends()
    for alias in ENGINE_ALIASES:
        wait_until_server_hung_up(alias)

    check_pgsql_connections()

    for alias in ENGINE_ALIASES:
        assert _driver_select_1(alias) == 1
        assert backend_pid(alias) != old_pids[alias]


def test_check_leaves_other_engines_alone(server):
    backend_pid("stock")
    server.terminate_backends()
    wait_until_server_hung_up("stock")

    check_pgsql_connections()

    with pytest.raises(connections["stock"].Database.Error):  # type: ignore[attr-defined]
        _driver_select_1("stock")


def test_check_sends_nothing_to_the_server_for_warm_connections(proxy):
    for alias in ENGINE_ALIASES:
        Item.objects.using(alias).count()
    proxy.reset_counters()

    check_pgsql_connections()

    assert proxy.statements == []
    assert proxy.round_trips == 0


def test_check_makes_one_empty_round_trip_per_idle_connection_and_no_select(proxy):
    Item.objects.count()
    time.sleep(2.2)  # longer than IDLE_CHECK_AFTER
    proxy.reset_counters()

    check_pgsql_connections()
    Item.objects.count()

    assert proxy.statements == ["", 'SELECT COUNT(*) AS "__count" FROM "app_item"']


def test_check_with_using_checks_only_that_alias(server):
    backend_pid("default")
    fastfail_pid = backend_pid("fastfail")
    server.terminate_backends()
    wait_until_server_hung_up("default")
    wait_until_server_hung_up("fastfail")

    check_pgsql_connections(using="default")

    assert _driver_select_1("default") == 1
    with pytest.raises(connections["fastfail"].Database.Error):  # type: ignore[attr-defined]
        _driver_select_1("fastfail")
    assert backend_pid("fastfail") != fastfail_pid  # the engine still recovers it on use


def test_check_with_an_unknown_alias_says_so():
    with pytest.raises(ConnectionDoesNotExist):
        check_pgsql_connections(using="no-such-alias")


def test_check_opens_no_connection_for_an_alias_that_has_none(proxy):
    proxy.reset_counters()

    check_pgsql_connections()
    check_pgsql_connections(using=ENGINE_ALIASES)

    assert proxy.connections_accepted == 0


def test_check_inside_a_transaction_leaves_the_connection_to_the_engine(server):
    Item.objects.create(name="kept")
    with pytest.raises(django_postgresql_reconnect.TransactionLost), transaction.atomic():
        Item.objects.create(name="lost")
        server.terminate_backends()
        wait_until_server_hung_up()
        check_pgsql_connections()  # must not open a new transaction behind the block's back
        Item.objects.create(name="after")

    assert item_names(server) == ["kept"]


# --- The decorator -------------------------------------------------------------------------------


def test_decorator_bare_and_with_arguments_keeps_name_doc_and_signature():
    def lookup(name: str, *, using: str = "default") -> int:
        """Find an item."""
        return 0

    for decorated in (reconnect(lookup), reconnect(using="direct")(lookup), reconnect()(lookup)):
        assert decorated.__name__ == "lookup"
        assert decorated.__doc__ == "Find an item."
        assert inspect.unwrap(decorated) is lookup
        assert inspect.signature(decorated) == inspect.signature(lookup)


def test_decorator_keeps_async_functions_async():
    async def lookup(name: str) -> int:
        return 0

    decorated = reconnect(lookup)

    assert inspect.iscoroutinefunction(decorated)
    assert decorated.__name__ == "lookup"
    assert inspect.signature(decorated) == inspect.signature(lookup)


def test_decorator_refuses_a_non_callable_with_a_hint():
    with pytest.raises(TypeError, match="@reconnect"):
        reconnect(using="default")("default")  # type: ignore[type-var]


def test_decorated_function_gets_a_live_connection_after_termination(server):
    old_pid = backend_pid()
    server.terminate_backends()
    wait_until_server_hung_up()

    @django_postgresql_reconnect.decorator
    def job(value: int) -> tuple[object, int]:
        return _driver_select_1("default"), value

    assert job(7) == (1, 7)
    assert backend_pid() != old_pid


def test_decorator_with_using_checks_the_named_alias(server):
    backend_pid("fastfail")
    server.terminate_backends()
    wait_until_server_hung_up("fastfail")

    @reconnect(using="fastfail")
    def job() -> object:
        return _driver_select_1("fastfail")

    assert job() == 1


def test_context_manager_form_checks_at_the_top_of_the_block(server):
    backend_pid()
    server.terminate_backends()
    wait_until_server_hung_up()

    with reconnect():
        assert _driver_select_1("default") == 1


def test_decorated_call_on_a_warm_connection_sends_only_its_own_statement(proxy):
    @reconnect
    def job() -> int:
        return Item.objects.count()

    job()
    proxy.reset_counters()

    job()

    assert proxy.statements == ['SELECT COUNT(*) AS "__count" FROM "app_item"']


def test_worker_loop_across_a_server_restart_has_no_failed_iteration(server):
    failures: list[BaseException] = []
    done = 0

    @reconnect
    def work(turn: int) -> None:
        retry_atomic(lambda: Item.objects.create(name=f"turn-{turn}"))
        Item.objects.filter(name=f"turn-{turn}").count()

    work(-1)
    restart = threading.Timer(0.3, server.restart)
    restart.start()
    try:
        stop_at = time.monotonic() + 3.0
        while time.monotonic() < stop_at or restart.is_alive():
            try:
                work(done)
            except Exception as error:
                failures.append(error)
            done += 1
            time.sleep(0.02)
    finally:
        restart.join()

    assert failures == []
    assert item_names(server) == [f"turn-{n}" for n in range(-1, done)]


def test_worker_loop_with_the_context_manager_across_a_server_restart(server):
    failures: list[BaseException] = []
    Item.objects.create(name="kept")
    restart = threading.Timer(0.3, server.restart)
    restart.start()
    turns = 0
    try:
        stop_at = time.monotonic() + 3.0
        while time.monotonic() < stop_at or restart.is_alive():
            try:
                with reconnect():
                    assert Item.objects.get(name="kept").name == "kept"
            except Exception as error:
                failures.append(error)
            turns += 1
            time.sleep(0.02)
    finally:
        restart.join()

    assert failures == []
    assert turns > 10


# --- The middleware ------------------------------------------------------------------------------


def test_middleware_is_sync_and_async_capable():
    def view(request: object) -> str:
        return "sync"

    async def aview(request: object) -> str:
        return "async"

    assert ReconnectMiddleware.sync_capable and ReconnectMiddleware.async_capable
    assert not iscoroutinefunction(ReconnectMiddleware(view))
    assert iscoroutinefunction(ReconnectMiddleware(aview))


def test_middleware_replaces_the_dead_connection_before_the_view_runs(server):
    backend_pid()
    server.terminate_backends()
    wait_until_server_hung_up()

    middleware = ReconnectMiddleware(lambda request: _driver_select_1("default"))

    assert middleware(object()) == 1
