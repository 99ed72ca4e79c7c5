"""The safety model's rules, each alone: pure logic, no server."""

from __future__ import annotations

import random

import pytest

from django_postgresql_reconnect.backoff import Backoff, Breaker, BreakerOpen
from django_postgresql_reconnect.policy import (
    Recovery,
    connect_failure_is_transient,
    creates_session_state,
    decide_after_loss,
    is_connection_lost,
    refused_by_read_only_node,
    statement_is_read_only,
)


@pytest.mark.parametrize("sqlstate", ["08000", "08003", "08006", "57P01", "57P02", "57P03"])
def test_connection_class_sqlstates_mean_lost(sqlstate):
    assert is_connection_lost(sqlstate, connection_broken=False)


@pytest.mark.parametrize("sqlstate", ["57014", "40001", "40P01", "23505", "22012", "42P01", None])
def test_timeouts_conflicts_and_data_errors_pass_through(sqlstate):
    assert not is_connection_lost(sqlstate, connection_broken=False)


def test_a_broken_driver_connection_means_lost_whatever_the_sqlstate():
    assert is_connection_lost(None, connection_broken=True)


@pytest.mark.parametrize(
    "message",
    [
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
        "server closed the connection unexpectedly",
        "timeout expired",
        'connection to server at "h" failed: FATAL:  the database system is starting up',
        "connection failed: FATAL:  sorry, too many clients already",
        "FATAL:  the database system is in recovery mode",
    ],
)
def test_network_failures_and_servers_that_are_starting_are_retried(message):
    assert connect_failure_is_transient(message)


@pytest.mark.parametrize(
    "message",
    [
        'failed: FATAL:  password authentication failed for user "app"',
        'failed: FATAL:  database "nodb" does not exist',
        'failed: FATAL:  no pg_hba.conf entry for host "1.2.3.4"',
        'failed: FATAL:  role "ghost" does not exist',
    ],
)
def test_server_rejections_are_not_retried(message):
    assert not connect_failure_is_transient(message)


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT "app_item"."id" FROM "app_item" WHERE "app_item"."name" = %s',
        "  select count(*) from t",
        "-- comment\nSELECT 1",
        "/* tag */ SELECT 1",
        "(SELECT 1) UNION (SELECT 2)",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SHOW server_version",
        "EXPLAIN SELECT 1",
        "VALUES (1), (2)",
        "SELECT 1;",
    ],
)
def test_plain_reads_may_run_again(sql):
    assert statement_is_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET v = 1",
        "DELETE FROM t",
        "SELECT * INTO new_table FROM t",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "WITH u AS (UPDATE t SET v = 1 RETURNING *) SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT 1",
        "SELECT nextval('s')",
        "SELECT setval('s', 1)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock(1)",
        "SELECT pg_notify('c', 'x')",
        "SELECT lo_unlink(1)",
        "SELECT 1; DELETE FROM t",
        "COPY t FROM STDIN",
        "CALL proc()",
        b"SELECT 1",
        "",
    ],
)
def test_writes_locks_and_side_effects_never_run_again(sql):
    assert not statement_is_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_advisory_lock(42)",
        "select pg_try_advisory_lock(1)",
        "LISTEN jobs",
        "SET statement_timeout = 1000",
        "set search_path to x",
        "CREATE TEMP TABLE x (i int)",
        "CREATE TEMPORARY TABLE x (i int)",
        "PREPARE p AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    ],
)
def test_statements_that_create_session_state_are_noticed(sql):
    assert creates_session_state(sql)


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT "app_item"."id" FROM "app_item"',
        'INSERT INTO "app_item" ("name") VALUES (%s)',
        "SELECT pg_advisory_xact_lock(1)",
        "SET LOCAL statement_timeout = 10",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET CONSTRAINTS ALL DEFERRED",
        'UPDATE "t" SET "settings" = 1',
    ],
)
def test_ordinary_and_transaction_scoped_statements_are_not_session_state(sql):
    assert not creates_session_state(sql)


def _decide(**overrides):
    arguments = {
        "sent": True,
        "in_transaction": False,
        "transaction_started": False,
        "session_state": False,
        "read_only": False,
        "retry_reads": True,
        "server_side_cursor": False,
    }
    arguments.update(overrides)
    return decide_after_loss(**arguments)


def test_rule_1_anything_not_yet_sent_runs_on_a_new_connection():
    assert _decide(sent=False) == Recovery.RERUN


def test_rule_3_an_autocommit_read_runs_again_and_a_write_does_not():
    assert _decide(read_only=True) == Recovery.RERUN
    assert _decide(read_only=False) == Recovery.OUTCOME_UNKNOWN
    assert _decide(read_only=True, retry_reads=False) == Recovery.OUTCOME_UNKNOWN


def test_rule_4_a_transaction_is_reopened_only_before_its_first_acknowledgement():
    assert _decide(in_transaction=True, transaction_started=False) == Recovery.RERUN
    started = _decide(in_transaction=True, transaction_started=True, read_only=True)
    assert started == Recovery.TRANSACTION_LOST
    assert _decide(sent=False, in_transaction=True, transaction_started=True) == (
        Recovery.TRANSACTION_LOST
    )


def test_rule_6_a_server_side_cursor_is_never_restarted():
    assert _decide(read_only=True, server_side_cursor=True) == Recovery.RAISE


def test_session_state_is_reported_before_anything_else():
    assert _decide(sent=False, session_state=True) == Recovery.SESSION_STATE_LOST


def test_backoff_has_full_jitter_below_a_capped_exponential_bound():
    delays = Backoff(initial=0.1, maximum=1.0, rng=random.Random(7)).delays()
    drawn = [next(delays) for _ in range(50)]
    bounds = [min(1.0, 0.1 * 2**i) for i in range(50)]
    assert all(0 <= d <= b for d, b in zip(drawn, bounds, strict=True))
    assert len(set(drawn)) == 50


def test_breaker_fails_fast_in_cooldown_then_admits_one_probe_at_a_time():
    now = [100.0]
    breaker = Breaker(cooldown=5.0, clock=lambda: now[0])
    assert breaker.admit() is False
    breaker.record_failure()
    with pytest.raises(BreakerOpen) as caught:
        breaker.admit()
    assert caught.value.remaining == pytest.approx(5.0)
    now[0] += 5.0
    assert breaker.admit() is True  # the probe
    with pytest.raises(BreakerOpen):
        breaker.admit()  # others keep failing fast while it runs
    breaker.record_success()
    assert breaker.admit() is False


def test_breaker_with_zero_cooldown_never_opens():
    breaker = Breaker(cooldown=0)
    breaker.record_failure()
    assert breaker.admit() is False


def test_a_read_only_refusal_is_a_failover_only_when_several_hosts_are_configured():
    assert refused_by_read_only_node("25006", multi_host=True)
    assert not refused_by_read_only_node("25006", multi_host=False)
    assert not refused_by_read_only_node("23505", multi_host=True)
