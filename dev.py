#!/usr/bin/env python3
"""The developer entry point; needs only Python 3.10+ (standard library).

    python3 dev.py test [pytest args]   the suite, once per driver (psycopg, then psycopg2)
    python3 dev.py demo [args]          an end-to-end run against a throwaway server
    python3 dev.py lint                 ruff check, ruff format --check, mypy --strict
    python3 dev.py matrix [nox args]    the Python x Django x driver matrix (nox)
    python3 dev.py djsuite [--full]     Django's own test suite, this ENGINE against stock Django,
                                        for each pair of the matrix (nox, djsuite/run.py)
    python3 dev.py docs [mkdocs args]   build the documentation site, strict (broken links fail)

Each command first makes sure ``.venv`` exists for this Python and holds the package (editable)
with the extras the command needs; it reinstalls only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "dpr-installed.json"
BIN = VENV / "bin"
PYTHON = BIN / "python"

DRIVER_EXTRAS = ["psycopg", "psycopg2", "pool", "test", "integrations"]
# The second pass leaves out the lab: its tests drive the server directly, not through Django.
PASSES = [("psycopg", []), ("psycopg2", ["--ignore=tests/lab"])]
NO_TESTS_COLLECTED = 5


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (dev.py may be run by any python3)
        return fail("needs Python 3.10 or newer")
    commands = {
        "test": test,
        "demo": demo,
        "lint": lint,
        "matrix": matrix,
        "djsuite": djsuite,
        "docs": docs,
    }
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


def test(args: list[str]) -> int:
    ensure_venv(DRIVER_EXTRAS)
    passed = failed = 0
    for driver, pass_args in PASSES:
        print(f"\n=== pytest with DPR_TEST_DRIVER={driver} ===", flush=True)
        p, f = run_pytest(driver, pass_args + args)
        passed, failed = passed + p, failed + f
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def run_pytest(driver: str, args: list[str]) -> tuple[int, int]:
    """Run one pass; return (passed, failed) as counted in its JUnit report."""
    with tempfile.TemporaryDirectory(prefix="dpr-dev-") as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "DPR_TEST_DRIVER": driver}
        code = subprocess.call(
            [str(PYTHON), "-m", "pytest", f"--junitxml={report}", *args], cwd=ROOT, env=env
        )
        passed, failed = count_results(report)
    if code not in (0, NO_TESTS_COLLECTED) and failed == 0:
        # pytest stopped before any test could fail (a collection or usage error): count it.
        print(f"dev.py: pytest exited {code} with no failed test; counting 1 failure")
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


def demo(args: list[str]) -> int:
    ensure_venv([*DRIVER_EXTRAS, "demo"])
    return subprocess.call([str(PYTHON), str(ROOT / "demo" / "run.py"), *args], cwd=ROOT)


def lint(args: list[str]) -> int:
    ensure_venv([*DRIVER_EXTRAS, "dev"])
    checks = [
        [str(BIN / "ruff"), "check", ".", *args],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],  # files and strictness come from pyproject.toml
    ]
    failures = [check for check in checks if subprocess.call(check, cwd=ROOT) != 0]
    for check in failures:
        print(f"dev.py: failed: {' '.join([Path(check[0]).name, *check[1:]])}")
    return 1 if failures else 0


def matrix(args: list[str]) -> int:
    ensure_venv(["dev"])
    return subprocess.call([str(BIN / "nox"), "-f", str(ROOT / "noxfile.py"), *args], cwd=ROOT)


def djsuite(args: list[str]) -> int:
    ensure_venv(["dev"])
    nox = [str(BIN / "nox"), "-f", str(ROOT / "noxfile.py"), "-t", "djsuite"]
    return subprocess.call([*nox, "--", *args], cwd=ROOT)


def docs(args: list[str]) -> int:
    ensure_venv(["docs"])
    return subprocess.call([str(BIN / "mkdocs"), "build", "--strict", *args], cwd=ROOT)


def ensure_venv(extras: list[str]) -> None:
    """Create or refresh .venv so that it runs this Python and holds ``extras``."""
    wanted = platform.python_version()
    if VENV.exists() and venv_version() != wanted:
        print(f"dev.py: .venv is for Python {venv_version()}, not {wanted}: re-creating it")
        shutil.rmtree(VENV)
    if not PYTHON.exists():
        print(f"dev.py: creating .venv with Python {wanted} ({sys.executable})", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = read_stamp()
    installed = set(stamp.get("extras", [])) if stamp.get("pyproject") == digest else set()
    if set(extras) <= installed:
        return
    union = sorted(installed | set(extras))
    print(f"dev.py: installing -e .[{','.join(union)}] into .venv", flush=True)
    started = time.monotonic()
    subprocess.check_call(
        [str(PYTHON), "-m", "pip", "install", "-q", "-e", f".[{','.join(union)}]"], cwd=ROOT
    )
    STAMP.write_text(json.dumps({"pyproject": digest, "extras": union}))
    print(f"dev.py: installed in {time.monotonic() - started:.0f} s", flush=True)


def venv_version() -> str | None:
    try:
        config = (VENV / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return value.strip()
    return None


def read_stamp() -> dict[str, object]:
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def fail(message: str) -> int:
    print(f"dev.py: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
