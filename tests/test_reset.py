"""A proxy or load balancer resets the flow (RST): the next call runs on a new connection."""

from __future__ import annotations

import pytest
from django.db import OperationalError, transaction

from tests.app.models import Item
from tests.faults import item_names, wait_until_server_hung_up


def test_read_succeeds_on_first_call_after_tcp_reset(proxy):
    Item.objects.count()
    proxy.reset_all()
    wait_until_server_hung_up()

    assert Item.objects.count() == 0


def test_read_succeeds_after_the_flow_closed_with_fin(proxy):
    Item.objects.count()
    proxy.close_all()
    wait_until_server_hung_up()

    assert Item.objects.count() == 0


def test_write_after_reset_found_before_sending_is_applied_once(proxy, server):
    Item.objects.count()
    proxy.reset_all()
    wait_until_server_hung_up()

    Item.objects.create(name="x")

    assert item_names(server) == ["x"]


def test_stock_django_fails_after_tcp_reset(proxy):
    Item.objects.using("stock").count()
    proxy.reset_all()
    wait_until_server_hung_up("stock")

    with pytest.raises(OperationalError):
        Item.objects.using("stock").count()


def test_atomic_block_after_reset_commits_both_rows(proxy, server):
    Item.objects.count()
    proxy.reset_all()
    wait_until_server_hung_up()

    with transaction.atomic():
        Item.objects.create(name="a")
        Item.objects.create(name="b")

    assert item_names(server) == ["a", "b"]
