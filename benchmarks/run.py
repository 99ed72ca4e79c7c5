#!/usr/bin/env python3
"""Run every benchmark, once per driver, and write docs/benchmarks.md and the README's headline.

    python3 benchmarks/run.py [--only NAME,...] [--render-only] [--no-v120] [--no-silent]

Each benchmark runs in its own process per driver, since Django picks its driver at import
(psycopg2 is selected by hiding psycopg 3, as tests/_driver.py does); stock Django is measured
in the same run as the engine for every ratio. The benchmarks run in the virtualenv of the
nox session ``bench`` (``.nox/bench``: the package, both drivers and the ``bench`` dependency
group, matplotlib, for the pictures in docs/img/), made or refreshed first through ``dev.py``;
the 1.2.0 columns use ``.bench-venvs/v120`` (made here when missing; left out if it
will not install). Each benchmark's figures are kept in benchmarks/results/NAME-DRIVER.json,
so that ``--only`` re-runs some and ``--render-only`` rewrites the pages from what is there.
The whole run takes about 15 minutes on 2 cores, most of it waiting for faults to pass and
10,000 reconnects per driver.
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
RESULTS = BENCH / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img"
README = ROOT / "README.md"
README_START = "<!-- benchmarks:start (written by benchmarks/run.py) -->"
README_END = "<!-- benchmarks:end -->"
# The README is also the PyPI page, where only absolute links work (tests/test_docs.py checks).
REPO_URL = "https://github.com/cloudblue/django-postgresql-reconnect"
PAGE_URL = f"{REPO_URL}/blob/main/docs/benchmarks.md"
IMAGE_URL = "https://raw.githubusercontent.com/cloudblue/django-postgresql-reconnect/main/docs/img"
DRIVERS = {"psycopg": "psycopg 3", "psycopg2": "psycopg2"}
#: The Python of the nox session `bench` (dev.session_python makes it).
PYTHON = ROOT / ".nox" / "bench" / "bin" / "python"

#: Every benchmark, in the order run, with the arguments run.py gives it.
BENCHMARKS: dict[str, list[str]] = {
    "overhead": ["--rounds", "15", "--calls", "200"],
    "decorator": ["--rounds", "8", "--calls", "200"],
    "roundtrips": ["--requests", "50"],
    "recovery": [],
    "breaker": [],
    "load": [],
    "leaks": [],
}

sys.path[:0] = [str(ROOT), str(BENCH)]
import dev  # noqa: E402  (the project's own venv handling)
import fault_lab  # noqa: E402  (the 1.2.0 environment, shared with the demo)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", help="comma-separated benchmarks to run: " + ", ".join(BENCHMARKS)
    )
    parser.add_argument(
        "--render-only", action="store_true", help="run nothing; rewrite the pages from results/"
    )
    parser.add_argument("--no-v120", action="store_true", help="leave out the 1.2.0 columns")
    parser.add_argument("--no-silent", action="store_true", help="skip the silent drop")
    args = parser.parse_args()
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    started = time.monotonic()
    dev.session_python("bench")
    RESULTS.mkdir(exist_ok=True)
    if not args.render_only:
        if args.no_v120:
            print("run.py: 1.2.0 left out (--no-v120)", file=sys.stderr)
        else:
            _, note = fault_lab.prepare_v120()
            print(f"run.py: 1.2.0: {note}", file=sys.stderr)
        for driver in DRIVERS:
            for name in names:
                extra = list(BENCHMARKS[name])
                if args.no_v120 and name in ("recovery", "breaker", "load"):
                    extra.append("--no-v120")
                if args.no_silent and name == "recovery":
                    extra.append("--no-silent")
                run_one(name, driver, extra)
    results = {
        driver: {name: _read(RESULTS / f"{name}-{driver}.json") for name in BENCHMARKS}
        for driver in DRIVERS
    }
    images = draw()
    elapsed = time.monotonic() - started
    host = machine()
    PAGE.write_text(render_page(results, host, images))
    update_readme(results, host, images)
    print(
        f"run.py: wrote {PAGE.relative_to(ROOT)}, the README's block and {len(images)} "
        f"pictures in {elapsed:.0f} s",
        file=sys.stderr,
    )
    return 0


def run_one(name: str, driver: str, extra: list[str]) -> None:
    """Run one benchmark for one driver; keep its JSON, with when and how long, in results/."""
    print(f"run.py: {name}.py --driver {driver}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    begun = time.monotonic()
    result = subprocess.run(
        [str(PYTHON), str(BENCH / f"{name}.py"), "--driver", driver, "--json", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DPR_TEST_DRIVER": driver},
    )
    seconds = time.monotonic() - begun
    lines = result.stdout.strip().splitlines()
    target = RESULTS / f"{name}-{driver}.json"
    if result.returncode != 0 or not lines:
        print(
            f"run.py: {name}.py --driver {driver} failed ({result.returncode}); its rows say "
            f"so:\n{result.stderr[-3000:]}",
            file=sys.stderr,
        )
        target.unlink(missing_ok=True)
        return
    data = json.loads(lines[-1])
    data["_run"] = {
        "date": datetime.date.today().isoformat(),
        "seconds": round(seconds, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    target.write_text(json.dumps(data))
    print(f"run.py: {name}.py took {seconds:.0f} s", file=sys.stderr)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def draw() -> list[str]:
    """The SVGs (plots.py, in .nox/bench, which has matplotlib); names relative to docs/."""
    result = subprocess.run(
        [str(PYTHON), str(BENCH / "plots.py"), str(RESULTS), str(IMAGES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        print(
            "run.py: no pictures (matplotlib is in the bench dependency group: "
            f"{PYTHON} -m pip install --group bench):\n{result.stderr[-1500:]}",
            file=sys.stderr,
        )
        return []
    return [str(Path(line).relative_to(ROOT / "docs")) for line in result.stdout.split()]


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
        [str(PYTHON), "-c", probe], capture_output=True, text=True, check=True
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
    }


# --- The page ----------------------------------------------------------------------------------

TODO = "not measured: the benchmark failed or was not run (see run.py's output)"

INTRO = """\
# Benchmarks

<!-- Written by `python3 benchmarks/run.py`; edit run.py, not this page. -->

`python3 benchmarks/run.py` runs every benchmark below, once per driver, each in its own
process (Django picks its driver at import), stock Django in the same run as the engine for
every ratio, and writes this page, the pictures in `docs/img/` and the headline in the
README. Every figure here comes from the last run on the machine described at the end; a
benchmark that failed says so instead of showing old numbers. `--only NAME` re-runs some,
`--render-only` rewrites the page from `benchmarks/results/`.

The recovery, breaker and load benchmarks and `python3 dev.py demo` are one experiment
(`benchmarks/fault_lab.py`: the lab, the faults and the columns; `benchmarks/experiment.py`:
phases and scores; `benchmarks/worker.py`: the one worker loop): a server, a `FaultProxy` per
column, a worker process per column whose threads each run a job every 20 ms, faults one
after another.
"""

METHOD_OVERHEAD = """\
Stock Django and this engine run in one process on the same driver and server, the aliases
taking turns call by call, each call timed alone; the ratio is the engine's median call time
over stock's. The *noise floor* is the same ratio for stock against a second, identical stock
connection: a ratio within its distance from 1 is no measurable cost. The process is pinned
to one CPU and the server backends to the other (`benchmarks/pinning.py`): left to the
scheduler, a backend that shares the client's CPU answers faster than one that does not, a
bias of tens of percent on 2 cores. Measured on loopback, and again with each alias going
through its own `FaultProxy` (in a child process, pinned with the backends) that holds every
chunk 0.15 ms each way; the added round trip in the table is measured (stock through the
proxies minus stock on loopback), and includes the proxy's own hop.

What the engine adds per statement on a healthy connection is a flat cost: a `poll()` of the
socket (rule 1 of the [safety model](safety-model.md)) and a few attribute checks. Against
`SELECT 1` on a raw cursor over loopback, the cheapest statement there is, it shows most;
over a real network each round trip costs more and the ratio shrinks toward 1.
"""

METHOD_DECORATOR = """\
`benchmarks/decorator.py` times the 1.2.0 guards (the decorator, bare and with `using=`,
the context manager, the middleware in a WSGI request) within blocks, the variants taking
turns block by block (the async one an event loop each), and takes the median of per-block
ratios; the noise floor is the plain call against itself.
"""

METHOD_ROUNDTRIPS = """\
`benchmarks/roundtrips.py` counts, at a `FaultProxy`, the round trips of requests of one
query each (`request_started`, `SELECT 1`, `request_finished`): back to back on a warm
connection, then one request after 2.5 s idle (longer than `IDLE_CHECK_AFTER`).
"""

METHOD_RECOVERY = """\
`benchmarks/recovery.py`: one worker process per column, one thread, a job (`SELECT count(*)`,
then an autocommit `INSERT` of a row with a unique token) every 20 ms, each column through
its own `FaultProxy`. Each fault is a phase: 1 s of calls, the fault, 2 s of calls after it.
The faults: every backend terminated, a fast server restart, a TCP reset at the proxies, a
3 s outage (the server stopped, then started), a lost reply (the proxy lets an `INSERT` run
and commit, drops its reply, then resets), and, as root, a silent drop: the workers connect
straight to a server in a network namespace and `SilentLink.drop_flow` forgets their flows,
as a NAT would (24 s, since the engine finds it through its 20 s `tcp_user_timeout`).

A cell gives the calls that raised (or hung), and the seconds from the end of the fault (the
server back up after a restart or an outage, the fault in place else) to the end of the first
successful call after the last failure; "never" when the phase ended on a failure, "hung" when
a call was still waiting. Rows lost (acknowledged but missing) or duplicated are counted on the
server after each phase.
"""

METHOD_BREAKER = """\
`benchmarks/breaker.py`: the server stopped for 20 s under 4 threads per column looping reads.
*Failing calls* are the calls that started and failed while the server was down, with their
median and 90th-percentile duration: once the engine's breaker opened (after a caller spent its
whole `DEADLINE`, 10 s by default, trying to connect) the others fail at once. *Back after*
is, for each thread, the seconds from the server being up again to its first success; the
promise is under 1 s whatever the outage's length (the breaker probes at most every
`BREAKER_PROBE_INTERVAL`, 0.5 s). *Longest call* shows what a caller waited at most.
"""

METHOD_LOAD = """\
`benchmarks/load.py`: one worker process with 32 threads on one alias (a connection each, as
Django gives each thread), each running the recovery benchmark's job every 20 ms, which keeps
the 2 cores busy; a 3 s outage, then a fast restart; each column runs alone. *Outcome unknown*
counts writes in flight when the server went away, which the engine reports as
`StatementOutcomeUnknown` by design (whether one is in flight is chance); *beyond* is every
other failure. *Back after* is, per thread, the seconds from the server being up to its first
success after its last failure: the median thread and the slowest (the promise: 0.5 s).
"""

METHOD_LEAKS = """\
`benchmarks/leaks.py`: one process, one thread, one alias through a `FaultProxy` in a child
process (so that the proxy's sockets are not counted). Each cycle runs `SELECT
pg_backend_pid()`, then loses the connection, alternately by `pg_terminate_backend` and by a
proxy reset; the next cycle's statement meets the dead connection and the engine replaces it
(a reconnect counts only when the backend pid changed). Stock Django does the same cycle as a
web app sees it: the statement fails, `close_old_connections()` closes the broken connection,
the next statement opens a new one. Open fds (`/proc/self/fd`), OS threads and RSS after 200
warm-up cycles and then along the way. The bound: no fd and no thread more than after the
warm-up, RSS within 2 MB (a leak of 200 bytes a reconnect would show as 2 MB over 10,000).
`tests/test_leaks.py` (`-m slow`) asserts the same over 1,000 reconnects per driver.
"""


def _img(images: list[str], name: str, alt: str) -> list[str]:
    return [f"![{alt}]({name})", ""] if name in images else []


def render_page(
    results: dict[str, dict[str, Any]], host: dict[str, str], images: list[str]
) -> str:
    out = [INTRO, "## Per-statement overhead on a healthy connection", "", METHOD_OVERHEAD]
    out += overhead_tables(results)
    out += _img(images, "img/overhead.svg", "per-call time percentiles, stock and engine")
    out += ["## The decorator and the middleware, per call", "", METHOD_DECORATOR]
    out += decorator_table(results)
    out += ["## Round trips per request", "", METHOD_ROUNDTRIPS]
    out += roundtrip_table(results)
    out += ["## Recovery from faults", "", METHOD_RECOVERY]
    for driver, name in DRIVERS.items():
        out += [f"### {name}", ""]
        out += recovery_table(results[driver]["recovery"], notes=True)
        out += _img(images, f"img/recovery-{driver}.svg", f"recovery timelines, {name}")
    out += ["## The breaker through a 20 s outage", "", METHOD_BREAKER]
    for driver, name in DRIVERS.items():
        out += [f"### {name}", ""]
        out += breaker_table(results[driver]["breaker"])
        out += _img(images, f"img/breaker-{driver}.svg", f"breaker timelines, {name}")
    out += ["## 32 threads through an outage and a restart", "", METHOD_LOAD]
    out += load_table(results)
    for driver, name in DRIVERS.items():
        out += _img(images, f"img/load-{driver}.svg", f"load timelines, {name}")
    out += ["## Leaks over 10,000 reconnects", "", METHOD_LEAKS]
    out += leaks_table(results)
    out += ["## The machine and the run", ""]
    out += machine_table(results, host)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def overhead_tables(results: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| Driver | Workload | Stock | Engine | Ratio (median) | Noise floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    delayed = [
        "",
        "With a longer round trip:",
        "",
        "| Driver | Workload | Added round trip | Stock | Engine | Ratio (median) | Noise floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for driver, name in DRIVERS.items():
        data = results[driver]["overhead"]
        if data is None:
            out.append(f"| {name} | {TODO} | | | | |")
            delayed.append(f"| {name} | {TODO} | | | | | |")
            continue
        for r in data["results"]:
            out.append(
                f"| {name} | {r['workload']} | {r['stock_us']:.0f} µs | {r['engine_us']:.0f} µs "
                f"| {r['ratio']:.3f} | {r['noise_floor']:.3f} |"
            )
        for r in data.get("delayed", []):
            delayed.append(
                f"| {name} | {r['workload']} | {r['added_round_trip_us']:.0f} µs "
                f"| {r['stock_us']:.0f} µs | {r['engine_us']:.0f} µs | {r['ratio']:.3f} "
                f"| {r['noise_floor']:.3f} |"
            )
    return [*out, *delayed, ""]


def decorator_table(results: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| Driver | Workload | Plain | Guarded | Ratio (median) | Noise floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for driver, name in DRIVERS.items():
        data = results[driver]["decorator"]
        if data is None:
            out.append(f"| {name} | {TODO} | | | | |")
            continue
        for r in data["results"]:
            out.append(
                f"| {name} | {r['workload']} | {r['plain_us']:.0f} µs | {r['guarded_us']:.0f} µs "
                f"| {r['ratio']:.3f} | {r['noise_floor']:.3f} |"
            )
    return [*out, ""]


def roundtrip_table(results: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| Driver | Column | Back to back | After 2.5 s idle | Sent after idle |",
        "|---|---|---:|---:|---|",
    ]
    for driver, name in DRIVERS.items():
        data = results[driver]["roundtrips"]
        if data is None:
            out.append(f"| {name} | {TODO} | | | |")
            continue
        for r in data["results"]:
            sent = ", ".join(f"`{s}`" if s else "empty query" for s in r["idle_statements"])
            out.append(
                f"| {name} | {r['column']} | {r['warm_round_trips']:.2f} "
                f"| {r['idle_round_trips']} | {sent} |"
            )
    return [*out, ""]


def _recovery_cell(s: dict[str, Any], length: float) -> str:
    if s["recovered_after"] is not None:
        when = f"{s['recovered_after']:.2f} s"
    elif s["hung_for"] is not None:
        when = f"hung > {s['hung_for']:.0f} s"
    else:
        when = "never"
    text = f"{s['failed']} failed, {when}"
    if s["outcome_unknown"]:
        text += f" ({s['outcome_unknown']} outcome unknown)"
    if s["lost"] or s["duplicated"]:
        text += f", **{s['lost']} lost, {s['duplicated']} duplicated**"
    return text


def recovery_table(data: dict[str, Any] | None, *, notes: bool) -> list[str]:
    if data is None:
        return [TODO, ""]
    keys = list(data["columns"])
    out = [
        "| Fault | " + " | ".join(data["columns"][k] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    seen: list[str] = []
    for phase in data["phases"]:
        if phase["skipped"]:
            out.append(f"| {phase['title']} | {phase['skipped']} |" + " |" * (len(keys) - 1))
            continue
        cells = [_recovery_cell(phase["columns"][k], phase["length_s"]) for k in keys]
        out.append(f"| {phase['title']} | " + " | ".join(cells) + " |")
        for key in keys:
            errors = phase["columns"][key]["errors"]
            if errors:
                listed = ", ".join(f"{name} ({count})" for name, count in errors.items())
                seen.append(f"- {phase['title']}, {data['columns'][key]}: {listed}")
    if "v120" not in keys:
        why = "psycopg2 only" if data["driver"] == "psycopg" else "not installed"
        out += ["", f"1.2.0: not in this table ({why})."]
    if notes and seen:
        out += ["", "Exceptions the callers saw:", "", *seen]
    return [*out, ""]


def breaker_table(data: dict[str, Any] | None) -> list[str]:
    if data is None:
        return [TODO, ""]
    out = [
        "| Column | Failing calls | Median | 90th pct | Longest call | Back after (each thread) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in data["columns"].values():
        back = ", ".join("never" if s is None else f"{s:.2f} s" for s in r["first_success_s"])
        median = "none" if r["failing_median_ms"] is None else f"{r['failing_median_ms']:.2f} ms"
        p90 = "none" if r["failing_p90_ms"] is None else f"{r['failing_p90_ms']:.2f} ms"
        out.append(
            f"| {r['label']} | {r['failing_calls']} | {median} | {p90} "
            f"| {r['longest_call_s']:.2f} s | {back} |"
        )
    engine, stock = data["columns"].get("engine"), data["columns"].get("stock_hc")
    if engine and stock and engine["all_recovered_s"] is not None:
        out += [
            "",
            f"Every engine thread worked again {engine['all_recovered_s']:.2f} s after the "
            f"server was back (promise: under {data['promise_s']:.0f} s); stock with health "
            f"checks, which opens a new connection per request, "
            + (
                f"{stock['all_recovered_s']:.2f} s."
                if stock["all_recovered_s"] is not None
                else "did not."
            ),
        ]
    return [*out, ""]


def load_table(results: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| Driver | Column | Fault | Calls | Failed | Outcome unknown | Beyond | Lost, dup. "
        "| Back after (median, slowest) |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for driver, name in DRIVERS.items():
        data = results[driver]["load"]
        if data is None:
            out.append(f"| {name} | {TODO} | | | | | | | |")
            continue
        for column in data["columns"].values():
            for fault, r in column["faults"].items():
                slowest = r["slowest_thread_recovery_s"]
                median = r["median_thread_recovery_s"]
                back = (
                    f"{median:.2f} s, {slowest:.2f} s"
                    if slowest is not None and median is not None
                    else f"{r['threads_recovered']} of {data['threads']} threads"
                )
                out.append(
                    f"| {name} | {column['label']} | {fault} | {r['calls']} | {r['failed']} "
                    f"| {r['outcome_unknown']} ({r.get('unknown_applied', '?')} applied) "
                    f"| {r['failed_beyond_unknown']} "
                    f"| {r['lost']}, {r['duplicated']} | {back} |"
                )
    return [*out, ""]


def leaks_table(results: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| Driver | Column | Cycles | Reconnects | ms each | fds | Threads | RSS | Within bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    along: list[str] = []
    for driver, name in DRIVERS.items():
        data = results[driver]["leaks"]
        if data is None:
            out.append(f"| {name} | {TODO} | | | | | | | |")
            continue
        for r in data["results"]:
            first, last = r["points"][0], r["points"][-1]
            out.append(
                f"| {name} | {r['alias']} | {r['cycles']} | {r['reconnects']} "
                f"| {r['per_reconnect_ms']:.1f} | {first['fds']} → {last['fds']} "
                f"| {first['threads']} → {last['threads']} "
                f"| {first['rss_kb'] / 1024:.1f} → {last['rss_kb'] / 1024:.1f} MB "
                f"| {'yes' if r['within_bound'] else '**no**'} |"
            )
            points = ", ".join(
                f"{p['cycle']}: {p['fds']} fds, {p['rss_kb']} kB" for p in r["points"]
            )
            along.append(f"- {name}, {r['alias']}: {points}")
    return [*out, "", "Along the way (cycle: fds, RSS):", "", *along, ""]


def machine_table(results: dict[str, dict[str, Any]], host: dict[str, str]) -> list[str]:
    out = ["| Machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in host.items()), ""]
    out += [
        "Other work may share the machine during a run; the load average (1 min) before and "
        "after each benchmark says how much, and the noise floors above show what it did to "
        "the ratios.",
        "",
        "| Benchmark | Driver | Date | Seconds | Load before | Load after |",
        "|---|---|---|---:|---:|---:|",
    ]
    total = 0.0
    for name in BENCHMARKS:
        for driver, label in DRIVERS.items():
            data = results[driver][name]
            if data is None or "_run" not in data:
                out.append(f"| {name} | {label} | not run | | | |")
                continue
            r = data["_run"]
            total += r["seconds"]
            out.append(
                f"| {name} | {label} | {r['date']} | {r['seconds']:.0f} | {r['load_before']:.2f} "
                f"| {r['load_after']:.2f} |"
            )
    out += ["", f"The benchmarks took {total:.0f} s in all.", ""]
    return out


# --- The README --------------------------------------------------------------------------------


def headline(results: dict[str, dict[str, Any]]) -> list[str]:
    """One table: the figure of each benchmark that a reader checks first, per driver."""
    rows: list[tuple[str, dict[str, str]]] = []

    def row(label: str, cell: Any) -> None:
        cells = {}
        for driver in DRIVERS:
            try:
                cells[driver] = cell(results[driver])
            except (KeyError, TypeError, ValueError, IndexError):
                cells[driver] = "not measured"
        rows.append((label, cells))

    def overhead(r: dict[str, Any], key: str, workload: int) -> str:
        item = r["overhead"][key][workload]
        added = (
            f" (+{item['added_round_trip_us'] / 1000:.1f} ms)"
            if "added_round_trip_us" in item
            else ""
        )
        return f"{item['ratio']:.3f} (noise {item['noise_floor']:.3f}){added}"

    row("Engine / stock time, ORM get(), loopback", lambda r: overhead(r, "results", 0))
    row("… with a longer round trip", lambda r: overhead(r, "delayed", 0))
    row("Engine / stock time, raw SELECT 1, loopback", lambda r: overhead(r, "results", 1))
    row("… with a longer round trip", lambda r: overhead(r, "delayed", 1))

    def recovery(r: dict[str, Any]) -> str:
        phases = [p for p in r["recovery"]["phases"] if not p["skipped"]]
        stock = sum(p["columns"]["stock"]["failed"] for p in phases)
        engine = [p["columns"]["engine"] for p in phases]
        unknown = sum(s["outcome_unknown"] for s in engine)
        failed = sum(s["failed"] for s in engine)
        broken = sum(p["columns"]["stock"]["recovered_after"] is None for p in phases)
        wrong = sum(s["lost"] + s["duplicated"] for s in engine)
        return (
            f"engine {failed} ({unknown} outcome unknown), {wrong} rows wrong; stock {stock}, "
            f"broken after {broken} of {len(phases)}"
        )

    row("Failed calls through the recovery faults", recovery)

    def slowest(r: dict[str, Any]) -> str:
        phases = [p for p in r["recovery"]["phases"] if not p["skipped"]]
        times = {p["title"]: p["columns"]["engine"]["recovered_after"] for p in phases}
        fast = [t for title, t in times.items() if "silent" not in title]
        text = "never" if None in fast else f"{max(fast):.2f} s"
        silent = [t for title, t in times.items() if "silent" in title]
        if silent:
            text += ", silent drop " + ("never" if silent[0] is None else f"{silent[0]:.1f} s")
        return text

    row("Engine's slowest recovery after a fault", slowest)

    def breaker(r: dict[str, Any]) -> str:
        engine = r["breaker"]["columns"]["engine"]
        back = engine["all_recovered_s"]
        return (
            f"failing calls {engine['failing_median_ms']:.2f} ms (median); every thread back "
            + ("never" if back is None else f"{back:.2f} s")
            + " after the server"
        )

    row("20 s outage, 4 threads (breaker)", breaker)

    def load(r: dict[str, Any]) -> str:
        faults = r["load"]["columns"]["engine"]["faults"].values()
        beyond = sum(f["failed_beyond_unknown"] for f in faults)
        slow = [f["slowest_thread_recovery_s"] for f in faults]
        back = "never" if None in slow else f"{max(slow):.2f} s"
        return f"{beyond} failed beyond outcome unknown; slowest thread back {back}"

    row("32 threads, 3 s outage and restart", load)

    def leaks(r: dict[str, Any]) -> str:
        engine = next(x for x in r["leaks"]["results"] if x["alias"] == "engine")
        return (
            f"{engine['reconnects']} reconnects: fds {engine['fd_growth']:+d}, threads "
            f"{engine['thread_growth']:+d}, RSS {engine['rss_growth_kb']:+d} kB"
        )

    row("Leaks", leaks)
    out = ["| | " + " | ".join(DRIVERS.values()) + " |", "|---|" + "---|" * len(DRIVERS)]
    out += [
        f"| {label} | " + " | ".join(cells[d] for d in DRIVERS) + " |" for label, cells in rows
    ]
    return out


def update_readme(
    results: dict[str, dict[str, Any]], host: dict[str, str], images: list[str]
) -> None:
    """Put the headline of this run between the README's benchmark markers."""
    dates = sorted(
        {d["_run"]["date"] for by in results.values() for d in by.values() if d and "_run" in d}
    )
    block = [
        f"Measured {dates[-1] if dates else '(not yet)'} on {host['cores']} cores "
        f"({host['CPU']}), Python {host['Python']}, Django {host['Django']}, PostgreSQL "
        f"{host['PostgreSQL']}; every table, the method and the pictures: "
        f"[docs/benchmarks.md]({PAGE_URL}).",
        "",
        *headline(results),
        "",
    ]
    if "img/recovery-psycopg.svg" in images:
        block.append(
            "![Calls per 100 ms through each fault, stock Django against the engine]"
            f"({IMAGE_URL}/recovery-psycopg.svg)"
        )
    text = README.read_text()
    if README_START not in text or README_END not in text:
        print("run.py: README.md has no benchmark markers; left as it is", file=sys.stderr)
        return
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    body = "\n".join(block).strip()
    README.write_text(f"{head}{README_START}\n{body}\n{README_END}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())
