#!/usr/bin/env python3
"""What the engine adds per statement, in counts that a busy machine cannot blur.

    .nox/bench/bin/python benchmarks/counts.py     (needs valgrind and strace; about 6 minutes)

Wall-clock ratios (overhead.py) move with the machine's load; these do not. For stock Django
and the engine, a child process runs N statements (a raw ``SELECT 1`` or an ORM ``get()``)
under valgrind's callgrind, then under ``strace -c``; the difference between N and 0
statements, divided by N, is the cost of one statement: client instructions and system calls
by name. The engine's floor is one more ``poll()`` (rule 1 of the safety model) and about no
instruction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

STATEMENTS = 400
ENGINES = {
    "stock": "django.db.backends.postgresql",
    "engine": "django_postgresql_reconnect.backend",
}
CHILD = """
import json, os, sys, django
from django.conf import settings
settings.configure(
    DATABASES={"default": {**json.loads(os.environ["DPR_BASE"]),
                           "ENGINE": os.environ["DPR_ENGINE"], "CONN_MAX_AGE": None}},
    INSTALLED_APPS=["django.contrib.contenttypes"], USE_TZ=True)
django.setup()
from django.contrib.contenttypes.models import ContentType
from django.db import connection
ContentType.objects.filter(id=1).first()
cursor = connection.cursor()
cursor.execute("SELECT 1")
for _ in range(int(sys.argv[1])):
    if sys.argv[2] == "orm":
        ContentType.objects.get(id=1)
    else:
        cursor.execute("SELECT 1")
        cursor.fetchone()
"""


def child(tool: list[str], env: dict[str, str], count: int, workload: str) -> str:
    argv = [*tool, sys.executable, "-c", CHILD, str(count), workload]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stderr


def instructions(env: dict[str, str], count: int, workload: str) -> int:
    out = child(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"], env, count,
                workload)  # fmt: skip
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {out[-500:]}")
    return int(found.group(1))


def syscalls(env: dict[str, str], count: int, workload: str) -> dict[str, int]:
    table = {}
    for line in child(["strace", "-c", "-f"], env, count, workload).splitlines():
        row = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if row and row.group(2) != "total":
            table[row.group(2)] = int(row.group(1))
    return table


def main() -> int:
    missing = [tool for tool in ("valgrind", "strace") if shutil.which(tool) is None]
    if missing:
        print(f"counts.py: needs {' and '.join(missing)}", file=sys.stderr)
        return 2
    import django
    from django.conf import settings

    from django_postgresql_reconnect.testing import PostgresServer

    results: dict[str, Any] = {}
    with PostgresServer() as server:
        base = server.database_settings()
        settings.configure(
            DATABASES={"default": {**base, "ENGINE": ENGINES["stock"]}},
            INSTALLED_APPS=["django.contrib.contenttypes"],
            USE_TZ=True,
        )
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        for workload in ("raw", "orm"):
            for name, engine in ENGINES.items():
                env = {**os.environ, "DPR_BASE": json.dumps(base), "DPR_ENGINE": engine}
                per = (
                    instructions(env, STATEMENTS, workload) - instructions(env, 0, workload)
                ) / STATEMENTS
                many, none = syscalls(env, STATEMENTS, workload), syscalls(env, 0, workload)
                calls = {
                    call: round((many.get(call, 0) - none.get(call, 0)) / STATEMENTS, 2)
                    for call in sorted(set(many) | set(none))
                }
                calls = {call: n for call, n in calls.items() if abs(n) >= 0.05}
                results[f"{workload}/{name}"] = {"instructions": round(per), "syscalls": calls}
                print(f"{workload:4} {name:7} {per:>10,.0f} instructions  {calls}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
