"""What a session held when its connection died: settings come back, the rest is reported once.

A silent reconnect would let the application believe it still holds an advisory lock (or is
still listening, or still has its temporary table): that loss is said, once, with
``SessionStateLost``. Session settings (SET, set_config(..., false), SET ROLE) are replayed on
the new connection instead, so that a tenant's search_path survives a reconnect.
"""

from __future__ import annotations

import pytest
from django.db import OperationalError, connections, transaction

from django_postgresql_reconnect import (
    SessionStateLost,
    StatementOutcomeUnknown,
    TransactionLost,
    signals,
)
from tests.app.models import Item
from tests.faults import backend_pid, item_names, lose_connection, run, setting

LOCK_KEY = 4242


def advisory_lock_holders(server) -> list[tuple[str, ...]]:
    return server.execute(
        f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = {LOCK_KEY}",
        dbname="app",
    )


# --- State a new connection cannot be given: reported once ------------------------------------


def test_lost_advisory_lock_raises_session_state_lost_once_then_works(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    assert len(advisory_lock_holders(server)) == 1
    lose_connection(server)

    with pytest.raises(SessionStateLost) as caught:
        Item.objects.count()

    assert isinstance(caught.value, OperationalError)
    assert caught.value.alias == "default"
    assert "advisory lock" in str(caught.value)
    assert caught.value.session_state == ("an advisory lock",)
    assert advisory_lock_holders(server) == []  # nobody holds it: the caller must know
    assert Item.objects.count() == 0  # once: the next statement runs on a new connection


def test_after_session_state_lost_a_later_termination_is_hidden_again(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    lose_connection(server)
    with pytest.raises(SessionStateLost):
        Item.objects.count()
    first_pid = backend_pid()

    lose_connection(server)

    assert Item.objects.count() == 0
    assert backend_pid() != first_pid


def test_write_after_lost_advisory_lock_is_not_run(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    lose_connection(server)

    with pytest.raises(SessionStateLost):
        Item.objects.create(name="guarded by the lock")

    assert item_names(server) == []


def test_atomic_block_entered_after_lost_advisory_lock_raises_and_writes_nothing(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    lose_connection(server)

    with pytest.raises(SessionStateLost), transaction.atomic():
        Item.objects.create(name="guarded by the lock")

    assert item_names(server) == []
    with transaction.atomic():
        Item.objects.create(name="next")
    assert item_names(server) == ["next"]


def test_advisory_lock_lost_inside_a_transaction_raises_both_facts(server):
    with pytest.raises(TransactionLost) as caught, transaction.atomic():
        run(f"SELECT pg_advisory_lock({LOCK_KEY})")
        Item.objects.create(name="a")
        server.terminate_backends(pid=backend_pid())
        Item.objects.create(name="b")

    assert isinstance(caught.value, SessionStateLost)
    assert "advisory lock" in str(caught.value)
    assert item_names(server) == []
    Item.objects.create(name="after")
    assert item_names(server) == ["after"]


UNRESTORABLE = {
    "advisory lock": f"SELECT pg_advisory_lock({LOCK_KEY})",
    "shared advisory lock": f"SELECT pg_advisory_lock_shared({LOCK_KEY})",
    "try advisory lock, lower case": f"select pg_try_advisory_lock({LOCK_KEY})",
    "advisory lock, upper case": f"SELECT PG_ADVISORY_LOCK({LOCK_KEY})",
    "advisory lock, schema-qualified": f"SELECT pg_catalog.pg_advisory_lock({LOCK_KEY})",
    "advisory lock after a comment": f"/* job 7 */ SELECT pg_advisory_lock({LOCK_KEY})",
    "advisory lock after a line comment": f"-- job 7\nSELECT pg_advisory_lock({LOCK_KEY})",
    "LISTEN": "LISTEN scenario_channel",
    "listen, lower case": "listen scenario_channel",
    "temporary table": "CREATE TEMP TABLE scenario_scratch (id integer)",
    "temporary table, long form": "CREATE TEMPORARY TABLE scenario_scratch (id integer)",
    "temporary view": "CREATE TEMP VIEW scenario_view AS SELECT 1 AS one",
    "temporary sequence": "CREATE TEMPORARY SEQUENCE scenario_seq",
    "table in pg_temp": "CREATE TABLE pg_temp.scenario_scratch (id integer)",
    "SELECT INTO TEMP": "SELECT 1 AS one INTO TEMP scenario_scratch",
    "select into temporary, lower case": "select 1 as one into temporary scenario_scratch",
    "prepared statement": "PREPARE scenario_plan AS SELECT 1",
    "held cursor": "DECLARE scenario_cursor CURSOR WITH HOLD FOR SELECT 1",
    "random seed": "SELECT setseed(0.5)",
}


@pytest.mark.parametrize("statement", UNRESTORABLE.values(), ids=UNRESTORABLE.keys())
def test_each_spelling_of_unrestorable_state_is_reported_when_lost(server, statement):
    run(statement)
    lose_connection(server)

    with pytest.raises(SessionStateLost):
        Item.objects.count()

    assert Item.objects.count() == 0


def test_composed_sql_taking_an_advisory_lock_is_reported_when_lost(server):
    sql = _sql_module()
    run(sql.SQL("SELECT pg_advisory_lock({})").format(sql.Literal(LOCK_KEY)))
    lose_connection(server)

    with pytest.raises(SessionStateLost):
        Item.objects.count()


def test_callproc_taking_an_advisory_lock_is_reported_when_lost(server):
    with connections["default"].cursor() as cursor:
        cursor.callproc("pg_advisory_lock", [LOCK_KEY])
    lose_connection(server)

    with pytest.raises(SessionStateLost):
        Item.objects.count()


def test_dblink_connection_is_reported_when_lost(server):
    server.execute("CREATE EXTENSION IF NOT EXISTS dblink", dbname="app")
    run("SELECT dblink_connect_u('scenario_link', %s)", [server.dsn("app")])
    lose_connection(server)

    with pytest.raises(SessionStateLost) as caught:
        Item.objects.count()
    assert "dblink" in str(caught.value)


@pytest.mark.parametrize(
    "release",
    [
        "SELECT pg_advisory_unlock_all()",
        "DISCARD ALL",
    ],
)
def test_state_released_by_the_application_is_not_reported(server, release):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    run(release)
    lose_connection(server)

    assert Item.objects.count() == 0


def test_unlisten_of_every_channel_clears_listen(server):
    run("LISTEN one")
    run("LISTEN two")
    run("UNLISTEN one")
    run("UNLISTEN two")
    lose_connection(server)

    assert Item.objects.count() == 0


@pytest.mark.parametrize(
    "statement",
    [
        f"SELECT pg_advisory_xact_lock({LOCK_KEY})",
        "SET LOCAL statement_timeout = '5min'",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SELECT set_config('statement_timeout', '5min', true)",
    ],
)
def test_transaction_scoped_state_ends_with_its_transaction_and_is_not_reported(server, statement):
    with transaction.atomic():
        run(statement)
        Item.objects.create(name="a")
    lose_connection(server)

    assert Item.objects.count() == 1


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TEMP TABLE scenario_scratch (id integer)",
        "LISTEN scenario_channel",
        "DECLARE scenario_cursor CURSOR WITH HOLD FOR SELECT 1",
    ],
)
def test_transactional_state_of_a_rolled_back_transaction_is_not_reported(server, statement):
    with transaction.atomic():
        run(statement)
        transaction.set_rollback(True)
    lose_connection(server)

    assert Item.objects.count() == 0


def test_advisory_lock_taken_in_a_rolled_back_transaction_is_still_reported(server):
    """Session advisory locks are not transactional: a rollback keeps the lock."""
    with transaction.atomic():
        run(f"SELECT pg_advisory_lock({LOCK_KEY})")
        transaction.set_rollback(True)
    assert len(advisory_lock_holders(server)) == 1
    lose_connection(server)

    with pytest.raises(SessionStateLost):
        Item.objects.count()


def test_connection_closed_by_django_starts_without_session_state(server):
    """A deliberate close() drops the state with the session: the application asked for it."""
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    connections["default"].close()
    Item.objects.count()
    lose_connection(server)

    assert Item.objects.count() == 0


def test_transaction_lost_without_session_state_is_not_reported_as_session_state(server):
    with pytest.raises(TransactionLost) as caught, transaction.atomic():
        Item.objects.create(name="a")
        server.terminate_backends(pid=backend_pid())
        Item.objects.create(name="b")

    assert not isinstance(caught.value, SessionStateLost)


# --- Every path that replaces a connection honours the flag -------------------------------------


def test_lost_state_found_by_close_if_unusable_is_reported_at_the_next_statement(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    wrapper = connections["default"]
    lose_connection(server)
    wrapper.errors_occurred = True  # as after a failed request

    wrapper.close_if_unusable_or_obsolete()  # Django's request-end cleanup replaces it

    assert wrapper.connection is None
    with pytest.raises(SessionStateLost):
        Item.objects.count()
    assert Item.objects.count() == 0


def test_lost_state_found_at_commit_is_reported_with_the_lost_transaction(server):
    with pytest.raises(TransactionLost) as caught, transaction.atomic():
        run(f"SELECT pg_advisory_lock({LOCK_KEY})")
        Item.objects.create(name="a")
        lose_connection(server)
    assert isinstance(caught.value, SessionStateLost)
    assert item_names(server) == []


def test_lost_state_found_by_rollback_is_reported_at_the_next_statement(server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    with pytest.raises(RuntimeError), transaction.atomic():
        Item.objects.create(name="a")
        lose_connection(server)
        raise RuntimeError("the block fails; atomic() rolls back a dead connection")

    with pytest.raises(SessionStateLost):
        Item.objects.count()
    assert Item.objects.count() == 0


def test_lost_state_found_by_the_guard_is_reported_by_the_guard(server):
    from django_postgresql_reconnect import check_pgsql_connections

    Item.objects.count()  # the guard knows connections this thread opened
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    lose_connection(server)

    with pytest.raises(SessionStateLost):
        check_pgsql_connections()
    assert Item.objects.count() == 0


# --- Settings: restored on the new connection, without an exception ------------------------------

RESTORABLE = {
    "SET": ("SET statement_timeout = '5min'", "statement_timeout", "5min"),
    "set, lower case": ("set statement_timeout = '5min'", "statement_timeout", "5min"),
    "SET SESSION": ("SET SESSION work_mem = '8MB'", "work_mem", "8MB"),
    "SET ... TO": ("SET work_mem TO '8MB'", "work_mem", "8MB"),
    "SET after a comment": (
        "/* tenant */ SET search_path = tenant_a, public",
        "search_path",
        "tenant_a, public",
    ),
    "set_config(..., false)": (
        "SELECT set_config('search_path', 'tenant_a', false)",
        "search_path",
        "tenant_a",
    ),
    "SET_CONFIG upper case": (
        "SELECT SET_CONFIG('search_path', 'tenant_a', FALSE)",
        "search_path",
        "tenant_a",
    ),
    "SET SCHEMA": ("SET SCHEMA 'tenant_a'", "search_path", "tenant_a"),
    "SET TIME ZONE": ("SET TIME ZONE 'Europe/Paris'", "TimeZone", "Europe/Paris"),
    "SET ROLE": ("SET ROLE scenario_role", "role", "scenario_role"),
    "custom setting": ("SET app.tenant = 'acme'", "app.tenant", "acme"),
}


@pytest.fixture
def tenant_schema(server):
    server.execute("CREATE SCHEMA IF NOT EXISTS tenant_a", dbname="app")
    server.execute(
        "DO $$BEGIN CREATE ROLE scenario_role; EXCEPTION WHEN duplicate_object THEN END$$;"
        " GRANT scenario_role TO postgres;"
        " GRANT ALL ON ALL TABLES IN SCHEMA public TO scenario_role;"
        " GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO scenario_role",
        dbname="app",
    )


@pytest.mark.parametrize("statement,name,value", RESTORABLE.values(), ids=RESTORABLE.keys())
def test_each_spelling_of_a_session_setting_is_restored_after_a_loss(
    server, tenant_schema, statement, name, value
):
    run(statement)
    assert setting(name) == value
    lose_connection(server)

    assert setting(name) == value  # a new session, the same setting, no exception


def test_settings_are_replayed_in_order_and_the_last_one_wins(server, tenant_schema):
    run("SET search_path = public")
    run("SET statement_timeout = '1min'")
    run("SET search_path = tenant_a, public")
    run("RESET statement_timeout")
    lose_connection(server)

    assert setting("search_path") == "tenant_a, public"
    assert setting("statement_timeout") == "0"


def test_composed_set_is_restored(server, tenant_schema):
    sql = _sql_module()
    run(sql.SQL("SET search_path TO {}").format(sql.Identifier("tenant_a")))
    lose_connection(server)

    assert setting("search_path") == "tenant_a"


def test_set_config_with_parameters_is_restored(server, tenant_schema):
    run("SELECT set_config(%s, %s, false)", ["search_path", "tenant_a"])
    lose_connection(server)

    assert setting("search_path") == "tenant_a"


def test_a_write_after_the_restore_lands_in_the_tenants_schema(server, tenant_schema):
    """The multi-tenant case: a silent reconnect must not write into another tenant's schema."""
    server.execute(
        "CREATE TABLE IF NOT EXISTS tenant_a.app_item (LIKE public.app_item INCLUDING ALL)",
        dbname="app",
    )
    server.execute("TRUNCATE tenant_a.app_item", dbname="app")
    run("SET search_path = tenant_a")
    lose_connection(server)

    Item.objects.create(name="tenant row")

    assert item_names(server) == []
    assert server.execute("SELECT name FROM tenant_a.app_item", dbname="app") == [("tenant row",)]


def test_restored_settings_are_said_by_a_signal_with_names_and_no_values(server, tenant_schema):
    seen = []

    def on_restored(sender, alias, settings, **kwargs):
        seen.append((alias, settings))

    run("SET search_path = tenant_a")
    run("SET statement_timeout = '5min'")
    signals.session_restored.connect(on_restored)
    try:
        lose_connection(server)
        Item.objects.count()
    finally:
        signals.session_restored.disconnect(on_restored)

    assert seen == [("default", ["search_path", "statement_timeout"])]


def test_setting_made_in_a_rolled_back_transaction_is_not_restored(server, tenant_schema):
    with transaction.atomic():
        run("SET search_path = tenant_a")
        transaction.set_rollback(True)
    assert setting("search_path") != "tenant_a"  # PostgreSQL reverted it
    lose_connection(server)

    assert setting("search_path") != "tenant_a"


def test_setting_made_in_a_rolled_back_savepoint_is_not_restored(server, tenant_schema):
    with transaction.atomic():
        run("SET statement_timeout = '1min'")
        with pytest.raises(RuntimeError), transaction.atomic():
            run("SET search_path = tenant_a")
            raise RuntimeError("rolls the savepoint back")
    assert setting("search_path") != "tenant_a"
    lose_connection(server)

    assert setting("search_path") != "tenant_a"
    assert setting("statement_timeout") == "1min"


def test_setting_made_in_a_committed_transaction_is_restored(server, tenant_schema):
    with transaction.atomic():
        run("SET search_path = tenant_a")
    lose_connection(server)

    assert setting("search_path") == "tenant_a"


def test_discard_all_forgets_the_settings(server, tenant_schema):
    run("SET search_path = tenant_a")
    run("DISCARD ALL")
    lose_connection(server)

    assert setting("search_path") != "tenant_a"


def test_settings_and_lost_state_together_restore_one_and_report_the_other(server, tenant_schema):
    run("SET search_path = tenant_a")
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    lose_connection(server)

    with pytest.raises(SessionStateLost) as caught:
        Item.objects.count()
    assert caught.value.session_state == ("an advisory lock",)
    assert setting("search_path") == "tenant_a"


# --- The most important fact wins ----------------------------------------------------------------


def test_lost_insert_after_a_session_setting_is_outcome_unknown_not_session_state(proxy, server):
    run("SET application_name = 'w'")
    proxy.swallow_reply("INSERT")

    with pytest.raises(StatementOutcomeUnknown) as caught:
        Item.objects.create(name="once")

    assert not isinstance(caught.value, SessionStateLost)
    assert item_names(server) == ["once"]
    assert setting("application_name") == "w"  # restored on the next connection


def test_lost_insert_while_holding_a_lock_says_both_facts(proxy, server):
    run(f"SELECT pg_advisory_lock({LOCK_KEY})")
    proxy.swallow_reply("INSERT")

    with pytest.raises(StatementOutcomeUnknown) as caught:
        Item.objects.create(name="once")

    assert isinstance(caught.value, SessionStateLost)
    message = str(caught.value)
    assert "may or may not have applied" in message
    assert "advisory lock" in message
    assert "nothing was run again" not in message
    assert item_names(server) == ["once"]
    assert Item.objects.count() == 1  # reported once


def _sql_module():
    from django_postgresql_reconnect import drivers

    if drivers.IS_PSYCOPG3:
        from psycopg import sql
    else:
        from psycopg2 import sql  # type: ignore[no-redef]
    return sql
