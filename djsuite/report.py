"""What ``run.py`` found, for a person (one pair's report, the summary table) and for CI
(whether any pair regressed: every regression fails the run, none is listed as expected).

Standard library only: the summary runs outside the pairs' virtualenvs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".djsuite" / "results"
#: Lines of a traceback shown in the report (the JSON keeps all of it).
EXCERPT_LINES = 16
#: Where the frames worth showing are: Django's test suite, its TestCase, and this package.
OUR_FRAMES = ("/.djsuite/cache/", "/django/test/testcases.py", "/django_postgresql_reconnect/")


def failures_of(report: dict[str, Any]) -> list[str]:
    """What fails the run: the report's regressions, or the reason its run broke."""
    if "broken" in report:
        return [report["broken"]]
    return [r["label"] for r in report.get("regressions", [])]


def print_report(report: dict[str, Any]) -> None:
    failing, regressions = report["engine_failures"], report["regressions"]
    seconds = report["seconds"]
    print(
        f"\n=== djsuite {report['pair']}: Django {report['django']}, {report['driver']}, "
        f"Python {report['python']}, PostgreSQL {report['postgresql']}"
    )
    print(
        f"{report['tests_run']} tests with the ENGINE ({seconds['engine']} s, "
        f"--parallel {report['parallel']}): {len(failing)} failed or errored"
    )
    print(
        f"{len(report['also_with_stock'])} of them fail with stock Django too "
        f"({report['mode']}, {seconds['stock']} s)"
    )
    for label in report["also_with_stock"]:
        print(f"    {label}")
    if report["only_with_stock"]:
        print(f"{len(report['only_with_stock'])} fail only with stock Django:")
        for label in report["only_with_stock"]:
            print(f"    {label}")
    for app, why in report["left_out"].items():
        print(f"left out: {app} ({why})")
    if report["stand_in_collations"]:
        names = ", ".join(report["stand_in_collations"])
        print(f'(no ICU on this server: {names} stood in by "C"; its tests fail on both sides)')
    print(f"{len(report['flaky'])} flaky (failed once with the ENGINE, passed again alone)")
    for label in report["flaky"]:
        print(f"    {label}")
    print(f"REGRESSIONS (fail with the ENGINE twice, pass with stock): {len(regressions)}")
    for regression in regressions:
        print(f"  {regression['label']} ({regression['outcome']})")
        for line in excerpt(regression["traceback"]):
            print(f"      | {line}")
    print(f"wall time {seconds['wall']} s; logs in {report['logs']}/\n")


def excerpt(traceback: str) -> list[str]:
    """What tells one failure from another: the frames of OUR_FRAMES (each with its source
    line) and every error of the chain, paths shortened, at most EXCERPT_LINES lines. The rest
    of Django's frames are left out: they are the same for every test."""
    # Python 3.11+ underlines the failing expression: no news in an excerpt.
    lines = [line.rstrip() for line in traceback.splitlines() if line.strip(" ^~")]
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line.startswith("  File "):
            if any(place in line for place in OUR_FRAMES):
                kept.append(line)
                following = lines[index + 1] if index + 1 < len(lines) else ""
                if following.startswith("    "):
                    kept.append(following)
        elif not line.startswith((" ", "Traceback (most recent", "The above exc", "During hand")):
            kept.append(line[:200])
    site = re.compile(r'"[^"]*/(site-packages|lib/python3\.\d+)/')
    shortened = [site.sub('"', line.replace(f"{ROOT}/", "")) for line in kept]
    if len(shortened) > EXCERPT_LINES:
        shortened = [*shortened[: EXCERPT_LINES - 2], "...", shortened[-1]]
    return shortened


def summarize() -> int:
    """Tabulate the last report of every pair into summary.json; 1 when any regressed."""
    # Each pair's -postgis line after its plain one.
    paths = sorted(RESULTS.glob("py*.json"), key=lambda path: path.stem.partition("-postgis"))
    reports = [json.loads(path.read_text()) for path in paths]
    if not reports:
        print("djsuite: no reports yet in .djsuite/results/", file=sys.stderr)
        return 2
    print(
        "\n| pair | Django | tests | ENGINE fails | stock fails too | regressions (new) "
        "| flaky | wall s | finished |\n|---|---|--:|--:|--:|--:|--:|--:|---|"
    )
    for r in reports:
        if "broken" in r or "skipped" in r:
            what = "broken" if "broken" in r else "skipped"
            print(f"| {r['pair']} | {r['django']} | {what}: {r[what]} |")
            continue
        cells = [
            r["pair"],
            r["django"],
            r["tests_run"],
            len(r["engine_failures"]),
            len(r["also_with_stock"]),
            len(r["regressions"]),
            len(r["flaky"]),
            r["seconds"]["wall"],
            r["finished"],
        ]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    (RESULTS / "summary.json").write_text(json.dumps({"pairs": reports}, indent=1))
    print(f"reports: {(RESULTS / 'summary.json').relative_to(ROOT)}")
    failing = [report["pair"] for report in reports if failures_of(report)]
    if failing:
        print(f"regressions or broken runs: {', '.join(failing)}")
    return 1 if failing else 0
