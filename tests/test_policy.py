"""The safety model's rules, each alone: pure logic, no server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from django_postgresql_reconnect.backoff import Backoff, Breaker, BreakerOpen
from django_postgresql_reconnect.policy import (
    MAX_RERUNS,
    Loss,
    Outcome,
    Statement,
    connect_failure_is_transient,
    decide,
    decide_after_asking,
    is_connection_lost,
    refused_by_read_only_node,
)


@pytest.mark.parametrize("sqlstate", ["08000", "08003", "08006", "57P01", "57P02", "57P03"])
def test_rule_0_connection_class_sqlstates_mean_lost(sqlstate):
    assert is_connection_lost(sqlstate, connection_broken=False)


@pytest.mark.parametrize("sqlstate", ["57014", "40001", "40P01", "23505", "22012", "42P01", None])
def test_rule_0_timeouts_conflicts_and_data_errors_pass_through(sqlstate):
    assert not is_connection_lost(sqlstate, connection_broken=False)


def test_rule_0_a_broken_driver_connection_means_lost_whatever_the_sqlstate():
    assert is_connection_lost(None, connection_broken=True)


def loss(**facts):
    values: dict[str, Any] = {
        "statement": Statement.STATEMENT,
        "sent": True,
        "in_transaction": False,
        "transaction_started": False,
    }
    values.update(facts)
    return Loss(**values)


def test_rule_1_anything_not_yet_sent_runs_on_a_new_connection():
    assert decide(loss(sent=False)).outcome is Outcome.RUN_AGAIN
    assert decide(loss(sent=False, in_transaction=True)).outcome is Outcome.RUN_AGAIN


def test_rule_2_an_autocommit_read_asks_the_server_and_a_write_does_not_run_again():
    assert decide(loss(read_shaped=True)).outcome is Outcome.ASK_SERVER
    assert decide(loss(read_shaped=False)).outcome is Outcome.OUTCOME_UNKNOWN
    assert decide(loss(read_shaped=True, retry_allowed=False)).outcome is Outcome.OUTCOME_UNKNOWN


def test_rule_2_only_the_servers_yes_lets_a_read_run_again():
    read = loss(read_shaped=True)
    assert decide_after_asking(read, True).outcome is Outcome.RUN_AGAIN
    assert decide_after_asking(read, False).outcome is Outcome.OUTCOME_UNKNOWN
    assert decide_after_asking(read, None).outcome is Outcome.OUTCOME_UNKNOWN


def test_rule_3_an_unstarted_transaction_is_reopened_only_if_it_can_be_given_again():
    fresh = {"in_transaction": True, "transaction_started": False}
    assert decide(loss(**fresh)).outcome is Outcome.ASK_SERVER
    assert decide(loss(**fresh, retry_allowed=False)).outcome is Outcome.OUTCOME_UNKNOWN
    assert decide(loss(**fresh, replayable=False)).outcome is Outcome.TRANSACTION_LOST
    assert decide(loss(**fresh, ends_transaction=True)).outcome is Outcome.OUTCOME_UNKNOWN


def test_rule_4_never_replay_part_of_a_transaction():
    started = {"in_transaction": True, "transaction_started": True}
    assert decide(loss(**started, read_shaped=True)).outcome is Outcome.TRANSACTION_LOST
    assert decide(loss(**started, sent=False)).outcome is Outcome.TRANSACTION_LOST


def test_rule_5_lost_session_state_is_said_with_whatever_else_happened():
    state = ("an advisory lock",)
    assert decide(loss(sent=False, session_state=state)) == (
        decide(loss(sent=False, session_state=state)).__class__(Outcome.SESSION_STATE_LOST, state)
    )
    unknown = decide(loss(read_shaped=False, session_state=state))
    assert (unknown.outcome, unknown.session_state_lost) == (Outcome.OUTCOME_UNKNOWN, state)
    lost = decide(loss(in_transaction=True, transaction_started=True, session_state=state))
    assert (lost.outcome, lost.session_state_lost) == (Outcome.TRANSACTION_LOST, state)
    read = decide(loss(read_shaped=True, session_state=state))
    assert read.outcome is Outcome.SESSION_STATE_LOST  # a read wrote nothing


def test_rule_6_commit():
    assert decide(loss(statement=Statement.COMMIT, sent=False)).outcome is Outcome.TRANSACTION_LOST
    assert decide(loss(statement=Statement.COMMIT)).outcome is Outcome.COMMIT_OUTCOME_UNKNOWN


def test_rule_7_a_rollback_that_dies_needs_nothing_more():
    assert decide(loss(statement=Statement.ROLLBACK)).outcome is Outcome.NOTHING_TO_DO


def test_rule_9_reruns_are_capped():
    read = loss(read_shaped=True, reruns=MAX_RERUNS)
    assert decide(read).outcome is Outcome.UNAVAILABLE
    assert decide(loss(reruns=MAX_RERUNS)).outcome is Outcome.OUTCOME_UNKNOWN


def test_rule_11_a_stream_is_never_started_over():
    assert decide(loss(statement=Statement.STREAM)).outcome is Outcome.INTERRUPTED
    copy_in = loss(statement=Statement.STREAM, writes=True)
    assert decide(copy_in).outcome is Outcome.OUTCOME_UNKNOWN
    cut_short = loss(statement=Statement.STREAM, writes=True, finishing=False)
    assert decide(cut_short).outcome is Outcome.INTERRUPTED
    in_transaction = loss(statement=Statement.STREAM, in_transaction=True)
    assert decide(in_transaction).outcome is Outcome.TRANSACTION_LOST
    assert decide(loss(statement=Statement.STREAM, sent=False)).outcome is Outcome.RUN_AGAIN


def test_rule_8_a_read_only_refusal_is_a_failover_only_with_several_hosts():
    assert refused_by_read_only_node("25006", multi_host=True)
    assert not refused_by_read_only_node("25006", multi_host=False)
    assert not refused_by_read_only_node("23505", multi_host=True)


@pytest.mark.parametrize(
    "facts,transient",
    [
        ({"rejection": None, "server_answered": False, "host_lookup": None}, True),
        ({"rejection": "57P03", "server_answered": True, "host_lookup": None}, True),
        ({"rejection": "53300", "server_answered": True, "host_lookup": None}, True),
        ({"rejection": "28P01", "server_answered": True, "host_lookup": None}, False),
        ({"rejection": "3D000", "server_answered": True, "host_lookup": None}, False),
        ({"rejection": None, "server_answered": True, "host_lookup": None}, False),
        ({"rejection": None, "server_answered": False, "host_lookup": "permanent"}, False),
        ({"rejection": None, "server_answered": False, "host_lookup": "transient"}, True),
    ],
)
def test_rule_10_connect_failures(facts, transient):
    assert connect_failure_is_transient(**facts) is transient


def test_backoff_has_full_jitter_below_a_capped_exponential_bound():
    delays = Backoff(initial=0.1, maximum=1.0, rng=random.Random(7)).delays()
    drawn = [next(delays) for _ in range(50)]
    bounds = [min(1.0, 0.1 * 2**i) for i in range(50)]
    assert all(0 <= d <= b for d, b in zip(drawn, bounds, strict=True))
    assert len(set(drawn)) == 50


def test_breaker_probes_one_at_a_time_at_a_bounded_interval():
    now = [100.0]
    breaker = Breaker(0.5, clock=lambda: now[0])
    assert breaker.admit() is False
    breaker.record_failure()
    with pytest.raises(BreakerOpen):
        breaker.admit()
    now[0] += 0.5
    assert breaker.admit() is True  # the probe
    with pytest.raises(BreakerOpen):
        breaker.admit()  # others keep failing fast while it runs
    breaker.record_failure()
    breaker.probe_done()
    now[0] += 0.5
    assert breaker.admit() is True  # however long the outage, a probe every 0.5 s
    breaker.record_success()
    breaker.probe_done()
    assert breaker.admit() is False


def test_a_probe_that_never_reports_still_frees_the_next_probe():
    now = [0.0]
    breaker = Breaker(0.5, clock=lambda: now[0])
    breaker.record_failure()
    now[0] += 0.5
    assert breaker.admit() is True
    breaker.probe_done()  # it raised KeyboardInterrupt before reporting
    now[0] += 0.5
    assert breaker.admit() is True


def test_breaker_with_zero_interval_never_opens():
    breaker = Breaker(0)
    breaker.record_failure()
    assert breaker.admit() is False


def test_breaker_reports_its_changes():
    changes = []
    now = [0.0]
    breaker = Breaker(0.5, clock=lambda: now[0], on_change=lambda s, t: changes.append(s))
    breaker.record_failure()
    now[0] += 1
    breaker.admit()
    breaker.record_success()
    assert changes == ["open", "half-open", "closed"]
