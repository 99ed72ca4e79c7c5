"""The support matrix: each supported Django on a Python it supports, with each driver.

    python3 dev.py matrix             the `tests-*` sessions (virtualenvs are reused between runs)
    python3 dev.py matrix -s NAME     one session; `-l` lists them
    python3 dev.py djsuite [--full]   the `djsuite-*` sessions: Django's own test suite against
                                      this ENGINE and stock Django (djsuite/run.py), then a summary

The lab tests are left out: they check the testing tools, which do not depend on Django.
"""

from __future__ import annotations

import sys

import nox

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# psycopg 3 comes with psycopg_pool, for Django's connection pool (tests/test_pool.py).
DRIVERS = {"psycopg": "psycopg,pool", "psycopg2": "psycopg2"}
DJANGO = {"4.2": "Django>=4.2,<5.0", "5.2": "Django>=5.2,<6.0", "6.1": "Django>=6.1,<6.2"}
# (Python, Django, driver): the old LTS on the oldest Python, the current LTS with both
# drivers, the newest Django on the newest Python.
MATRIX = [
    ("3.10", "4.2", "psycopg2"),
    ("3.11", "5.2", "psycopg"),
    ("3.11", "5.2", "psycopg2"),
    ("3.13", "6.1", "psycopg"),
]


def _define(python: str, django: str, driver: str) -> None:
    @nox.session(name=f"tests-py{python}-django{django}-{driver}", python=python)
    def tests(session: nox.Session) -> None:
        session.install("-e", f".[test,{DRIVERS[driver]}]", DJANGO[django])
        session.run(
            "pytest",
            "-q",
            "--ignore=tests/lab",
            *session.posargs,
            env={"DPR_TEST_DRIVER": driver},
        )


def _define_djsuite(python: str, django: str, driver: str) -> None:
    @nox.session(
        name=f"djsuite-py{python}-django{django}-{driver}", python=python, tags=["djsuite"]
    )
    def djsuite(session: nox.Session) -> None:
        # tblib carries the tracebacks of runtests.py's parallel workers back to the runner.
        session.install("-e", f".[test,{DRIVERS[driver]}]", DJANGO[django], "tblib")
        session.run("python", "djsuite/run.py", *session.posargs)


for _python, _django, _driver in MATRIX:
    _define(_python, _django, _driver)
for _python, _django, _driver in MATRIX:
    _define_djsuite(_python, _django, _driver)


@nox.session(name="djsuite-summary", python=False, tags=["djsuite"])
def djsuite_summary(session: nox.Session) -> None:
    """Tabulate the pairs' reports (defined last, so it runs after them)."""
    session.run(sys.executable, "djsuite/run.py", "--summary", *session.posargs)


# A bare `nox` (dev.py matrix) runs the test matrix only; -s, -k or -t choose others.
nox.options.sessions = [f"tests-py{p}-django{d}-{driver}" for p, d, driver in MATRIX]
