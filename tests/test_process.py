"""A process that survives: fork(), secrets kept out of every message, calls bounded in time."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings

import pytest
from django.db import OperationalError, connections
from django.db.utils import ConnectionHandler

from django_postgresql_reconnect import DatabaseUnavailable, signals
from django_postgresql_reconnect.conf import TCP_DEFAULTS
from tests.app.models import Item
from tests.faults import backend_pid, lose_connection, run


def fork_and_run(child) -> int:
    """Fork; run ``child()`` in the child (its int result is the exit status); return it."""
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process (the proxy runs a thread) may
        # deadlock; the child here touches nothing the other thread holds.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        status = 1
        try:
            status = child()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_session(proxy):
    Item.objects.count()
    parent_pid = backend_pid()
    before = {c.client_port: len(c.statements) for c in proxy.connections if not c.closed}

    def child() -> int:
        child_pid = backend_pid()
        Item.objects.create(name="from the child")
        connections["default"].close()  # closing the inherited socket says nothing either
        return 0 if child_pid != parent_pid else 3

    assert fork_and_run(child) == 0

    after = {c.client_port: len(c.statements) for c in proxy.connections}
    assert {port: after[port] for port in before} == before  # nothing on the parent's socket
    assert backend_pid() == parent_pid  # the very same session
    assert Item.objects.filter(name="from the child").count() == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_starts_with_a_closed_breaker(server):
    Item.objects.using("fastfail").count()
    server.stop()
    with pytest.raises(DatabaseUnavailable):
        Item.objects.using("fastfail").count()  # the parent's breaker opens
    server.start()

    def child() -> int:
        try:
            Item.objects.using("fastfail").count()
        except DatabaseUnavailable:
            return 4  # the parent's breaker state leaked into the child
        return 0

    assert fork_and_run(child) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_child_forked_inside_a_transaction_does_not_run_the_parents_transaction(server):
    from django.db import transaction

    from django_postgresql_reconnect import TransactionLost

    with transaction.atomic():
        Item.objects.create(name="parent")

        def child() -> int:
            try:
                Item.objects.create(name="child")
            except TransactionLost:
                return 0
            return 5

        assert fork_and_run(child) == 0
    assert list(Item.objects.values_list("name", flat=True)) == ["parent"]


# --- Secrets --------------------------------------------------------------------------------

SECRET_PASSWORD = "pw-d0-not-leak-42"


@pytest.fixture
def secret_alias(server, proxy):
    """An alias whose password and sslpassword must never be shown."""
    from tests.faults import add_database, remove_database

    server.execute(
        "DO $$BEGIN CREATE ROLE scenario_secret LOGIN SUPERUSER; EXCEPTION WHEN"
        f" duplicate_object THEN END$$; ALTER ROLE scenario_secret PASSWORD '{SECRET_PASSWORD}'"
    )
    entry = dict(connections.settings["default"])
    entry.update(USER="scenario_secret", PASSWORD=SECRET_PASSWORD, RECONNECT={"DEADLINE": 0.5})
    entry["OPTIONS"] = {"sslmode": "disable", "sslpassword": "ssl-s3cret-never"}
    add_database("secret", entry)
    yield "secret"
    remove_database("secret")


def test_no_secret_in_any_log_line_exception_or_signal_payload(
    server, proxy, secret_alias, caplog
):
    payloads = []

    def keep(**kwargs: object) -> None:
        payloads.append(repr(kwargs))

    receivers = [
        signals.connection_lost,
        signals.pre_reconnect,
        signals.reconnected,
        signals.decided,
    ]
    for signal in receivers:
        signal.connect(keep)
    errors = []
    try:
        with caplog.at_level(logging.DEBUG):
            run("SELECT 1", using=secret_alias)
            lose_connection(server, secret_alias)
            run("SELECT 1", using=secret_alias)  # a loss and a recovery
            proxy.swallow_reply("INSERT")
            try:
                run("INSERT INTO app_item (name) VALUES ('x')", using=secret_alias)
            except OperationalError as error:
                errors.append(error)
            server.stop()
            try:
                run("SELECT 1", using=secret_alias)
            except OperationalError as error:
                errors.append(error)
    finally:
        server.start()
        for signal in receivers:
            signal.disconnect(keep)

    shown = [record.getMessage() for record in caplog.records]
    shown += [repr(record.__dict__) for record in caplog.records]
    shown += [str(error) + repr(error.args) for error in errors]
    secrets = (SECRET_PASSWORD, "ssl-s3cret-never")
    leaks = [text for text in shown for secret in secrets if secret in text]
    assert not leaks
    assert len(errors) == 2 and caplog.records
    assert payloads
    assert not [p for p in payloads for secret in secrets if secret in p]


# --- Connecting: permanent errors at once, a deadline per call --------------------------------


def _handler(**overrides: object) -> ConnectionHandler:
    entry = dict(connections.settings["default"])
    entry.update(overrides)
    return ConnectionHandler({"default": entry})


def test_an_unresolvable_host_fails_after_one_attempt():
    handler = _handler(HOST="no-such-host.invalid")
    started = time.monotonic()
    with pytest.raises(OperationalError) as caught:
        handler["default"].ensure_connection()

    assert not isinstance(caught.value, DatabaseUnavailable)
    assert time.monotonic() - started < TCP_DEFAULTS["connect_timeout"]


def test_a_refused_connection_is_retried_until_the_deadline(proxy):
    handler = _handler(RECONNECT={"DEADLINE": 0.5, "BREAKER_PROBE_INTERVAL": 0})
    proxy.refuse()
    with pytest.raises(DatabaseUnavailable) as caught:
        handler["default"].ensure_connection()
    assert caught.value.attempts >= 2


def test_a_call_meeting_loss_after_loss_is_bounded_by_one_deadline(proxy, server):
    """Every new connection dies before use: the call gives up at its deadline, not later."""
    options = {"DEADLINE": 1.0, "BREAKER_PROBE_INTERVAL": 0, "CONNECT_ATTEMPTS": 10_000}
    from tests.faults import add_database, remove_database

    entry = dict(connections.settings["default"])
    entry["RECONNECT"] = options
    add_database("storm", entry)

    def kill_the_new_one(connection, **kwargs: object) -> None:
        proxy.close_all()

    run("SELECT 1", using="storm")
    signals.reconnected.connect(kill_the_new_one)
    started = time.monotonic()
    try:
        proxy.close_all()
        with pytest.raises(DatabaseUnavailable):
            run("SELECT 1", using="storm")
    finally:
        signals.reconnected.disconnect(kill_the_new_one)
        remove_database("storm")
    assert time.monotonic() - started < options["DEADLINE"] + TCP_DEFAULTS["connect_timeout"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resolver")
def test_resolver_error_codes_not_words_decide(monkeypatch):
    """EAI_AGAIN (try later) and EAI_NONAME (no such name), whatever the language."""
    from django_postgresql_reconnect.rejections import host_lookup_failure

    def lookup(error: int):
        def fail(*args: object, **kwargs: object) -> None:
            raise socket.gaierror(error, "Temporärer Fehler bei der Namensauflösung")

        return fail

    monkeypatch.setattr(socket, "getaddrinfo", lookup(socket.EAI_AGAIN))
    assert host_lookup_failure("db.internal") == "transient"
    monkeypatch.setattr(socket, "getaddrinfo", lookup(socket.EAI_NONAME))
    assert host_lookup_failure("db.internal") == "permanent"
