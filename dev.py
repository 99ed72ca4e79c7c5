#!/usr/bin/env python3
"""The developer entry point; needs only Python 3.10+ (standard library).

    python3 dev.py test [--cov] [pytest args]   the suite, once per driver (psycopg, then
                                                psycopg2); --cov adds branch coverage
    python3 dev.py demo [args]          an end-to-end run against a throwaway server
    python3 dev.py lint                 ruff check, ruff format --check, mypy --strict
    python3 dev.py docs [mkdocs args]   build the documentation site, strict (broken links fail)
    python3 dev.py matrix [nox args]    the Python x Django x driver matrix (nox)
    python3 dev.py djsuite [--full]     Django's own test suite, this ENGINE against stock Django,
                                        for each pair of the matrix (nox, djsuite/run.py)

Each command is a nox session of noxfile.py (`test` is `nox -s test -- ARGS`); dev.py only makes
sure ``.venv`` exists for this Python and holds nox (the `nox` dependency group). The sessions
keep their own virtualenvs in ``.nox/`` and reinstall only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "dpr-nox.sha256"
PYTHON = VENV / "bin" / "python"
# pip learnt `--group` (PEP 735 dependency groups) in 25.1.
PIP = "pip>=25.1"


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (dev.py may be run by any python3)
        return fail("needs Python 3.10 or newer")
    if not argv or argv[0] not in ("test", "demo", "lint", "docs", "matrix", "djsuite"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "matrix":  # a bare `nox` runs the matrix; the arguments are nox's own
        return nox(args)
    if command == "djsuite":
        return nox(["-t", "djsuite", "--", *args])
    return nox(["-s", command, "--", *args])


def nox(args: list[str]) -> int:
    ensure_nox()
    command = [str(PYTHON), "-m", "nox", "-f", str(ROOT / "noxfile.py"), *args]
    return subprocess.call(command, cwd=ROOT)


def session_python(session: str) -> Path:
    """Make or refresh the virtualenv of a nox ``session`` (no run); return its Python."""
    ensure_nox()
    noxfile = str(ROOT / "noxfile.py")
    subprocess.check_call(
        [str(PYTHON), "-m", "nox", "-f", noxfile, "-s", session, "--install-only"], cwd=ROOT
    )
    return ROOT / ".nox" / session / "bin" / "python"


def ensure_nox() -> None:
    """Create or refresh .venv so that it runs this Python and holds nox."""
    wanted = platform.python_version()
    if VENV.exists() and venv_version() != wanted:
        print(f"dev.py: .venv is for Python {venv_version()}, not {wanted}: re-creating it")
        shutil.rmtree(VENV)
    if not PYTHON.exists():
        print(f"dev.py: creating .venv with Python {wanted} ({sys.executable})", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    digest = hashlib.sha256(nox_requirement().encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    print("dev.py: installing nox into .venv", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "-q"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.check_call([*pip, PIP], cwd=ROOT, env=env)
    subprocess.check_call([*pip, "--group", "nox"], cwd=ROOT, env=env)
    STAMP.write_text(digest + "\n")


def nox_requirement() -> str:
    """The `nox = [...]` line of pyproject.toml's dependency groups (3.10 has no tomllib)."""
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    return next((line for line in lines if line.startswith("nox = ")), "")


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


def fail(message: str) -> int:
    print(f"dev.py: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
