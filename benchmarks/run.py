#!/usr/bin/env python3
"""Run every benchmark, once per driver, and write the results to docs/benchmarks.md.

    python3 benchmarks/run.py [--no-v120] [--no-silent] [--output PATH]

Each benchmark runs in its own process per driver, since Django picks its driver at import
(psycopg2 is selected by hiding psycopg 3, as tests/_driver.py does). The package's ``.venv``
is made or refreshed first, as ``dev.py`` does; the 1.2.0 column of the recovery table uses
``.bench-venvs/v120`` (made here when missing; left out if it will not install). The whole
run takes about three minutes, most of it waiting for faults to pass.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
OUTPUT = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
README_START = "<!-- benchmarks:start (written by benchmarks/run.py) -->"
README_END = "<!-- benchmarks:end -->"
V120 = ROOT / ".bench-venvs" / "v120"
V120_REQUIREMENTS = ["django-postgresql-reconnect==1.2.0", "Django<6", "psycopg2-binary"]
DRIVERS = ["psycopg", "psycopg2"]

# Fewer rounds than the scripts' defaults, to keep the whole run near three minutes.
OVERHEAD_ARGS = ["--rounds", "15", "--calls", "200"]
DECORATOR_ARGS = ["--rounds", "8", "--calls", "200"]
ROUNDTRIP_ARGS = ["--requests", "50"]

sys.path.insert(0, str(ROOT))
import dev  # noqa: E402  (the project's own venv handling)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-v120", action="store_true", help="leave out the 1.2.0 column")
    parser.add_argument("--no-silent", action="store_true", help="skip the silent drop")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    started = time.monotonic()
    dev.ensure_venv(dev.DRIVER_EXTRAS)
    v120 = "left out (--no-v120)" if args.no_v120 else ensure_v120()
    results: dict[str, dict[str, Any]] = {}
    for driver in DRIVERS:
        results[driver] = {
            "overhead": run_json("overhead.py", driver, OVERHEAD_ARGS),
            "decorator": run_json("decorator.py", driver, DECORATOR_ARGS),
            "roundtrips": run_json("roundtrips.py", driver, ROUNDTRIP_ARGS),
            "recovery": run_json("recovery.py", driver, ["--no-silent"] if args.no_silent else []),
        }
    elapsed = time.monotonic() - started
    text = render(results, machine(), v120, elapsed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    if args.output == OUTPUT:
        update_readme(results, machine(), v120)
    print(text)
    print(f"run.py: wrote {args.output.relative_to(ROOT)} in {elapsed:.0f} s", file=sys.stderr)
    return 0


def ensure_v120() -> str:
    python = V120 / "bin" / "python"
    if python.exists():
        return "run"
    print("run.py: installing django-postgresql-reconnect 1.2.0 into .bench-venvs/v120")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(V120)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *V120_REQUIREMENTS],
            check=True,
            timeout=300,
        )
    except (subprocess.SubprocessError, OSError) as error:
        print(f"run.py: 1.2.0 left out: it did not install ({error})", file=sys.stderr)
        return "left out (did not install)"
    return "run"


def run_json(script: str, driver: str, extra: list[str]) -> dict[str, Any] | None:
    """Run one benchmark for one driver; None when the script is missing or fails."""
    path = BENCH / script
    if not path.exists():
        print(f"run.py: {script} not found: its rows are left as TODO", file=sys.stderr)
        return None
    print(f"run.py: {script} --driver {driver}", file=sys.stderr, flush=True)
    begun = time.monotonic()
    result = subprocess.run(
        [str(dev.PYTHON), str(path), "--driver", driver, "--json", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DPR_TEST_DRIVER": driver},
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        print(
            f"run.py: {script} --driver {driver} failed ({result.returncode}):\n"
            f"{result.stderr[-2000:]}",
            file=sys.stderr,
        )
        return None
    print(f"run.py: {script} took {time.monotonic() - begun:.0f} s", file=sys.stderr)
    data: dict[str, Any] = json.loads(lines[-1])
    return data


# --- The machine -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    probe = (
        "import importlib.metadata as m, json\n"
        "v = {}\n"
        "for name in ('Django', 'psycopg', 'psycopg2-binary'):\n"
        "    try: v[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: v[name] = 'not installed'\n"
        "from django_postgresql_reconnect.testing import _binaries as b\n"
        "v['PostgreSQL'] = b.postgres_version(b.find_bindir(None))\n"
        "print(json.dumps(v))\n"
    )
    out = subprocess.run(
        [str(dev.PYTHON), "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    versions = json.loads(out)
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        "Django": versions["Django"],
        "psycopg": versions["psycopg"],
        "psycopg2": versions["psycopg2-binary"],
        "PostgreSQL": versions["PostgreSQL"],
        "date": datetime.date.today().isoformat(),
    }


# --- The page ----------------------------------------------------------------------------------

TODO = "TODO: not measured (the script was missing or failed; see run.py's output)"
DRIVER_NAMES = {"psycopg": "psycopg 3", "psycopg2": "psycopg2"}


def render(
    results: dict[str, dict[str, Any]], host: dict[str, str], v120: str, elapsed: float
) -> str:
    out = [
        "<!-- Generated by `python3 benchmarks/run.py`; do not edit by hand. -->",
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in host.items()),
        f"| run time | {elapsed:.0f} s |",
        "",
        "### Per-statement overhead on a healthy connection",
        "",
        "| Driver | Workload | Stock | Engine | Ratio (median) | Noise floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for driver, by_bench in results.items():
        data = by_bench["overhead"]
        if data is None:
            out.append(f"| {DRIVER_NAMES[driver]} | {TODO} | | | | |")
            continue
        for r in data["results"]:
            out.append(
                f"| {DRIVER_NAMES[driver]} | {r['workload']} | {r['stock_us']:.0f} µs "
                f"| {r['engine_us']:.0f} µs | {r['ratio']:.3f} | {r['noise_floor']:.3f} |"
            )
    out += [
        "",
        "### The decorator and the middleware, per call",
        "",
        "| Driver | Workload | Plain | Guarded | Ratio (median) | Noise floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for driver, by_bench in results.items():
        data = by_bench["decorator"]
        if data is None:
            out.append(f"| {DRIVER_NAMES[driver]} | {TODO} | | | | |")
            continue
        for r in data["results"]:
            out.append(
                f"| {DRIVER_NAMES[driver]} | {r['workload']} | {r['plain_us']:.0f} µs "
                f"| {r['guarded_us']:.0f} µs | {r['ratio']:.3f} | {r['noise_floor']:.3f} |"
            )
    out += [
        "",
        "### Round trips per request (one query, warm connection)",
        "",
        "| Driver | Column | Back to back | After 2.5 s idle | Sent after idle |",
        "|---|---|---:|---:|---|",
    ]
    for driver, by_bench in results.items():
        data = by_bench["roundtrips"]
        if data is None:
            out.append(f"| {DRIVER_NAMES[driver]} | {TODO} | | | |")
            continue
        for r in data["results"]:
            sent = ", ".join(f"`{s}`" if s else "empty query" for s in r["idle_statements"])
            out.append(
                f"| {DRIVER_NAMES[driver]} | {r['column']} | {r['warm_round_trips']:.2f} "
                f"| {r['idle_round_trips']} | {sent} |"
            )
    for driver, by_bench in results.items():
        out += ["", f"### Recovery from faults, {DRIVER_NAMES[driver]}", ""]
        data = by_bench["recovery"]
        if data is None:
            out.append(TODO)
            continue
        out += recovery_table(data, v120)
    out.append("")
    return "\n".join(out)


def update_readme(results: dict[str, dict[str, Any]], host: dict[str, str], v120: str) -> None:
    """Put the headline tables of this run between the README's benchmark markers."""
    page = render(results, host, v120, 0.0).splitlines()
    wanted = ("### Per-statement overhead", "### Recovery from faults")
    block: list[str] = [
        f"Measured {host.get('date', '')} on {host.get('cores', '?')} cores "
        f"({host.get('CPU', '?')}), Python {host.get('Python', '?')}, Django "
        f"{host.get('Django', '?')}, PostgreSQL {host.get('PostgreSQL', '?')}; every table "
        "and the method: [docs/performance.md](docs/performance.md).",
    ]
    keep = False
    for line in page:
        if line.startswith("### "):
            keep = line.startswith(wanted)
        if (
            keep
            and not line.startswith("Exceptions the callers saw")
            and not line.startswith("- ")
        ):
            block.append(line.replace("### ", "#### ", 1))
    text = README.read_text()
    if README_START not in text or README_END not in text:
        print("run.py: README.md has no benchmark markers; left as it is", file=sys.stderr)
        return
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block.insert(1, "")
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(block)).strip()
    README.write_text(f"{head}{README_START}\n{body}\n{README_END}{tail}")


def recovery_table(data: dict[str, Any], v120: str) -> list[str]:
    keys = list(data["columns"])
    labels = [data["columns"][k] for k in keys]
    lines = [
        "Failed calls, and seconds from the end of the fault to recovery.",
        "",
        "| Fault | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(keys),
    ]
    notes: list[str] = []
    for fault, by_column in data["results"].items():
        cells = []
        for key in keys:
            r = by_column[key]
            if r["recovery_s"] is not None:
                when = f"{r['recovery_s']:.2f} s"
            elif r.get("hung"):
                window = data["silent_window_s"] if "silent" in fault else data["window_s"]
                when = f"hung > {window:.0f} s"
            else:
                when = "never"
            cells.append(f"{r['failed']} failed, {when}")
            if r["errors"]:
                seen = ", ".join(f"{name} ({count})" for name, count in r["errors"].items())
                notes.append(f"{fault}, {data['columns'][key]}: {seen}")
        lines.append(f"| {fault} | " + " | ".join(cells) + " |")
    if data["silent_drop"] != "run":
        lines.append(f"| silent drop | {data['silent_drop']} |" + " |" * (len(keys) - 1))
    if "v120" not in keys:
        reason = "psycopg2 only" if data["driver"] == "psycopg" else v120
        lines += ["", f"1.2.0: not in this table ({reason})."]
    if notes:
        lines += ["", "Exceptions the callers saw:", ""]
        lines += [f"- {note}" for note in notes]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
