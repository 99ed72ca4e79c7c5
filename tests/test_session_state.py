"""A lost connection that held session state raises SessionStateLost once, then works again.

A silent reconnect would let the application believe it still holds an advisory lock (or is
still listening, or still has its temporary table): the loss must be said, once.
"""

from __future__ import annotations

import pytest
from django.db import OperationalError, connections, transaction

from django_postgresql_reconnect import SessionStateLost, TransactionLost
from tests.app.models import Item
from tests.faults import backend_pid, item_names, wait_until_server_hung_up

LOCK_KEY = 4242


def run(sql: str, using: str = "default") -> None:
    with connections[using].cursor() as cursor:
        cursor.execute(sql)


def advisory_lock_holders(server) -> list[tuple[str, ...]]:
    return server.execute(
        f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = {LOCK_KEY}",
        dbname="app",
    )


def test_lost_advisory_lock_raises_session_state_lost_once_then_works(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    assert len(advisory_lock_holders(server)) == 1
    server.terminate_backends()
    wait_until_server_hung_up()

    with pytest.raises(SessionStateLost) as caught:
        Item.objects.count()

    assert isinstance(caught.value, OperationalError)
    assert caught.value.alias == "default"
    assert "advisory lock" in str(caught.value)
    assert advisory_lock_holders(server) == []  # nobody holds it: the caller must know
    assert Item.objects.count() == 0  # once: the next statement runs on a new connection


def test_after_session_state_lost_a_later_termination_is_hidden_again(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    server.terminate_backends()
    wait_until_server_hung_up()
    with pytest.raises(SessionStateLost):
        Item.objects.count()
    first_pid = backend_pid()

    server.terminate_backends()
    wait_until_server_hung_up()

    assert Item.objects.count() == 0
    assert backend_pid() != first_pid


def test_without_session_state_the_same_loss_is_hidden(server):
    """The contrast: nothing in the session, so the read simply runs on a new connection."""
    run("SELECT 1")
    server.terminate_backends()
    wait_until_server_hung_up()

    assert Item.objects.count() == 0


def test_lost_advisory_lock_to_a_tcp_reset_raises_session_state_lost(proxy):
    run(f"SELECT pg_try_advisory_lock({LOCK_KEY})")
    proxy.reset_all()

    with pytest.raises(SessionStateLost):
        Item.objects.count()

    assert Item.objects.count() == 0


def test_write_after_lost_advisory_lock_is_not_run(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    server.terminate_backends()
    wait_until_server_hung_up()

    with pytest.raises(SessionStateLost):
        Item.objects.create(name="guarded by the lock")

    assert item_names(server) == []


def test_atomic_block_entered_after_lost_advisory_lock_raises_and_writes_nothing(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    server.terminate_backends()
    wait_until_server_hung_up()

    with pytest.raises(SessionStateLost), transaction.atomic():
        Item.objects.create(name="guarded by the lock")

    assert item_names(server) == []
    with transaction.atomic():
        Item.objects.create(name="next")
    assert item_names(server) == ["next"]


def test_advisory_lock_lost_inside_a_transaction_raises_session_state_lost(server):
    with pytest.raises(SessionStateLost), transaction.atomic():
        run(f"SELECT pg_advisory_lock({LOCK_KEY})")
        Item.objects.create(name="a")
        server.terminate_backends(pid=backend_pid())
        Item.objects.create(name="b")

    assert item_names(server) == []
    Item.objects.create(name="after")
    assert item_names(server) == ["after"]


@pytest.mark.parametrize(
    "statement",
    [
        f"SELECT pg_advisory_lock({LOCK_KEY})",
        f"SELECT pg_advisory_lock_shared({LOCK_KEY})",
        f"select pg_try_advisory_lock({LOCK_KEY})",
        "LISTEN scenario_channel",
        "SET statement_timeout = '5min'",
        "set search_path = public",
        "SET SESSION work_mem = '8MB'",
        "CREATE TEMP TABLE scenario_scratch (id integer)",
        "CREATE TEMPORARY TABLE scenario_scratch (id integer)",
        "PREPARE scenario_plan AS SELECT 1",
    ],
)
def test_each_kind_of_session_state_is_reported_when_lost(server, statement):
    run(statement)
    server.terminate_backends()
    wait_until_server_hung_up()

    with pytest.raises(SessionStateLost):
        Item.objects.count()

    assert Item.objects.count() == 0


@pytest.mark.parametrize(
    "statement",
    [
        f"SELECT pg_advisory_xact_lock({LOCK_KEY})",
        "SET LOCAL statement_timeout = '5min'",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ],
)
def test_transaction_scoped_state_ends_with_its_transaction_and_is_not_reported(server, statement):
    with transaction.atomic():
        run(statement)
        Item.objects.create(name="a")
    server.terminate_backends()
    wait_until_server_hung_up()

    assert Item.objects.count() == 1


def test_connection_closed_by_django_starts_without_session_state(server):
    """A deliberate close() drops the state with the session: the application asked for it."""
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    connections["default"].close()
    Item.objects.count()
    server.terminate_backends()
    wait_until_server_hung_up()

    assert Item.objects.count() == 0


def test_transaction_lost_without_session_state_is_not_reported_as_session_state(server):
    with pytest.raises(TransactionLost) as caught, transaction.atomic():
        Item.objects.create(name="a")
        server.terminate_backends(pid=backend_pid())
        Item.objects.create(name="b")

    assert not isinstance(caught.value, SessionStateLost)


def test_session_setting_made_with_set_config_is_reported_when_lost(server):
    """set_config(..., false) is a session-level SET spelled as a function call."""
    run("SELECT set_config('statement_timeout', '5min', false)")
    server.terminate_backends()
    wait_until_server_hung_up()

    with pytest.raises(SessionStateLost):
        Item.objects.count()

    assert Item.objects.count() == 0
