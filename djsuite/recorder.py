"""A test runner for ``runtests.py`` that also writes which tests failed, for ``run.py``.

Django's runner reports only to the console; run.py needs the failing tests by name, to run
them again against stock Django. In a parallel run the workers' outcomes are replayed on the
main process's result, so this one file covers them all.
"""

from __future__ import annotations

import json
import os
import re
import traceback
import unittest
from typing import Any

from django.test.runner import (
    DiscoverRunner,
    ParallelTestSuite,
    RemoteTestResult,
    RemoteTestRunner,
)

# An error outside a test, such as "setUpClass (app.tests.SomeTests)": the label is inside.
FIXTURE_ERROR = re.compile(r"\w+ \((?P<label>[\w.]+)\)")
IMPORT_ERROR_PREFIX = "unittest.loader._FailedTest."


def label_of(test: unittest.TestCase) -> str:
    """The runtests.py label that runs ``test`` again (a class or module for their errors)."""
    test_id = test.id()
    if test_id.startswith(IMPORT_ERROR_PREFIX):
        return test_id[len(IMPORT_ERROR_PREFIX) :]
    match = FIXTURE_ERROR.fullmatch(test_id)
    return match["label"] if match else test_id


class RecordingResult(unittest.TextTestResult):
    """Keep each failure and error by label, with its traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.problems: dict[str, dict[str, str]] = {}

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._note(test, "error", err)

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._note(test, "failure", err)

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._note(test, "failure" if failed else "error", err, subtest)

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._note(test, "unexpected success", None)

    def _note(self, test: Any, outcome: str, err: Any, subtest: Any = None) -> None:
        text = self._exc_info_to_string(err, test) if err is not None else ""
        if subtest is not None:
            text = f"in subtest {subtest.id()}\n{text}"
        # The first problem of a test is kept: later subtests usually repeat it.
        self.problems.setdefault(label_of(test), {"outcome": outcome, "traceback": text})


class NotPicklable(Exception):
    """An error that a parallel worker could not pickle, sent as its formatted traceback."""


class SendingResult(RemoteTestResult):
    """A parallel worker's result that sends an error it cannot pickle as text.

    Django's parallel runner stops the whole run on such an error (a RecursionError's deep
    traceback, an exception holding a local function): one test would hide all the others.
    """

    def _sendable(self, err: Any) -> Any:
        try:
            self._confirm_picklable(err)
        except Exception:
            text = "".join(traceback.format_exception(*err))
            return (NotPicklable, NotPicklable(text), None)
        return err

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, self._sendable(err))

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, self._sendable(err))

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, None if err is None else self._sendable(err))


class SendingRunner(RemoteTestRunner):
    resultclass = SendingResult


class SendingParallelSuite(ParallelTestSuite):
    runner_class = SendingRunner


class RecordingRunner(DiscoverRunner):
    """Django's runner, writing the outcomes to the file named by DJSUITE_RESULTS."""

    parallel_test_suite = SendingParallelSuite

    def get_resultclass(self) -> Any:
        return RecordingResult

    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        result = super().run_suite(suite, **kwargs)
        summary = {
            "tests_run": result.testsRun,
            "skipped": len(result.skipped),
            "expected_failures": len(result.expectedFailures),
            "problems": result.problems,
        }
        with open(os.environ["DJSUITE_RESULTS"], "w") as file:
            json.dump(summary, file, indent=1)
        return result
