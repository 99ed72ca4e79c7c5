"""A new connection lost while being set up: one more connect attempt, never the caller's error.

Before the caller's statement runs on a new connection, something else runs there first:
Django's own set-up, a ``connection_created`` receiver's statement, the replay of the lost
session's settings, the question whether a lost read may run again. None of it is the caller's,
so a loss there costs one more attempt within the call's deadline. Each site is judged by the
same rule as a statement (``_lost_by``): the driver's status, the SQLSTATE, or the socket.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from django_postgresql_reconnect import drivers, signals, volatility
from django_postgresql_reconnect.mixin import ReconnectMixin
from tests.app.models import Item
from tests.faults import run, setting, wait_until_server_hung_up


@pytest.fixture
def lost_connection(proxy):
    """The default alias held a connection that a reset killed while it sat idle."""
    Item.objects.count()
    proxy.reset_all()
    wait_until_server_hung_up()


def test_a_connection_created_receiver_whose_statement_loses_the_connection_costs_an_attempt(
    proxy, lost_connection
):
    finished = []

    def tenant_setup(sender, connection, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 'tenant set-up'")
        finished.append(drivers.backend_pid(connection.connection))

    lost = proxy.swallow_reply("tenant set-up")
    connection_created.connect(tenant_setup)
    try:
        assert Item.objects.count() == 0
    finally:
        connection_created.disconnect(tenant_setup)

    assert lost.is_set()
    assert finished == [drivers.backend_pid(connections["default"].connection)]


def test_a_loss_while_the_sessions_settings_are_replayed_costs_an_attempt(proxy, server):
    run("SET statement_timeout = '5min'")
    restored = []

    def count_restores(sender, **kwargs):
        restored.append(kwargs["alias"])

    signals.session_restored.connect(count_restores)
    proxy.reset_all()
    wait_until_server_hung_up()
    lost = proxy.swallow_reply("statement_timeout")
    try:
        assert setting("statement_timeout") == "5min"
    finally:
        signals.session_restored.disconnect(count_restores)

    assert lost.is_set()
    assert restored == ["default"]  # by the second new connection: the first was lost doing it


def test_a_loss_while_the_server_is_asked_whether_a_read_writes_asks_again(proxy, server):
    server.execute(
        "CREATE OR REPLACE FUNCTION setup_losses_peek() RETURNS text STABLE LANGUAGE sql"
        " AS $$ SELECT 'peeked' $$",
        dbname="app",
    )
    volatility.forget()
    Item.objects.count()
    read_lost = proxy.swallow_reply("setup_losses_peek")
    question_lost: list[threading.Event] = []

    def lose_the_question(sender, attempt, **kwargs):
        if read_lost.is_set() and not question_lost:
            question_lost.append(proxy.swallow_reply("provolatile"))

    signals.pre_reconnect.connect(lose_the_question)
    try:
        assert run("SELECT setup_losses_peek()") == [("peeked",)]
    finally:
        signals.pre_reconnect.disconnect(lose_the_question)

    assert read_lost.is_set()
    assert question_lost and question_lost[0].is_set()


def test_a_driver_error_without_sqlstate_on_a_reset_socket_is_a_loss_whatever_libpq_says(proxy):
    """psycopg 3's poll can see an RST's error flag a moment before the kernel marks the socket
    readable: it then raises "connection socket closed" while libpq's status still says OK.
    The campaign met it once in Django's set-up of a new connection."""
    wrapper = connections["default"]
    assert isinstance(wrapper, ReconnectMixin)
    wrapper.ensure_connection()
    socket_closed = wrapper.Database.OperationalError("connection socket closed")

    assert not wrapper._lost_by(socket_closed)  # the same words on a live socket: not a loss

    proxy.reset_all()
    wait_until_server_hung_up()

    assert not drivers.connection_is_broken(wrapper.connection)  # libpq has read nothing yet
    assert wrapper._lost_by(socket_closed)
    assert not wrapper._lost_by(ValueError("not the driver's"))
