"""retry_atomic(): the whole transaction runs again when it was lost or aborted, never twice.

Each scenario counts what the server holds afterwards: the function's rows exist exactly once
and the caller gets its return value, whatever happened to the connection on the way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, OperationalError, connections, transaction
from django.db.models import F

from django_postgresql_reconnect import (
    CommitOutcomeUnknown,
    TransactionLost,
    drivers,
    retry_atomic,
    retrying_atomic,
)
from django_postgresql_reconnect.signals import connection_lost
from tests.app.models import Item
from tests.faults import backend_pid, item_names

ITERATIONS = 20


def raise_sqlstate(sqlstate: str, using: str = "default") -> None:
    """Make the server abort the current statement with ``sqlstate``, as a conflict would."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'scenario conflict' USING ERRCODE = '{sqlstate}'; END $$"
        )


def counter_value(server) -> int:
    return int(
        server.execute("SELECT value FROM app_item WHERE name = 'counter'", dbname="app")[0][0]
    )


class Calls:
    """A function for retry_atomic that records how often it ran."""

    def __init__(self) -> None:
        self.count = 0


# --- The reply to COMMIT is lost ---------------------------------------------------------------


def test_lost_commit_reply_is_resolved_by_asking_the_server_every_time(proxy, server):
    Item.objects.create(name="counter", value=0)
    for iteration in range(ITERATIONS):
        calls = Calls()

        def book(iteration: int = iteration, calls: Calls = calls) -> str:
            calls.count += 1
            Item.objects.create(name=f"booking-{iteration}")
            Item.objects.filter(name="counter").update(value=F("value") + 1)
            return f"receipt-{iteration}"

        fired = proxy.swallow_reply("COMMIT")

        assert retry_atomic(book) == f"receipt-{iteration}"
        assert fired.is_set(), f"iteration {iteration}: the COMMIT reply was not swallowed"
        assert calls.count == 1, f"iteration {iteration}: committed, so not run again"
        assert counter_value(server) == iteration + 1
        assert item_names(server) == ["counter", *(f"booking-{n}" for n in range(iteration + 1))]


def test_lost_commit_reply_of_a_read_only_function_returns_its_result(proxy):
    Item.objects.create(name="a")
    fired = proxy.swallow_reply("COMMIT")

    assert retry_atomic(lambda: list(Item.objects.values_list("name", flat=True))) == ["a"]
    assert fired.is_set()


@pytest.fixture
def deferred_check() -> Iterator[None]:
    """A table whose constraint is checked at COMMIT, so a COMMIT can fail on its own."""
    with connections["direct"].cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS scenario_child ("
            " parent_id integer REFERENCES app_item (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        cursor.execute("TRUNCATE scenario_child")
    yield
    with connections["direct"].cursor() as cursor:
        cursor.execute("DROP TABLE scenario_child")


def test_lost_reply_to_a_commit_that_aborted_runs_the_function_again(
    proxy, server, deferred_check
):
    """The server says the transaction aborted: nothing of it exists, so it runs once more."""
    calls = Calls()

    def book() -> int:
        calls.count += 1
        item = Item.objects.create(name="parent")
        parent = item.pk if calls.count > 1 else -1  # the first COMMIT fails its deferred check
        with connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO scenario_child (parent_id) VALUES (%s)", [parent])
        return item.pk

    fired = proxy.swallow_reply("COMMIT")

    pk = retry_atomic(book)

    assert fired.is_set()
    assert calls.count == 2
    assert item_names(server) == ["parent"]
    assert server.execute("SELECT parent_id FROM scenario_child", dbname="app") == [(str(pk),)]


@pytest.fixture
def slow_commit() -> Iterator[None]:
    """A table whose rows make COMMIT take a while (a deferred trigger sleeps)."""
    with connections["direct"].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS scenario_slow (name text)")
        cursor.execute(
            "CREATE OR REPLACE FUNCTION scenario_sleep() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$"
        )
        cursor.execute("DROP TRIGGER IF EXISTS scenario_sleep_at_commit ON scenario_slow")
        cursor.execute(
            "CREATE CONSTRAINT TRIGGER scenario_sleep_at_commit AFTER INSERT ON scenario_slow"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION scenario_sleep()"
        )
        cursor.execute("TRUNCATE scenario_slow")
    yield
    with connections["direct"].cursor() as cursor:
        cursor.execute("DROP TABLE scenario_slow")
        cursor.execute("DROP FUNCTION scenario_sleep()")


def test_connection_reset_while_the_server_is_still_committing_waits_for_the_outcome(
    proxy, server, slow_commit
):
    """COMMIT was sent and the link died before the server finished: wait, then answer."""
    calls = Calls()

    def book() -> str:
        calls.count += 1
        with connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO scenario_slow (name) VALUES ('once')")
        return "done"

    def reset_once_commit_is_sent() -> None:
        # The server sleeps half a second inside COMMIT; cut the link meanwhile.
        while not any(sql.strip().upper() == "COMMIT" for sql in proxy.statements):
            if stop.wait(0.005):
                return
        proxy.reset_all()

    stop = threading.Event()
    Item.objects.count()
    proxy.reset_counters()
    cutter = threading.Thread(target=reset_once_commit_is_sent)
    cutter.start()
    try:
        assert retry_atomic(book) == "done"
    finally:
        stop.set()
        cutter.join()

    assert calls.count == 1
    assert server.execute("SELECT name FROM scenario_slow", dbname="app") == [("once",)]


def test_commit_outcome_unknown_when_the_server_cannot_be_asked(proxy, server):
    """The reply to COMMIT is lost and no new connection opens: only then is it unknown."""

    def refuse_connections(**kwargs: object) -> None:
        proxy.refuse()

    calls = Calls()

    def book() -> None:
        calls.count += 1
        Item.objects.using("fastfail").create(name="maybe")

    Item.objects.using("fastfail").count()
    proxy.swallow_reply("COMMIT")
    connection_lost.connect(refuse_connections)
    try:
        with pytest.raises(CommitOutcomeUnknown) as caught:
            retry_atomic(book, using="fastfail")
    finally:
        connection_lost.disconnect(refuse_connections)

    assert isinstance(caught.value, OperationalError)
    assert "'fastfail'" in str(caught.value)
    assert "could not be asked" in str(caught.value)
    assert calls.count == 1
    assert item_names(server) == ["maybe"]  # it did commit; the caller was told it might have


# --- The transaction is lost or aborted before COMMIT -----------------------------------------


def test_transaction_lost_mid_function_runs_it_again_once(server):
    calls = Calls()

    def book() -> str:
        calls.count += 1
        Item.objects.create(name="booking")
        if calls.count == 1:
            server.terminate_backends(pid=backend_pid())
        Item.objects.create(name="booking-line")
        return "receipt"

    assert retry_atomic(book) == "receipt"
    assert calls.count == 2
    assert item_names(server) == ["booking", "booking-line"]


def test_transaction_lost_to_a_tcp_reset_mid_function_runs_it_again_once(proxy, server):
    calls = Calls()

    def book() -> int:
        calls.count += 1
        Item.objects.create(name="booking")
        if calls.count == 1:
            proxy.reset_all()
        return Item.objects.count()

    assert retry_atomic(book) == 1
    assert calls.count == 2
    assert item_names(server) == ["booking"]


def test_transaction_lost_on_every_attempt_raises_after_the_attempts(server):
    calls = Calls()

    def book() -> None:
        calls.count += 1
        Item.objects.create(name=f"try-{calls.count}")
        server.terminate_backends(pid=backend_pid())
        Item.objects.count()

    with pytest.raises(TransactionLost):
        retry_atomic(book, attempts=3)

    assert calls.count == 3
    assert item_names(server) == []


@pytest.mark.parametrize(
    "sqlstate", ["40001", "40P01"], ids=["serialization_failure", "deadlock_detected"]
)
def test_aborted_transaction_is_run_again(server, sqlstate):
    calls = Calls()

    def book() -> str:
        calls.count += 1
        Item.objects.create(name="booking")
        if calls.count == 1:
            raise_sqlstate(sqlstate)
        return "receipt"

    assert retry_atomic(book) == "receipt"
    assert calls.count == 2
    assert item_names(server) == ["booking"]


def test_serialization_failure_between_two_real_transactions_is_run_again(server):
    """A concurrent update commits between this transaction's snapshot and its own update."""
    Item.objects.create(name="counter", value=0)
    calls = Calls()

    def increment() -> int:
        calls.count += 1
        with connections["default"].cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        value = Item.objects.get(name="counter").value
        if calls.count == 1:
            Item.objects.using("direct").filter(name="counter").update(value=F("value") + 10)
        Item.objects.filter(name="counter").update(value=value + 1)
        return value + 1

    assert retry_atomic(increment) == 11
    assert calls.count == 2
    assert counter_value(server) == 11


def test_serialization_failure_on_every_attempt_raises_it_after_the_attempts(server):
    calls = Calls()

    def book() -> None:
        calls.count += 1
        Item.objects.create(name="booking")
        raise_sqlstate("40001")

    with pytest.raises(OperationalError) as caught:
        retry_atomic(book, attempts=4)

    assert drivers.sqlstate(caught.value.__cause__) == "40001"
    assert calls.count == 4
    assert item_names(server) == []


def test_other_errors_are_not_retried(server):
    Item.objects.create(name="taken")
    calls = Calls()

    def book() -> None:
        calls.count += 1
        Item.objects.create(name="taken")

    with pytest.raises(IntegrityError):
        retry_atomic(book)

    assert calls.count == 1


def test_exception_from_the_function_rolls_back_and_is_not_retried(server):
    calls = Calls()

    def book() -> None:
        calls.count += 1
        Item.objects.create(name="booking")
        raise ValueError("no seats left")

    with pytest.raises(ValueError, match="no seats left"):
        retry_atomic(book)

    assert calls.count == 1
    assert item_names(server) == []


# --- How it is called ---------------------------------------------------------------------------


def test_inside_an_atomic_block_raises_a_clear_error():
    with (
        transaction.atomic(),
        pytest.raises(transaction.TransactionManagementError, match="outside atomic"),
    ):
        retry_atomic(lambda: Item.objects.create(name="nested"))


def test_decorator_bare_and_with_arguments_runs_again_after_loss(server):
    calls = Calls()

    @retrying_atomic
    def bare(name: str) -> str:
        calls.count += 1
        Item.objects.create(name=name)
        if calls.count == 1:
            server.terminate_backends(pid=backend_pid())
        return Item.objects.get(name=name).name

    @retrying_atomic(using="direct", attempts=2)
    def configured(name: str) -> str:
        Item.objects.using("direct").create(name=name)
        return name

    assert bare("bare") == "bare"
    assert configured(name="configured") == "configured"
    assert bare.__name__ == "bare"
    assert calls.count == 2
    assert item_names(server) == ["bare", "configured"]


def test_lost_commit_reply_of_another_alias_inside_the_function_reaches_the_caller(proxy, server):
    """Only retry_atomic's own COMMIT is resolved; another alias's lost commit is the caller's."""
    calls = Calls()

    def book() -> None:
        calls.count += 1
        Item.objects.create(name="outer")
        with transaction.atomic(using="fastfail"):
            Item.objects.using("fastfail").create(name="inner")

    Item.objects.using("fastfail").count()
    proxy.swallow_reply("COMMIT")

    with pytest.raises(CommitOutcomeUnknown) as caught:
        retry_atomic(book)

    assert caught.value.alias == "fastfail"
    assert calls.count == 1
    assert item_names(server) == ["inner"]  # the outer transaction rolled back


@pytest.mark.usefixtures("deferred_check")
def test_lost_reply_to_a_commit_that_aborted_on_the_last_attempt_says_it_aborted(proxy, server):
    """The server said the transaction aborted: that is known, not "outcome unknown"."""
    calls = Calls()

    def book() -> None:
        calls.count += 1
        with connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO scenario_child (parent_id) VALUES (-1)")

    fired = proxy.swallow_reply("COMMIT")

    with pytest.raises(TransactionLost, match="aborted") as caught:
        retry_atomic(book, attempts=1)

    assert fired.is_set()
    assert not isinstance(caught.value, CommitOutcomeUnknown)
    assert calls.count == 1
    assert server.execute("SELECT count(*) FROM scenario_child", dbname="app") == [("0",)]


# --- atomic()'s promises are kept: on_commit, set_rollback, swallowed errors, NOTIFY ------------


def test_on_commit_callbacks_run_once_when_a_lost_commit_reply_resolves_as_committed(proxy):
    ran = []

    def book() -> str:
        Item.objects.create(name="booked")
        transaction.on_commit(lambda: ran.append("task.delay"))
        return "receipt"

    fired = proxy.swallow_reply("COMMIT")

    assert retry_atomic(book) == "receipt"
    assert fired.is_set()
    assert ran == ["task.delay"]


def test_on_commit_callbacks_of_an_aborted_attempt_do_not_run(proxy, server, deferred_check):
    ran = []
    calls = Calls()

    def book() -> int:
        calls.count += 1
        attempt = calls.count
        item = Item.objects.create(name="parent")
        transaction.on_commit(lambda: ran.append(attempt))
        parent = item.pk if attempt > 1 else -1  # the first COMMIT fails its deferred check
        with connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO scenario_child (parent_id) VALUES (%s)", [parent])
        return item.pk

    proxy.swallow_reply("COMMIT")

    retry_atomic(book)

    assert calls.count == 2
    assert ran == [2]  # the committed attempt's callback, once; none for the aborted one


def test_on_commit_callback_of_a_savepoint_rolled_back_inside_the_function_does_not_run(proxy):
    ran = []

    def book() -> None:
        transaction.on_commit(lambda: ran.append("kept"))
        with pytest.raises(RuntimeError), transaction.atomic():
            transaction.on_commit(lambda: ran.append("rolled back"))
            raise RuntimeError
        Item.objects.create(name="x")

    proxy.swallow_reply("COMMIT")
    retry_atomic(book)

    assert ran == ["kept"]


def test_set_rollback_inside_the_function_returns_like_atomic_with_nothing_committed(server):
    def book() -> str:
        Item.objects.create(name="discarded")
        transaction.set_rollback(True)
        return "rolled back"

    assert retry_atomic(book) == "rolled back"
    assert item_names(server) == []


def test_set_rollback_with_a_lost_commit_reply_is_not_a_lost_commit(proxy, server):
    """No COMMIT is sent for a block marked for rollback, so nothing can be lost there."""

    def book() -> str:
        Item.objects.create(name="discarded")
        transaction.set_rollback(True)
        return "rolled back"

    proxy.swallow_reply("COMMIT")
    assert retry_atomic(book) == "rolled back"
    assert item_names(server) == []


def test_a_swallowed_error_behaves_as_in_atomic(server):
    def swallow() -> str:
        Item.objects.create(name="before")
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        except DatabaseError:
            pass
        return "swallowed"

    outcomes = []
    for runner in (lambda f: _in_atomic(f), retry_atomic):
        try:
            outcomes.append(("returned", runner(swallow)))
        except Exception as error:
            outcomes.append(("raised", type(error)))
        outcomes.append(("rows", item_names(server)))
        server.execute("TRUNCATE app_item", dbname="app")

    assert outcomes[:2] == outcomes[2:]


def _in_atomic(func):
    with transaction.atomic():
        return func()


def test_a_notify_only_transaction_with_a_lost_commit_reply_notifies_once(proxy, server):
    from tests.faults import run

    run("LISTEN scenario_jobs", using="direct")
    connections["direct"].close()  # the listener below has its own session
    listener = _Listener(server)

    def notify() -> str:
        run("NOTIFY scenario_jobs, 'job-1'")
        return "notified"

    fired = proxy.swallow_reply("COMMIT")
    try:
        assert retry_atomic(notify) == "notified"
        assert fired.is_set()
        assert listener.payloads() == ["job-1"]
    finally:
        listener.close()


class _Listener:
    """A plain driver session that LISTENs, outside Django."""

    def __init__(self, server) -> None:
        self.connection: Any  # a psycopg 3 or a psycopg2 connection
        if drivers.IS_PSYCOPG3:
            import psycopg

            self.connection = psycopg.connect(server.dsn("app"), autocommit=True)
        else:
            import psycopg2

            self.connection = psycopg2.connect(server.dsn("app"))
            self.connection.autocommit = True
        drivers.execute(self.connection, "LISTEN scenario_jobs")

    def payloads(self) -> list[str]:
        import time as _time

        _time.sleep(0.3)
        if drivers.IS_PSYCOPG3:
            return [n.payload for n in self.connection.notifies(timeout=0.5, stop_after=5)]
        self.connection.poll()
        return [n.payload for n in self.connection.notifies]

    def close(self) -> None:
        self.connection.close()


def test_a_lost_commit_reply_answered_by_another_server_is_outcome_unknown(proxy, server):
    """After a failover the id names another transaction, or none: never trust it there."""
    from django_postgresql_reconnect import signals
    from django_postgresql_reconnect.testing import PostgresServer
    from tests.conftest import PASSWORD

    other = PostgresServer(auth="password", password=PASSWORD)
    other.start()
    try:
        other.create_database("app")
        other.execute("CREATE TABLE app_item (LIKE pg_class)", dbname="app")

        def move(connection, **kwargs: object) -> None:
            connection.settings_dict["HOST"] = other.host
            connection.settings_dict["PORT"] = other.port

        calls = Calls()

        def book() -> None:
            calls.count += 1
            Item.objects.create(name="maybe")

        Item.objects.count()
        proxy.swallow_reply("COMMIT")
        signals.pre_reconnect.connect(move)
        try:
            with pytest.raises(CommitOutcomeUnknown) as caught:
                retry_atomic(book)
        finally:
            signals.pre_reconnect.disconnect(move)
            wrapper = connections["default"]
            wrapper.close()
            wrapper.settings_dict["HOST"] = proxy.host
            wrapper.settings_dict["PORT"] = proxy.port
        assert "another server" in str(caught.value)
        assert calls.count == 1
        assert item_names(server) == ["maybe"]
    finally:
        other.close()


def test_async_twin_resolves_a_lost_commit_reply(proxy, server):
    import asyncio

    from django_postgresql_reconnect import aretry_atomic

    calls = Calls()

    def book() -> str:
        calls.count += 1
        Item.objects.create(name="async")
        return "receipt"

    fired = proxy.swallow_reply("COMMIT")

    assert asyncio.run(aretry_atomic(book)) == "receipt"
    assert fired.is_set()
    assert calls.count == 1
    assert item_names(server) == ["async"]
