"""Opening connections: permanent errors at once, credentials refreshed, TCP defaults applied."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler

from django_postgresql_reconnect import DatabaseUnavailable, signals
from django_postgresql_reconnect.conf import TCP_DEFAULTS
from tests.app.models import Item
from tests.faults import wait_until_server_hung_up


def _handler(**overrides):
    entry = dict(connections.settings["default"])
    entry.update(overrides)
    return ConnectionHandler({"default": entry})


def test_wrong_password_raises_the_servers_message_after_one_attempt(proxy):
    handler = _handler(PASSWORD="wrong")
    with pytest.raises(OperationalError) as caught:
        handler["default"].ensure_connection()

    assert not isinstance(caught.value, DatabaseUnavailable)
    assert "password authentication failed" in str(caught.value)
    assert proxy.connections_accepted == 1  # no retry loop


def test_unknown_database_raises_after_one_attempt(proxy):
    handler = _handler(NAME="no_such_database")
    with pytest.raises(OperationalError) as caught:
        handler["default"].ensure_connection()

    assert "does not exist" in str(caught.value)
    assert proxy.connections_accepted == 1


def test_djangos_own_error_from_connect_is_raised_once_as_django_does(monkeypatch):
    """A connect() that raises Django's DatabaseError before any connection exists (a test
    double, as Django's own suite uses for _nodb_cursor) is the caller's: no retry loop, and the
    breaker stays closed for the next call."""
    attempts = []

    def refuse(self):
        attempts.append(self.alias)
        raise DatabaseError("refused by a test double")

    monkeypatch.setattr(BaseDatabaseWrapper, "connect", refuse)
    with pytest.raises(DatabaseError, match="refused by a test double") as caught:
        _handler()["default"].ensure_connection()
    monkeypatch.undo()

    assert attempts == ["default"]
    assert not isinstance(caught.value, DatabaseUnavailable)
    _handler()["default"].ensure_connection()  # an open breaker would refuse this at once


def test_connection_parameters_get_tcp_defaults_only_where_options_set_none():
    handler = _handler(OPTIONS={"sslmode": "disable", "keepalives_idle": 5})
    params = handler["default"].get_connection_params()

    assert params["keepalives_idle"] == 5
    assert params["tcp_user_timeout"] == TCP_DEFAULTS["tcp_user_timeout"]
    assert params["connect_timeout"] == TCP_DEFAULTS["connect_timeout"]


def test_tcp_defaults_can_be_turned_off():
    handler = _handler(RECONNECT={"TCP_DEFAULTS": False})
    params = handler["default"].get_connection_params()

    assert "tcp_user_timeout" not in params


def test_pre_reconnect_may_refresh_the_password_before_the_new_connection(server, proxy):
    """A credential rotated while connected (IAM, Vault): the receiver supplies the new one."""
    from tests.conftest import PASSWORD

    wrapper = connections["default"]
    Item.objects.count()
    wrapper.settings_dict["PASSWORD"] = "stale"
    seen = []

    def refresh(sender, connection, alias, attempt, **kwargs):
        seen.append((alias, attempt))
        connection.settings_dict["PASSWORD"] = PASSWORD

    signals.pre_reconnect.connect(refresh)
    try:
        proxy.reset_all()
        wait_until_server_hung_up()
        assert Item.objects.count() == 0
    finally:
        signals.pre_reconnect.disconnect(refresh)
        wrapper.settings_dict["PASSWORD"] = PASSWORD
    assert seen == [("default", 1)]


def test_connection_lost_and_reconnected_signals_report_the_recovery(server):
    events: list[tuple[object, ...]] = []

    def on_lost(sender, alias, error, **kwargs):
        events.append(("lost", alias))

    def on_reconnected(sender, alias, attempts, seconds, **kwargs):
        events.append(("reconnected", alias, attempts, seconds >= 0))

    signals.connection_lost.connect(on_lost)
    signals.reconnected.connect(on_reconnected)
    try:
        Item.objects.count()
        server.terminate_backends()
        wait_until_server_hung_up()
        Item.objects.count()
    finally:
        signals.connection_lost.disconnect(on_lost)
        signals.reconnected.disconnect(on_reconnected)
    assert events == [("lost", "default"), ("reconnected", "default", 1, True)]


def test_loss_and_recovery_are_logged_with_the_alias_and_no_password(server, caplog):
    from tests.conftest import PASSWORD

    Item.objects.count()
    server.terminate_backends()
    wait_until_server_hung_up()
    with caplog.at_level("INFO", logger="django_postgresql_reconnect"):
        Item.objects.count()

    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in levels] == ["WARNING", "INFO"]
    assert all("'default'" in message for _, message in levels)
    assert all(PASSWORD not in message for _, message in levels)
