"""Reading SQL the way PostgreSQL does: no spelling can hide a write or a session effect."""

from __future__ import annotations

import pytest

from django_postgresql_reconnect import statements as st
from django_postgresql_reconnect.session import SessionLog
from django_postgresql_reconnect.statements import effects_of, facts_of, tokenize


def kinds(sql):
    return [e.kind for e in effects_of(sql)]


def test_literals_comments_and_quoted_names_hide_nothing_and_fake_nothing():
    words = [t.text for t in tokenize("SELECT 'DELETE' /* INSERT */ -- UPDATE\n, \"MERGE\"")]
    assert words == ["SELECT", "DELETE", ",", "MERGE"]
    kinds_of = [t.kind for t in tokenize("SELECT 'DELETE', \"MERGE\", $$ x $$, E'\\''")]
    assert kinds_of == ["word", "string", "punct", "quoted", "punct", "string", "punct", "string"]


def test_nested_block_comments_and_dollar_quotes_are_skipped_whole():
    tokens = [t.text for t in tokenize("/* a /* b */ c */ SELECT $tag$ ; DELETE $tag$")]
    assert tokens == ["SELECT", " ; DELETE "]


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT "app_item"."id" FROM "app_item" WHERE "app_item"."name" = %s',
        "  select count(*) from t",
        "-- comment\nSELECT 1",
        "/* tag */ SELECT 1",
        "(SELECT 1) UNION (SELECT 2)",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "WITH x (a) AS (SELECT 1) SELECT * FROM x",
        "SHOW server_version",
        "EXPLAIN SELECT 1",
        "VALUES (1), (2)",
        "TABLE t",
        "SELECT 1;",
        "SELECT 'DELETE FROM t'",
        'SELECT "update" FROM t',
        "SELECT * FROM t FETCH FIRST 10 ROWS ONLY",
    ],
)
def test_plain_reads_are_read_shaped(sql):
    assert facts_of(sql).read_shaped


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET v = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        "SELECT * INTO new_table FROM t",
        "with d as (delete from t returning *) select * from d",
        "WITH u AS (UPDATE t SET v = 1 RETURNING *) SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT 1",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT 1; DELETE FROM t",
        "SELECT 1; SELECT 2",
        "COPY t FROM STDIN",
        "CALL proc()",
        "DO $$ BEGIN PERFORM 1; END $$",
        "LOCK TABLE t",
        "",
    ],
)
def test_writes_locks_and_several_statements_are_not_read_shaped(sql):
    assert not facts_of(sql).read_shaped


@pytest.mark.parametrize(
    "sql,called",
    [
        ("SELECT f()", {(None, "f")}),
        ("SELECT F()", {(None, "f")}),
        ('SELECT "F"()', {(None, "F")}),
        ("SELECT myschema.f(1)", {("myschema", "f")}),
        ('SELECT COUNT(*) AS "__count" FROM "app_item"', {(None, "count")}),
        ("SELECT COALESCE(a, b), CAST(x AS numeric(10, 2)), x::varchar(3) FROM t", set()),
        ("SELECT * FROM generate_series(1, 3) AS g(n)", {(None, "generate_series")}),
        ("WITH c (a, b) AS (SELECT 1, 2) SELECT * FROM c", set()),
        ("SELECT x FROM t WHERE y IN (1, 2) AND EXISTS (SELECT 1)", set()),
        ("SELECT pgmq.send('q', '{}')", {("pgmq", "send")}),
        ("SELECT 'f()'", set()),
    ],
)
def test_function_calls_are_found_however_they_are_spelled(sql, called):
    assert set(facts_of(sql).functions) == called


def test_a_statement_that_ends_a_transaction_is_marked():
    assert facts_of("INSERT INTO t VALUES (1); COMMIT").ends_transaction
    assert not facts_of("ROLLBACK TO SAVEPOINT s1").ends_transaction
    assert not facts_of("SAVEPOINT s1").ends_transaction


@pytest.mark.parametrize(
    "sql,expected",
    [
        ("SELECT pg_advisory_lock(42)", [st.ADVISORY_LOCK]),
        ("SELECT PG_ADVISORY_LOCK(42)", [st.ADVISORY_LOCK]),
        ("/* x */ select pg_try_advisory_lock_shared(1)", [st.ADVISORY_LOCK]),
        ("SELECT pg_advisory_xact_lock(42)", []),
        ("SELECT pg_advisory_unlock_all()", [st.UNLOCK_ALL]),
        ("LISTEN jobs", [st.LISTEN]),
        ("UNLISTEN *", [st.UNLISTEN]),
        ("SET statement_timeout = 1000", [st.SETTING]),
        ("/* t */ set search_path to x", [st.SETTING]),
        ("SET SESSION work_mem = '8MB'", [st.SETTING]),
        ("SET LOCAL statement_timeout = 10", []),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", []),
        ("SET CONSTRAINTS ALL DEFERRED", []),
        ("RESET ALL", [st.RESET_ALL]),
        ("SELECT set_config('search_path', 'a', false)", [st.SETTING]),
        ("SELECT SET_CONFIG('search_path', 'a', FALSE)", [st.SETTING]),
        ("SELECT set_config('search_path', 'a', true)", []),
        ("SELECT set_config(%s, %s, %s)", [st.SETTING]),
        ("SELECT set_config('a', 'b', false), f()", [st.SETTING_IN_LARGER_STATEMENT]),
        ("CREATE TEMP TABLE x (i int)", [st.TEMPORARY]),
        ("create temporary table x (i int)", [st.TEMPORARY]),
        ("CREATE TEMP VIEW v AS SELECT 1", [st.TEMPORARY]),
        ("CREATE TEMPORARY SEQUENCE s", [st.TEMPORARY]),
        ("CREATE TABLE pg_temp.x (i int)", [st.TEMPORARY]),
        ("CREATE TABLE x (i int)", []),
        ("SELECT 1 INTO TEMP x", [st.TEMPORARY]),
        ("SELECT 1 INTO pg_temp.x", [st.TEMPORARY]),
        ("PREPARE p AS SELECT 1", [st.PREPARED]),
        ("PREPARE TRANSACTION 'x'", [st.COMMIT]),
        ("DEALLOCATE ALL", [st.DEALLOCATE]),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", [st.HELD_CURSOR]),
        ("DECLARE c CURSOR FOR SELECT 1", []),
        ("CLOSE ALL", [st.CLOSE_CURSOR]),
        ("SELECT dblink_connect('c', 'dbname=x')", [st.DBLINK]),
        ("DISCARD ALL", [st.DISCARD_ALL]),
        ("SAVEPOINT s1", [st.SAVEPOINT]),
        ('RELEASE SAVEPOINT "s1"', [st.RELEASE]),
        ("ROLLBACK TO SAVEPOINT s1", [st.ROLLBACK_TO]),
        ("ROLLBACK", [st.ROLLBACK]),
        ("COMMIT AND CHAIN", [st.COMMIT, st.BEGIN]),
        ("NOTIFY jobs", [st.NOTIFY]),
        ("SELECT pg_notify('jobs', 'x')", [st.NOTIFY]),
        ('SELECT "app_item"."id" FROM "app_item"', []),
        ('INSERT INTO "app_item" ("name") VALUES (%s)', []),
        ('UPDATE "t" SET "settings" = 1 OFFSET', []),
        ("SELECT 'SET search_path = x'", []),
    ],
)
def test_session_and_transaction_effects_are_read_from_any_spelling(sql, expected):
    assert kinds(sql) == expected


def log_of(*statements, in_transaction=False):
    log = SessionLog()
    for sql in statements:
        log.record(effects_of(sql), sql, None, in_transaction=in_transaction)
    return log


def test_session_log_keeps_the_last_statement_per_setting_in_order():
    log = log_of("SET search_path = a", "SET work_mem = '8MB'", "SET search_path = b")
    assert log.replay() == [("SET work_mem = '8MB'", None), ("SET search_path = b", None)]


def test_session_log_forgets_a_reset_setting_and_everything_on_reset_all():
    assert log_of("SET search_path = a", "RESET search_path").replay() == []
    assert log_of("SET ROLE r", "SET search_path = a", "RESET ALL").setting_names() == ["role"]


def test_session_log_folds_a_transaction_only_when_it_commits():
    log = log_of("SET search_path = a", "LISTEN c", in_transaction=True)
    assert log.replay() == [] and log.lost_state() == ()
    log.commit()
    assert log.setting_names() == ["search_path"]
    assert log.lost_state() == ("LISTEN on 'c'",)


def test_session_log_drops_what_a_rolled_back_savepoint_did():
    log = SessionLog()
    for sql in ["SET work_mem = '1MB'", "SAVEPOINT s1", "SET search_path = a", "ROLLBACK TO s1"]:
        log.record(effects_of(sql), sql, None, in_transaction=True)
    log.commit()
    assert log.setting_names() == ["work_mem"]


def test_session_log_counts_advisory_locks_at_once_even_in_a_transaction():
    log = log_of("SELECT pg_advisory_lock(1)", in_transaction=True)
    log.rollback()
    assert log.lost_state() == ("an advisory lock",)


def test_session_log_after_loss_carries_settings_only():
    log = log_of("SET search_path = a", "SELECT pg_advisory_lock(1)")
    carried = log.after_loss()
    assert carried.setting_names() == ["search_path"]
    assert carried.lost_state() == ()


def test_set_config_named_by_a_parameter_is_keyed_by_its_value():
    log = SessionLog()
    sql = "SELECT set_config(%s, %s, false)"
    log.record(effects_of(sql), sql, ["search_path", "a"], in_transaction=False)
    log.record(effects_of(sql), sql, ["search_path", "b"], in_transaction=False)
    assert log.replay() == [(sql, ["search_path", "b"])]
