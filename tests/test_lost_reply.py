"""The server executed the statement but its reply never arrived: never guess, never repeat."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connections, transaction

from django_postgresql_reconnect import (
    CommitOutcomeUnknown,
    StatementOutcomeUnknown,
    TransactionLost,
    no_retry,
)
from tests.app.models import Item
from tests.faults import item_names


def test_insert_whose_reply_is_lost_raises_outcome_unknown_and_is_not_repeated(proxy, server):
    Item.objects.count()
    fired = proxy.swallow_reply("INSERT")

    with pytest.raises(StatementOutcomeUnknown) as caught:
        Item.objects.create(name="once")

    assert fired.is_set()
    assert isinstance(caught.value, OperationalError)
    assert "may or may not have applied it" in str(caught.value)
    assert item_names(server) == ["once"]
    Item.objects.create(name="next")
    assert item_names(server) == ["once", "next"]


def test_update_whose_reply_is_lost_is_not_repeated(proxy, server):
    Item.objects.create(name="counter", value=0)
    proxy.swallow_reply("UPDATE")

    with pytest.raises(StatementOutcomeUnknown):
        Item.objects.filter(name="counter").update(value=1)

    assert server.execute("SELECT value FROM app_item", dbname="app") == [("1",)]


def test_autocommit_read_whose_reply_is_lost_is_run_again(proxy, server):
    Item.objects.create(name="a")
    fired = proxy.swallow_reply("SELECT")

    assert list(Item.objects.values_list("name", flat=True)) == ["a"]
    assert fired.is_set()


def test_read_inside_no_retry_is_not_run_again(proxy):
    Item.objects.count()
    proxy.swallow_reply("SELECT")

    with pytest.raises(StatementOutcomeUnknown), no_retry():
        Item.objects.count()

    assert Item.objects.count() == 0


def test_select_calling_nextval_is_not_run_again(proxy):
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE SEQUENCE IF NOT EXISTS scenario_seq")
    proxy.swallow_reply("nextval")

    with pytest.raises(StatementOutcomeUnknown), connections["default"].cursor() as cursor:
        cursor.execute("SELECT nextval('scenario_seq')")


def test_lost_reply_to_first_statement_of_a_transaction_reopens_it(proxy, server):
    """Nothing of the transaction was acknowledged: the server rolled it back, run it anew."""
    Item.objects.count()
    proxy.swallow_reply("INSERT")

    with transaction.atomic():
        Item.objects.create(name="a")
        Item.objects.create(name="b")

    assert item_names(server) == ["a", "b"]


def test_lost_reply_after_an_acknowledged_statement_raises_transaction_lost(proxy, server):
    Item.objects.count()
    with pytest.raises(TransactionLost), transaction.atomic():
        Item.objects.create(name="a")
        proxy.swallow_reply("INSERT")
        Item.objects.create(name="b")

    assert item_names(server) == []
    Item.objects.create(name="after")
    assert item_names(server) == ["after"]


def test_lost_commit_reply_raises_commit_outcome_unknown_and_the_data_is_committed(proxy, server):
    Item.objects.count()
    proxy.swallow_reply("COMMIT")

    with pytest.raises(CommitOutcomeUnknown) as caught, transaction.atomic():
        Item.objects.create(name="a")
        Item.objects.create(name="b")

    assert isinstance(caught.value, StatementOutcomeUnknown)
    assert item_names(server) == ["a", "b"]
    with transaction.atomic():
        Item.objects.create(name="c")
    assert item_names(server) == ["a", "b", "c"]
