"""The support matrix: each supported Django on a Python it supports, with each driver.

    python3 dev.py matrix             all sessions (virtualenvs are reused between runs)
    python3 dev.py matrix -s NAME     one session; `-l` lists them

The lab tests are left out: they check the testing tools, which do not depend on Django.
"""

from __future__ import annotations

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


for _python, _django, _driver in MATRIX:
    _define(_python, _django, _driver)
