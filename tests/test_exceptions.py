"""The package's exceptions: OperationalErrors that say what happened, and survive pickling."""

from __future__ import annotations

import multiprocessing
import pickle

import pytest
from django.db import OperationalError

from django_postgresql_reconnect import exceptions as ex

EXAMPLES = [
    ex.DatabaseUnavailable(alias="default", attempts=3, seconds=1.5, reason="refused"),
    ex.DatabaseUnavailable.breaker_open(alias="default", down_for=12.0, probe_every=0.5),
    ex.StatementOutcomeUnknown(alias="default", statement="INSERT INTO t VALUES (1)"),
    ex.CommitOutcomeUnknown(alias="default"),
    ex.TransactionLost(alias="default"),
    ex.SessionStateLost(alias="default", session_state=["an advisory lock"]),
    ex.StatementInterrupted(alias="default", statement="COPY t TO STDOUT"),
    ex.StatementOutcomeUnknownAndSessionStateLost(
        alias="default", statement="INSERT", session_state=["an advisory lock"]
    ),
    ex.CommitOutcomeUnknownAndSessionStateLost(alias="default", session_state=["LISTEN on 'c'"]),
    ex.TransactionLostAndSessionStateLost(alias="default", session_state=["an advisory lock"]),
    ex.StatementInterruptedAndSessionStateLost(
        alias="default", statement="FETCH", session_state=["an advisory lock"]
    ),
]


def facts(error):
    return (type(error), error.args, dict(error.__dict__))


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_exception_is_an_operational_error_naming_its_alias(error):
    assert isinstance(error, OperationalError)
    assert "'default'" in str(error)


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_exception_pickles_with_its_attributes(error):
    assert facts(pickle.loads(pickle.dumps(error))) == facts(error)


def test_both_facts_are_both_classes_and_say_both():
    error = ex.StatementOutcomeUnknownAndSessionStateLost(
        alias="default", statement="INSERT", session_state=["an advisory lock"]
    )
    assert isinstance(error, ex.StatementOutcomeUnknown)
    assert isinstance(error, ex.SessionStateLost)
    assert "may or may not have applied" in str(error)
    assert "advisory lock" in str(error)
    assert error.session_state == ("an advisory lock",)


def _raise_in_child(index: int) -> None:
    raise EXAMPLES[index]


def test_exceptions_cross_a_real_process_boundary():
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        for index, error in enumerate(EXAMPLES):
            result = pool.apply_async(_raise_in_child, (index,))
            with pytest.raises(type(error)) as caught:
                result.get(timeout=60)
            assert facts(caught.value) == facts(error)
