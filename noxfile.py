"""Every developer command is a session here; ``python3 dev.py COMMAND`` runs it.

    python3 dev.py test [--cov] [ARGS]  `test`: the suite with psycopg 3, then with psycopg2
                                        (pytest ARGS); --cov measures branch coverage
    python3 dev.py lint | docs | demo   `lint`, `docs`, `demo`
    python3 dev.py matrix             the `tests-*` sessions (virtualenvs are reused between runs)
    python3 dev.py matrix -s NAME     one session; `-l` lists them
    python3 dev.py djsuite [--full]   the `djsuite-*` sessions: Django's own test suite against
                                      this ENGINE and stock Django (djsuite/run.py), then a summary

Each session installs the package (editable) with EXTRAS and the dependency groups it needs
(pyproject.toml), once: a stamp in its virtualenv skips pip until pyproject.toml changes.
The lab tests are left out of the matrix: they check the testing tools, which do not depend on
Django.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
# The package's extras that the suite needs, both drivers at once.
EXTRAS = ["psycopg", "psycopg2", "pool", "test"]
# `dev.py test` runs the suite once per driver; the second pass leaves out the lab: its tests
# drive the server directly, not through Django.
PASSES = [("psycopg", []), ("psycopg2", ["--ignore=tests/lab"])]
NO_TESTS_COLLECTED = 5
# pip learnt `--group` (PEP 735 dependency groups) in 25.1.
PIP = "pip>=25.1"

# psycopg 3 comes with psycopg_pool, for Django's connection pool (tests/test_pool.py).
DRIVERS = {"psycopg": "psycopg,pool", "psycopg2": "psycopg2"}
DJANGO = {
    "4.2": "Django>=4.2,<5.0",
    "5.0": "Django>=5.0,<5.1",
    "5.1": "Django>=5.1,<5.2",
    "5.2": "Django>=5.2,<6.0",
    "6.0": "Django>=6.0,<6.1",
    "6.1": "Django>=6.1,<6.2",
}
# (Python, Django, driver): every Django release of the supported range (the classifiers in
# pyproject.toml name the same), each on a Python it supports, every Python, both drivers.
MATRIX = [
    ("3.10", "4.2", "psycopg2"),
    ("3.10", "5.0", "psycopg"),
    ("3.11", "5.1", "psycopg2"),
    ("3.11", "5.2", "psycopg"),
    ("3.11", "5.2", "psycopg2"),
    ("3.12", "6.0", "psycopg2"),
    ("3.13", "6.1", "psycopg"),
]
# Django's own suite (djsuite/run.py): the old LTS on the oldest Python, the current LTS with
# both drivers, the newest Django on the newest Python.
DJSUITE = [
    ("3.10", "4.2", "psycopg2"),
    ("3.11", "5.2", "psycopg"),
    ("3.11", "5.2", "psycopg2"),
    ("3.13", "6.1", "psycopg"),
]
# The `test` session runs nox's own Python (3.11 here) with the newest Django it installs (5.2
# there), both drivers; CI's matrix stage runs the other pairs (tagged ci-matrix).
TEST_STAGE = ("3.11", "5.2")
# `tests-* -- --fast`: without the tests of the network, the server and the cluster, which do
# not depend on Django's version and run in full in the `test` session (about half the time).
FAST_SKIPS = [
    "tests/test_rejections.py",
    "tests/test_silent_drop.py",
    "tests/test_cluster_scenarios.py",
    "tests/test_dns_moves.py",
    "tests/test_leaks.py",
]


def install(
    session: nox.Session,
    extras: Sequence[str] = (),
    groups: Sequence[str] = (),
    also: Sequence[str] = (),
    package: bool = True,
) -> None:
    """Install the package (editable) with ``extras``, the dependency ``groups`` and ``also``.

    Skip pip when the virtualenv's stamp says it holds them for this pyproject.toml.
    """
    wanted = {
        "pyproject": hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest(),
        "extras": sorted(extras),
        "groups": sorted(groups),
        "also": sorted(also),
        "package": package,
    }
    stamp = Path(session.virtualenv.location) / "dpr-installed.json"
    try:
        if json.loads(stamp.read_text()) == wanted:
            session.log("requirements already installed (pyproject.toml unchanged)")
            return
    except (OSError, ValueError):
        pass
    session.install("-q", PIP)
    editable = ["-e", f".[{','.join(extras)}]" if extras else "."] if package else []
    session.install("-q", *editable, *[f"--group={group}" for group in groups], *also)
    stamp.write_text(json.dumps(wanted))


@nox.session
def test(session: nox.Session) -> None:
    """The suite with psycopg 3, then psycopg2; end on the line CI reads: N passed, M failed."""
    install(session, EXTRAS, groups=["coverage", "integrations"])
    args = list(session.posargs)
    cov = "--cov" in args
    if cov:
        args.remove("--cov")
        session.run("coverage", "erase")
    passed = failed = 0
    for driver, pass_args in PASSES:
        print(f"\n=== pytest with DPR_TEST_DRIVER={driver} ===", flush=True)
        counts = run_pytest(session, driver, [*pass_args, *args], cov)
        if counts is None:
            return  # nox --install-only
        passed, failed = passed + counts[0], failed + counts[1]
    if cov:
        session.run("coverage", "combine", "-q")
        session.run("coverage", "report", "--skip-covered", "--show-missing")
    print(f"{passed} passed, {failed} failed", flush=True)
    if failed:
        session.error(f"{failed} failed")


def run_pytest(
    session: nox.Session, driver: str, args: list[str], cov: bool
) -> tuple[int, int] | None:
    """Run one pass; return (passed, failed) as counted in its JUnit report, None if not run."""
    runner = ["coverage", "run", "-m", "pytest"] if cov else ["pytest"]
    with tempfile.TemporaryDirectory(prefix="dpr-dev-") as tmp:
        report = Path(tmp) / "junit.xml"
        try:
            ran = session.run(
                *runner,
                f"--junitxml={report}",
                *args,
                env={"DPR_TEST_DRIVER": driver},
                success_codes=[0, 1, NO_TESTS_COLLECTED],
            )
            if ran is None:
                return None
            stopped = False
        except CommandFailed:
            stopped = True
        passed, failed = count_results(report)
    if stopped and failed == 0:
        # pytest stopped before any test could fail (a collection or usage error): count it.
        print("noxfile.py: pytest stopped with no failed test; counting 1 failure")
        failed = 1
    return passed, failed


def count_results(report: Path) -> tuple[int, int]:
    if not report.exists():
        return 0, 0
    passed = failed = 0
    for suite in ET.parse(report).getroot().iter("testsuite"):
        tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        passed += tests - skipped - bad
        failed += bad
    return passed, failed


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy (files and strictness from pyproject.toml)."""
    install(session, EXTRAS, groups=["dev", "integrations"])
    checks = [
        ["ruff", "check", ".", *session.posargs],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ]
    failures = []
    for check in checks:
        try:
            session.run(*check)
        except CommandFailed:
            failures.append(" ".join(check))
    if failures:
        session.error(f"failed: {'; '.join(failures)}")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, strict (broken links fail)."""
    install(session, groups=["docs"], package=False)
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Stock Django and this engine side by side through real faults (demo/run.py)."""
    install(session, EXTRAS, groups=["demo"])
    session.run("python", "demo/run.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """benchmarks/run.py; it makes this virtualenv itself (--install-only) and runs in it."""
    install(session, EXTRAS, groups=["bench"])
    session.run("python", "benchmarks/run.py", *session.posargs)


def _define(python: str, django: str, driver: str) -> None:
    tags = [] if (python, django) == TEST_STAGE else ["ci-matrix"]

    @nox.session(name=f"tests-py{python}-django{django}-{driver}", python=python, tags=tags)
    def tests(session: nox.Session) -> None:
        install(session, ["test", DRIVERS[driver]], also=[DJANGO[django]])
        args = list(session.posargs)
        if "--fast" in args:
            args.remove("--fast")
            args += [f"--ignore={path}" for path in FAST_SKIPS]
        session.run(
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--ignore=tests/lab",
            "--ignore=tests/integrations",
            *args,
            env={"DPR_TEST_DRIVER": driver},
        )


def _define_djsuite(python: str, django: str, driver: str) -> None:
    @nox.session(
        name=f"djsuite-py{python}-django{django}-{driver}", python=python, tags=["djsuite"]
    )
    def djsuite(session: nox.Session) -> None:
        # tblib carries the tracebacks of runtests.py's parallel workers back to the runner.
        install(session, ["test", DRIVERS[driver]], also=[DJANGO[django], "tblib"])
        session.run("python", "djsuite/run.py", *session.posargs)


for _python, _django, _driver in MATRIX:
    _define(_python, _django, _driver)
for _python, _django, _driver in DJSUITE:
    _define_djsuite(_python, _django, _driver)


@nox.session(name="djsuite-summary", python=False, tags=["djsuite"])
def djsuite_summary(session: nox.Session) -> None:
    """Tabulate the pairs' reports (defined last, so it runs after them)."""
    session.run(sys.executable, "djsuite/run.py", "--summary", *session.posargs)


# A bare `nox` (dev.py matrix) runs the test matrix only; -s, -k or -t choose others.
nox.options.sessions = [f"tests-py{p}-django{d}-{driver}" for p, d, driver in MATRIX]
