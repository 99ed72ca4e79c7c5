"""Watch stock Django and this engine meet the faults people meet, side by side.

Run it with ``python3 dev.py demo`` (``--help`` for the options). A short front end over the
recovery benchmark's fault harness (``benchmarks/fault_lab.py``, ``benchmarks/experiment.py``, the
worker loop ``benchmarks/worker.py``): it starts a throwaway PostgreSQL, a worker process per
engine, each through a FaultProxy of its own, injects one fault per phase, then counts on the
server what each engine lost or duplicated. It exits 0 when this engine lost and duplicated
nothing, 1 when it did, 2 when the demo could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "src")]

import fault_lab as lab  # noqa: E402
from display import View, make_console, render_final  # noqa: E402
from experiment import Phase, Score, phase_seconds, run_phase, skipped_phase  # noqa: E402
from rich.text import Text  # noqa: E402

import django_postgresql_reconnect  # noqa: E402

ENGINE = "engine"
STOCK = "stock"
BEFORE = 1.0  # seconds of healthy calls before each fault
OUTAGE = 3.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py demo",
        description=(
            "Run a small Django worker against a throwaway PostgreSQL, once per engine, side by "
            "side: Django's own backend with persistent connections, and this engine. Inject "
            "faults one after another and count failed calls, time to recover, and rows "
            "lost or duplicated. Exit 0 when this engine lost and duplicated nothing. The "
            "same harness as benchmarks/recovery.py."
        ),
        epilog="faults, in order: " + "; ".join(f"{f.name} ({f.what})" for f in lab.FAULTS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--faults",
        default=",".join(f.name for f in lab.FAULTS),
        help="comma-separated faults to inject (default: all of them)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=4.0,
        help="how long each phase runs after its fault (default 4; the silent drop runs at "
        f"least {lab.SILENT_WATCH:.0f} s: the engine's tcp_user_timeout is 20 s)",
    )
    parser.add_argument(
        "--loop",
        choices=["worker", "request"],
        default="worker",
        help="worker (default): a long-running loop, nothing closes a broken connection "
        "between jobs; request: Django's request signals around each job, as for a view",
    )
    parser.add_argument(
        "--driver",
        choices=["psycopg", "psycopg2"],
        default="psycopg",
        help="the driver of the stock and engine workers (default psycopg)",
    )
    parser.add_argument(
        "--with-1.2.0",
        dest="with_legacy",
        action="store_true",
        help="add a column for django-postgresql-reconnect 1.2.0, installed into "
        f"{lab.V120_DIR.relative_to(ROOT)} (Django<6, psycopg2); skipped if it does not install",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the figures as JSON on stdout (the view goes to stderr)",
    )
    parser.add_argument("--no-color", action="store_true", help="no colours")
    parser.add_argument(
        "--verbose", action="store_true", help="show the engine's log (reconnects, losses)"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = [name for name in names if name not in lab.BY_NAME]
    if unknown or not names:
        parser.error(
            f"unknown fault(s) {', '.join(unknown) or '(none given)'}; choose from "
            + ", ".join(lab.BY_NAME)
        )
    args.selected = [f for f in lab.FAULTS if f.name in names]
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    console = make_console(stderr=args.json, no_color=args.no_color)
    logging.getLogger("django_postgresql_reconnect").addHandler(logging.NullHandler())
    logging.getLogger("django_postgresql_reconnect").propagate = False

    legacy: dict[str, Any] = {}
    installer = None
    if args.with_legacy:
        console.print(
            f"1.2.0      preparing {lab.V120_DIR.relative_to(ROOT)} (Django<6, psycopg2) "
            "in the background"
        )

        def install() -> None:
            legacy["ready"], legacy["note"] = lab.prepare_v120()

        installer = threading.Thread(target=install, daemon=True)
        installer.start()

    the_lab = lab.Lab.open(
        [STOCK, "v120", ENGINE] if args.with_legacy else [STOCK, ENGINE], outage=OUTAGE
    )
    try:
        silent_skip = None
        if any(f.silent for f in args.selected):
            silent_skip = the_lab.open_silent_link()
        return _run(args, console, the_lab, silent_skip, installer, legacy, started)
    finally:
        the_lab.close()


def _run(
    args: argparse.Namespace,
    console: Any,
    the_lab: lab.Lab,
    silent_skip: str | None,
    installer: threading.Thread | None,
    legacy: dict[str, Any],
    started: float,
) -> int:
    columns = [lab.STOCK, lab.ENGINE]
    server = the_lab.server
    console.print(
        f"server     PostgreSQL {server.bindir.parent.name} on {server.host}:{server.port}, "
        "one FaultProxy per engine"
        + (
            f"; silent-link server on {the_lab.silent_server.host}"
            if the_lab.silent_server
            else ""
        )
    )
    options = {
        "driver": args.driver,
        "request_cycle": args.loop == "request",
        "on_log": _log_printer(console) if args.verbose else None,
    }
    processes = lab.start_columns(the_lab, columns, **options)
    console.print(
        f"engines    stock = {lab.STOCK_BACKEND}, engine = {lab.ENGINE_BACKEND} "
        f"{django_postgresql_reconnect.__version__} ({processes[-1].version})"
    )
    legacy_note = ""
    if installer is not None:
        installer.join()
        if legacy.get("ready"):
            try:
                extra = lab.start_columns(the_lab, [lab.V120], **options)
                processes.insert(1, extra[0])
                legacy_note = f"{legacy['note']}; {extra[0].version}"
            except Exception as error:
                legacy_note = f"skipped: {error}"
        else:
            legacy_note = f"skipped: {legacy.get('note')}"
        console.print(f"1.2.0      {legacy_note}")
    labels = {p.column.key: p.column.label for p in processes}

    planned = sum(
        phase_seconds(fault, the_lab, before=BEFORE, after=args.seconds) for fault in args.selected
    )
    view = View(console, labels, planned)
    phases: list[Phase] = []
    try:
        with view:
            for fault in args.selected:
                if fault.silent and silent_skip:
                    phases.append(skipped_phase(fault, the_lab, silent_skip, view))
                    view.waiting("skipped", phase_seconds(fault, the_lab, before=0, after=0))
                else:
                    phases.append(
                        run_phase(
                            the_lab,
                            processes,
                            fault,
                            before=BEFORE,
                            after=args.seconds,
                            observer=view,
                        )
                    )
            view.step("done")
    finally:
        for process in processes:
            process.close()

    elapsed = time.monotonic() - started
    mine = [p.scores[ENGINE] for p in phases if not p.skipped]
    clean = all(s.clean for s in mine)
    verdict = _verdict(phases, clean)
    render_final(console, labels, view.results, _legend(args, labels, elapsed), verdict)
    if args.json:
        document = {
            "engine_version": django_postgresql_reconnect.__version__,
            "workers": {p.column.key: p.version for p in processes},
            "loop": args.loop,
            "seconds": args.seconds,
            "legacy": legacy_note or None,
            "phases": [phase.as_json() for phase in phases],
            "total_seconds": round(elapsed, 1),
            "verdict": verdict.plain,
            "engine_clean": clean,
        }
        print(json.dumps(document, indent=2))
    return 0 if clean else 1


def _log_printer(console: Any) -> Any:
    def show(column: str, line: str) -> None:
        console.print(Text(f"{column:<6} {line}", style="dim"), soft_wrap=True)

    return show


def _verdict(phases: list[Phase], clean: bool) -> Text:
    by_column: dict[str, list[Score]] = defaultdict(list)
    for phase in phases:
        for key, s in phase.scores.items():
            by_column[key].append(s)
    mine = by_column.get(ENGINE, [])
    if not mine:
        return Text("Verdict: no fault was injected", style="bold yellow")
    lost = sum(s.lost for s in mine)
    duplicated = sum(s.duplicated for s in mine)
    failed = sum(s.failed for s in mine)
    unknown = sum(s.outcome_unknown for s in mine)
    applied = sum(s.unknown_applied for s in mine)
    unrecovered = sum(s.recovered_after is None for s in mine)
    slowest = max((s.recovered_after for s in mine if s.recovered_after is not None), default=0.0)
    stock = by_column.get(STOCK, [])
    stock_failed = sum(s.failed for s in stock)
    stock_broken = sum(s.recovered_after is None for s in stock)
    if not clean:
        return Text(
            f"Verdict: FAIL: the engine lost {lost} and duplicated {duplicated} row(s).",
            style="bold red",
        )
    recovery = (
        f"recovered from each within {slowest:.1f} s of its end"
        if unrecovered == 0
        else f"did not recover from {unrecovered} of {len(mine)}"
    )
    if failed == 0:
        failures = "no call failed"
    else:
        failures = f"{failed} call{'s' * (failed != 1)} failed"
        if unknown == applied == failed == 1:
            failures += " (reported as outcome unknown; its row is there, exactly once)"
        elif unknown:
            failures += (
                f" ({unknown} reported as outcome unknown, of which {applied} applied, once each)"
            )
    stock_text = ""
    if stock:
        stock_text = f" Stock Django: {stock_failed} failed calls, " + (
            f"still broken after {stock_broken} of {len(stock)} faults."
            if stock_broken
            else "recovered from each."
        )
    return Text(
        f"Verdict: the engine lost 0 rows and duplicated 0 through {len(mine)} faults; "
        f"{failures}; it {recovery}.{stock_text}",
        style="bold green" if unrecovered == 0 else "bold yellow",
    )


def _legend(
    args: argparse.Namespace, labels: dict[str, str], elapsed: float
) -> list[tuple[str, str]]:
    loop = (
        "a long-running worker loop (a management command, a thread consuming a queue): "
        "nothing closes a broken connection between jobs (Django does so at the end of an "
        "HTTP request, Celery around each task; --loop request shows that case)"
        if args.loop == "worker"
        else "request_started and request_finished around each job, as Django sends around a view"
    )
    engines = "stock: Django's PostgreSQL backend; engine: this checkout, default settings"
    if "v120" in labels:
        engines += "; 1.2.0: its backend, RECONNECT=True, its decorator on each job"
    return [
        (
            "workload",
            "per engine, a worker process whose job runs every 20 ms: SELECT count(*), then "
            "INSERT a row with a unique token; autocommit, CONN_MAX_AGE=None; " + loop,
        ),
        ("engines", engines),
        (
            "columns",
            "failed: calls that raised or hung; recovered: from the end of the fault (the "
            "server back up, the fault in place) to the first success after the last failure; "
            "lost: acknowledged INSERTs missing on the server; duplicated: extra copies of a row",
        ),
        ("time", f"{elapsed:.0f} s in all; the same harness as benchmarks/recovery.py"),
    ]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # no server binaries, a worker that would not start...
        logging.getLogger(__name__).debug("demo failed", exc_info=True)
        print(f"demo: could not run: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(2)
