"""Operators can count what the engine decides: one log line and one signal per decision,
Prometheus metrics out of the box, and each alias's breaker for a readiness probe."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from django_postgresql_reconnect import (
    DatabaseUnavailable,
    StatementOutcomeUnknown,
    breaker_states,
    signals,
)
from tests.app.models import Item
from tests.faults import lose_connection


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def decisions(alias: str, decision: str) -> float:
    return sample("django_postgresql_reconnect_decisions_total", alias=alias, decision=decision)


def test_a_loss_and_its_recovery_are_counted_in_prometheus(server):
    lost = decisions("default", "connection lost")
    replaced = decisions("default", "reconnected before send")
    observed = sample(
        "django_postgresql_reconnect_recovery_seconds_count",
        alias="default",
        decision="reconnected before send",
    )
    Item.objects.count()
    lose_connection(server)

    Item.objects.count()

    assert decisions("default", "connection lost") == lost + 1
    assert decisions("default", "reconnected before send") == replaced + 1
    assert (
        sample(
            "django_postgresql_reconnect_recovery_seconds_count",
            alias="default",
            decision="reconnected before send",
        )
        == observed + 1
    )


def test_each_decision_is_one_log_line_with_structured_fields_and_one_signal(proxy, caplog):
    seen = []

    def on_decided(sender, alias, decision, **kwargs):
        seen.append(decision)

    Item.objects.count()
    proxy.swallow_reply("INSERT")
    signals.decided.connect(on_decided)
    try:
        with caplog.at_level(logging.INFO, logger="django_postgresql_reconnect"):
            with pytest.raises(StatementOutcomeUnknown):
                Item.objects.create(name="once")
            Item.objects.count()
    finally:
        signals.decided.disconnect(on_decided)

    assert seen == ["connection lost", "outcome unknown", "reconnected"]
    records = [r for r in caplog.records if getattr(r, "decision", None)]
    assert [r.decision for r in records] == seen
    unknown = records[1]
    assert unknown.alias == "default"
    assert unknown.levelname == "WARNING"
    assert "INSERT" in unknown.statement  # the text, cut short; never its parameters
    assert "once" not in unknown.statement
    assert records[2].attempts == 1 and records[2].seconds >= 0


def test_the_breaker_of_each_alias_is_readable_for_a_readiness_probe(server):
    Item.objects.using("fastfail").count()
    assert breaker_states()["fastfail"]["state"] == "closed"
    server.stop()
    try:
        with pytest.raises(DatabaseUnavailable):
            Item.objects.using("fastfail").count()
        state = breaker_states()["fastfail"]
        assert state["state"] == "open"
        assert state["down_for"] >= 0
    finally:
        server.start()
