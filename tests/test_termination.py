"""A backend killed with pg_terminate_backend: found before use, replaced, nothing lost."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connections, transaction

from django_postgresql_reconnect import TransactionLost
from tests.app.models import Item
from tests.faults import backend_pid, item_names, wait_until_server_hung_up


def test_read_succeeds_on_first_call_after_backend_terminated(server):
    first_pid = backend_pid()
    server.terminate_backends()
    wait_until_server_hung_up()

    assert Item.objects.count() == 0
    assert backend_pid() != first_pid


def test_insert_runs_once_after_termination_found_before_sending(server):
    Item.objects.create(name="before")
    server.terminate_backends()
    wait_until_server_hung_up()

    Item.objects.create(name="after")

    assert item_names(server) == ["before", "after"]


def test_stock_django_fails_the_first_call_after_termination(server):
    """The baseline this engine exists for: Django's own backend surfaces the dead connection."""
    Item.objects.using("stock").count()
    server.terminate_backends()
    wait_until_server_hung_up("stock")

    with pytest.raises(OperationalError):
        Item.objects.using("stock").count()


def test_reconnect_false_behaves_like_stock_django(server):
    Item.objects.using("disabled").count()
    server.terminate_backends()
    wait_until_server_hung_up("disabled")

    with pytest.raises(OperationalError):
        Item.objects.using("disabled").count()


def test_atomic_block_entered_on_a_dead_connection_commits_atomically(server):
    Item.objects.count()
    server.terminate_backends()
    wait_until_server_hung_up()

    with transaction.atomic():
        Item.objects.create(name="a")
        Item.objects.create(name="b")

    assert item_names(server) == ["a", "b"]


def test_atomic_block_reopened_after_loss_still_rolls_back_on_error(server):
    Item.objects.count()
    server.terminate_backends()
    wait_until_server_hung_up()

    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Item.objects.create(name="a")
        1 / 0  # noqa: B018

    assert item_names(server) == []


def test_loss_after_acknowledged_statement_raises_transaction_lost_for_the_rest_of_the_block(
    server,
):
    seen = []
    with pytest.raises(TransactionLost), transaction.atomic():
        Item.objects.create(name="first")
        server.terminate_backends()
        wait_until_server_hung_up()
        try:
            Item.objects.create(name="second")
        except TransactionLost as error:
            seen.append(error)
        Item.objects.create(name="third")

    assert len(seen) == 1
    assert isinstance(seen[0], OperationalError)
    assert item_names(server) == []
    with transaction.atomic():
        Item.objects.create(name="next block")
    assert item_names(server) == ["next block"]


def test_transaction_lost_is_chained_to_the_driver_error(server):
    with pytest.raises(TransactionLost) as caught, transaction.atomic():
        Item.objects.create(name="first")
        pid = backend_pid()
        server.terminate_backends(pid=pid)
        wait_until_server_hung_up()
        Item.objects.count()

    assert "default" in str(caught.value)
    assert "rolled the whole transaction back" in str(caught.value)


def test_cursor_held_across_a_termination_is_given_a_new_connection(server):
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        server.terminate_backends()
        wait_until_server_hung_up()
        cursor.execute("SELECT 2")
        assert cursor.fetchone() == (2,)


def test_other_threads_connections_check_themselves_after_one_loss(server):
    """Rule 8: one lost connection makes the alias's other connections verify before use."""
    import threading

    Item.objects.count()
    results = []

    def other_thread():
        results.append(Item.objects.count())
        connections.close_all()

    server.terminate_backends()
    wait_until_server_hung_up()
    Item.objects.count()  # finds the loss: the alias's other connections check themselves
    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert results == [0]
