"""What the user watches: a live progress bar and a table filling in, or plain lines in a log."""

from __future__ import annotations

import time
from collections.abc import Callable

from experiment import Score
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

# Wide enough for the table when the output is a file or a CI log.
LOG_WIDTH = 120


def make_console(*, stderr: bool, no_color: bool) -> Console:
    console = Console(stderr=stderr, no_color=no_color, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, no_color=no_color, highlight=False, width=LOG_WIDTH)
    return console


class View:
    """Live when the console is a terminal, one line per event otherwise."""

    def __init__(self, console: Console, columns: dict[str, str], total_seconds: float) -> None:
        self.console = console
        self.columns = columns  # key -> label, in the table's order
        self.live_mode = console.is_terminal
        self.results: list[tuple[str, str, list[Score] | None]] = []  # title, note, scores
        self.current: tuple[str, Callable[[], dict[str, tuple[int, int]]]] | None = None
        self.progress = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(bar_width=36),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("starting", total=total_seconds)
        self._live: Live | None = None
        self._finished = False

    def __enter__(self) -> View:
        if self.live_mode:
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=8,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            # Leave the finished bar on screen; the final table is printed after it.
            self.current = None
            self._finished = True
            self._live.refresh()
            self._live.stop()

    def say(self, message: str) -> None:
        """A line above the live area (or in the log)."""
        self.console.print(message, soft_wrap=True)

    def step(self, description: str, advance: float = 0.0) -> None:
        self.progress.update(self.task, description=description, advance=advance)

    def waiting(self, description: str, seconds: float) -> None:
        self.step(description, seconds)

    def phase_started(self, title: str, counts: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.current = (title, counts)
        if not self.live_mode:
            self.say(f"{_clock()} {title}: workers running")

    def fault_injected(self, title: str, what: str, seconds: float) -> None:
        if not self.live_mode:
            self.say(f"{_clock()} {title}: injected ({what}), took {seconds:.1f} s")

    def phase_done(self, title: str, scores: list[Score]) -> None:
        self.current = None
        self.results.append((title, "", scores))
        if not self.live_mode:
            for s in scores:
                self.say(
                    f"{_clock()} {title}: {self.columns[s.column]:<6} calls {s.calls:>4}  failed "
                    f"{s.failed:>4}  recovered {_recovery(s).plain:<8} lost {s.lost}  "
                    f"duplicated {s.duplicated}  {_note(s).plain}"
                )

    def phase_skipped(self, title: str, why: str) -> None:
        self.results.append((title, why, None))
        if not self.live_mode:
            self.say(f"{_clock()} {title}: skipped, {why}")

    def _render(self) -> RenderableType:
        if self._finished:
            return self.progress
        return Group(self.progress, results_table(self.columns, self.results, self.current))


def results_table(
    columns: dict[str, str],
    results: list[tuple[str, str, list[Score] | None]],
    current: tuple[str, Callable[[], dict[str, tuple[int, int]]]] | None = None,
) -> Table:
    """One heading row per fault, one row per column under it; fits in 80 columns."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("fault / engine", no_wrap=True)
    table.add_column("calls", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("recovered", justify="right", no_wrap=True)
    table.add_column("lost", justify="right")
    table.add_column("duplicated", justify="right")
    table.add_column("note", overflow="fold")
    for title, why, scores in results:
        if scores is None:
            short = why.split(" (")[0].split(":")[0]
            table.add_row(
                Text(title, style="bold"),
                "",
                "",
                "",
                "",
                "",
                Text(f"skipped: {short}", style="dim"),
            )
            continue
        table.add_row(Text(title, style="bold"))
        for s in scores:
            table.add_row(
                f"  {columns[s.column]}",
                str(s.calls),
                Text(str(s.failed), style="red" if s.failed else "green"),
                _recovery(s),
                Text(str(s.lost), style="bold red" if s.lost else "green"),
                Text(str(s.duplicated), style="bold red" if s.duplicated else "green"),
                _note(s),
            )
    if current is not None:
        title, counts = current
        live = counts()
        table.add_row(Text(title, style="bold"))
        for key, label in columns.items():
            calls, failed = live.get(key, (0, 0))
            waiting = Text("…", style="dim")
            table.add_row(
                f"  {label}",
                str(calls),
                Text(str(failed), style="red" if failed else ""),
                waiting,
                waiting,
                waiting,
                "",
            )
    return table


def _recovery(s: Score) -> Text:
    if s.recovered_after is None:
        return Text("never", style="red")
    return Text(f"{s.recovered_after:.2f} s", style="green" if s.failed == 0 else "yellow")


def _note(s: Score) -> Text:
    if s.lost or s.duplicated:
        return Text("rows wrong!", style="bold red")
    notes = []
    if s.hung_for is not None:
        notes.append(f"stuck {s.hung_for:.0f} s in a call")
    elif s.failed and s.recovered_after is None:
        notes.append("stays broken")
    if s.outcome_unknown:
        kept = (
            "row there once"
            if s.unknown_applied == s.outcome_unknown
            else f"{s.unknown_applied} rows there"
        )
        notes.append(f"{s.outcome_unknown} outcome unknown, {kept}")
    elif s.unknown_applied:
        # A plain error for a write the server committed: a caller that retries duplicates it.
        notes.append(f"{s.unknown_applied} INSERT raised yet applied")
    return Text("; ".join(notes), style="dim")


def errors_seen(
    columns: dict[str, str], results: list[tuple[str, str, list[Score] | None]]
) -> list[str]:
    """Each column's distinct first errors, with the faults that raised them."""
    seen: dict[tuple[str, str], list[str]] = {}
    for title, _, scores in results:
        for s in scores or []:
            if s.first_error:
                seen.setdefault((columns[s.column], _first_sentence(s.first_error)), []).append(
                    title
                )
    return [f"{engine}: {error} ({', '.join(titles)})" for (engine, error), titles in seen.items()]


def _first_sentence(error: str) -> str:
    head, dot, _ = error.partition(". ")
    return _short(head + dot.strip(), 170)


def _short(error: str | None, width: int = 56) -> str:
    error = error or ""
    return error if len(error) <= width else error[: width - 1] + "…"


_started = time.monotonic()


def _clock() -> str:
    return f"[{time.monotonic() - _started:6.1f} s]"


def render_final(
    console: Console,
    columns: dict[str, str],
    results: list[tuple[str, str, list[Score] | None]],
    legend: list[tuple[str, str]],
    verdict: Text,
) -> None:
    console.print(results_table(columns, results))
    footer = Table.grid(padding=(0, 1))
    footer.add_column(style="dim", no_wrap=True)
    footer.add_column(style="dim")
    for title, why, scores in results:
        if scores is None:
            footer.add_row("skipped", f"{title}: {why}")
    for index, line in enumerate(errors_seen(columns, results)):
        footer.add_row("errors" if index == 0 else "", line)
    for label, line in legend:
        footer.add_row(label, line)
    console.print(footer)
    console.print(verdict)
