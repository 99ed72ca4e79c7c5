"""The server executed the statement but its reply never arrived: never guess, never repeat."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connections, transaction
from django.db.models import IntegerField

from django_postgresql_reconnect import (
    CommitOutcomeUnknown,
    StatementOutcomeUnknown,
    TransactionLost,
    no_retry,
)
from tests.app.models import Item
from tests.faults import item_names, run


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


# --- A SELECT can write: the server decides (rule 2) -------------------------------------------


@pytest.fixture
def writing_functions(server):
    server.execute(
        "CREATE OR REPLACE FUNCTION scenario_record(t text) RETURNS integer VOLATILE"
        " LANGUAGE sql AS $$ INSERT INTO app_item (name, value) VALUES (t, 0) RETURNING 1 $$;"
        " CREATE TABLE IF NOT EXISTS scenario_queue (id serial PRIMARY KEY, body text);"
        " CREATE OR REPLACE FUNCTION scenario_pop() RETURNS text VOLATILE LANGUAGE sql AS"
        " $$ DELETE FROM scenario_queue WHERE id = (SELECT min(id) FROM scenario_queue)"
        " RETURNING body $$;"
        " CREATE OR REPLACE FUNCTION scenario_peek() RETURNS text STABLE LANGUAGE sql AS"
        " $$ SELECT body FROM scenario_queue ORDER BY id LIMIT 1 $$;"
        " CREATE OR REPLACE VIEW scenario_recording_view AS SELECT scenario_record('view') AS r;"
        " TRUNCATE scenario_queue",
        dbname="app",
    )


def test_select_of_a_function_that_writes_is_not_run_again(proxy, server, writing_functions):
    Item.objects.count()
    proxy.swallow_reply("scenario_record")

    with pytest.raises(StatementOutcomeUnknown) as caught:
        run("SELECT scenario_record(%s)", ["once"])

    assert "VOLATILE" in str(caught.value)
    assert item_names(server) == ["once"]  # 2 rows would be a write applied twice


def test_select_of_a_function_that_writes_spelled_in_upper_case_is_not_run_again(
    proxy, server, writing_functions
):
    Item.objects.count()
    proxy.swallow_reply("SCENARIO_RECORD")

    with pytest.raises(StatementOutcomeUnknown):
        run("SELECT SCENARIO_RECORD(%s)", ["once"])

    assert item_names(server) == ["once"]


def test_a_queue_pop_whose_reply_is_lost_is_not_popped_twice(proxy, server, writing_functions):
    server.execute("INSERT INTO scenario_queue (body) VALUES ('job-1'), ('job-2')", dbname="app")
    Item.objects.count()
    proxy.swallow_reply("scenario_pop")

    with pytest.raises(StatementOutcomeUnknown):
        run("SELECT scenario_pop()")

    assert server.execute("SELECT body FROM scenario_queue", dbname="app") == [("job-2",)]


def test_a_stable_function_read_whose_reply_is_lost_is_run_again(proxy, writing_functions, server):
    server.execute("INSERT INTO scenario_queue (body) VALUES ('job-1')", dbname="app")
    Item.objects.count()
    fired = proxy.swallow_reply("scenario_peek")

    assert run("SELECT scenario_peek()") == [("job-1",)]
    assert fired.is_set()


def test_a_view_over_a_function_that_writes_is_not_read_again(proxy, server, writing_functions):
    Item.objects.count()
    proxy.swallow_reply("scenario_recording_view")

    with pytest.raises(StatementOutcomeUnknown):
        run("SELECT * FROM scenario_recording_view")

    assert item_names(server) == ["view"]


def test_a_function_labelled_stable_that_writes_is_refused_its_re_run_by_the_server(
    proxy, server, writing_functions
):
    """pg_proc says STABLE, yet it writes through a VOLATILE function: the read-only
    transaction of the re-run (rule 2's safety net) makes the server refuse the second write."""
    server.execute(
        "CREATE OR REPLACE FUNCTION scenario_mislabelled(t text) RETURNS integer STABLE"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN scenario_record(t); END $$",
        dbname="app",
    )
    Item.objects.count()
    proxy.swallow_reply("scenario_mislabelled")

    with pytest.raises(StatementOutcomeUnknown) as caught:
        run("SELECT scenario_mislabelled(%s)", ["once"])

    assert "read-only transaction" in str(caught.value)
    assert item_names(server) == ["once"]
    assert run("SELECT 1") == [(1,)]  # the connection is usable after the refused re-run


def test_orm_reads_with_aggregates_casts_and_json_still_run_again(proxy, server):
    from django.db.models import Count, F, Max, Sum, Value
    from django.db.models.functions import Cast, Coalesce, Lower

    Item.objects.create(name="a", value=1)
    query = Item.objects.annotate(
        lowered=Lower("name"),
        doubled=Cast(F("value") * 2, output_field=IntegerField()),
    ).aggregate(n=Count("id"), total=Coalesce(Sum("value"), Value(0)), top=Max("doubled"))
    assert query == {"n": 1, "total": 1, "top": 2}
    fired = proxy.swallow_reply("COUNT")

    again = Item.objects.annotate(
        lowered=Lower("name"),
        doubled=Cast(F("value") * 2, output_field=IntegerField()),
    ).aggregate(n=Count("id"), total=Coalesce(Sum("value"), Value(0)), top=Max("doubled"))

    assert again == query
    assert fired.is_set()


def test_pg_logical_slot_get_changes_is_not_consumed_twice(logical_server):
    """Consuming a replication slot is a write the server makes without a table."""
    from tests.faults import add_database, remove_database

    server, proxy = logical_server
    server.execute("CREATE TABLE IF NOT EXISTS t (id int)")
    server.execute("SELECT pg_create_logical_replication_slot('scenario_slot', 'test_decoding')")
    server.execute("INSERT INTO t VALUES (1)")
    entry = server.database_settings(engine="django_postgresql_reconnect.backend")
    entry.update(HOST=proxy.host, PORT=proxy.port, OPTIONS={"sslmode": "disable"})
    add_database("logical", entry)
    try:
        run("SELECT 1", using="logical")
        proxy.swallow_reply("pg_logical_slot_get_changes")
        with pytest.raises(StatementOutcomeUnknown):
            run(
                "SELECT data FROM pg_logical_slot_get_changes('scenario_slot', NULL, NULL)",
                using="logical",
            )
        statements = [s for s in proxy.statements if s.startswith("SELECT data FROM pg_logical")]
        assert len(statements) == 1  # consumed once, never asked again
    finally:
        remove_database("logical")


@pytest.fixture
def logical_server():
    from django_postgresql_reconnect.testing import FaultProxy, PostgresServer

    with (
        PostgresServer(settings={"wal_level": "logical", "max_replication_slots": "4"}) as server,
        FaultProxy(server.host, server.port) as proxy,
    ):
        yield server, proxy


# --- Parameters that can be consumed only once (rule 12) ----------------------------------------


def test_executemany_over_a_generator_reset_mid_batch_in_a_fresh_transaction_loses_no_row(
    proxy, server
):
    Item.objects.count()
    proxy.swallow_reply("row-07")
    rows = ((f"row-{i:02d}",) for i in range(20))

    with transaction.atomic(), connections["default"].cursor() as cursor:
        cursor.executemany("INSERT INTO app_item (name, value) VALUES (%s, 0)", rows)

    assert item_names(server) == [f"row-{i:02d}" for i in range(20)]


# --- no_retry() holds in transactions and in async code ---------------------------------------


def test_no_retry_is_honoured_for_the_first_statement_of_a_transaction(proxy, server):
    Item.objects.count()
    proxy.swallow_reply("INSERT")

    with pytest.raises(StatementOutcomeUnknown), no_retry(), transaction.atomic():
        Item.objects.create(name="once")

    assert item_names(server) == []  # rolled back with the connection, and not run again


def test_no_retry_is_honoured_by_async_orm_calls(proxy):
    import asyncio

    async def count() -> int:
        with no_retry():
            return await Item.objects.acount()

    asyncio.run(Item.objects.acount())  # the ORM's thread holds a warm connection
    proxy.swallow_reply("COUNT")

    with pytest.raises(StatementOutcomeUnknown):
        asyncio.run(count())
