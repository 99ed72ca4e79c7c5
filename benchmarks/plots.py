"""Draw the benchmarks' pictures as small SVGs, from the JSON that ``run.py`` saved.

    python benchmarks/plots.py RESULTS_DIR IMAGE_DIR

Needs matplotlib (the ``bench`` dependency group: ``pip install --group bench``); ``run.py``
runs this with the Python of the nox session ``bench`` and prints the names of the files
written, one a line. Text stays text in the SVG (``svg.fonttype: none``) and no date is
written, so that a file is small and changes only when its figures do.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt

plt.rcParams.update(
    {
        "svg.fonttype": "none",
        "svg.hashsalt": "dpr",
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "font.size": 8,
        "axes.titlesize": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)
DRIVERS = {"psycopg": "psycopg 3", "psycopg2": "psycopg2"}
OK, FAILED, FAULT = "#2b7a3d", "#c0392b", "#f4d03f"
STOCK_COLOR, ENGINE_COLOR = "#7f8c8d", "#1f5fa8"


def main(results: Path, images: Path) -> int:
    images.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for driver in DRIVERS:
        data = _load(results / f"recovery-{driver}.json")
        if data:
            written.append(recovery(data, images / f"recovery-{driver}.svg"))
        data = _load(results / f"breaker-{driver}.json")
        if data:
            written.append(
                single_phase(
                    data["phase"],
                    data["columns"],
                    f"{data['outage_s']:.0f} s outage, {data['threads']} threads of reads, "
                    f"{DRIVERS[driver]}",
                    images / f"breaker-{driver}.svg",
                )
            )
        data = _load(results / f"load-{driver}.json")
        if data:
            written.append(load(data, images / f"load-{driver}.svg"))
    overheads = {d: _load(results / f"overhead-{d}.json") for d in DRIVERS}
    if any(overheads.values()):
        written.append(overhead({d: o for d, o in overheads.items() if o}, images))
    for path in written:
        print(path)
    return 0


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _timeline(ax: Any, phase: dict[str, Any], key: str) -> None:
    line = phase["timelines"][key]
    step = line["bin_s"]
    xs = [i * step for i in range(len(line["ok"]))]
    ax.axvspan(
        phase["injected_at_s"], phase["fault_end_s"], color=FAULT, alpha=0.6, lw=0, label="fault"
    )
    ax.axvline(phase["injected_at_s"], color="#b7950b", lw=0.8, ls="--")
    ax.step(*_changes(xs, line["ok"]), where="post", color=OK, lw=0.9, label="ok")
    ax.step(*_changes(xs, line["failed"]), where="post", color=FAILED, lw=0.9, label="failed")
    ax.locator_params(nbins=5)
    ax.set_xlim(0, phase["length_s"])
    ax.set_ylim(bottom=0)


def _legend(fig: Any, ax: Any) -> None:
    """One legend for the figure, top right, clear of every panel."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", frameon=False, fontsize=7, ncol=3)


def _changes(xs: list[float], ys: list[int]) -> tuple[list[float], list[int]]:
    """Only the points where a step changes (and the last): the same steps, fewer vertices."""
    keep = [i for i in range(len(ys)) if i == 0 or i == len(ys) - 1 or ys[i] != ys[i - 1]]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _save(fig: Any, path: Path) -> Path:
    """Write the SVG with short numbers and no indentation: half the size, the same picture."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = re.sub(r'="[^"]*"', _shorter, buffer.getvalue())
    path.write_text(re.sub(r"\n\s+", "\n", text))
    return path


def _shorter(attribute: re.Match[str]) -> str:
    """An attribute's numbers to one decimal (a tenth of a point), its lines joined."""
    return re.sub(r"(\d\.\d)\d+", r"\1", attribute[0]).replace("\n", " ")


def recovery(data: dict[str, Any], path: Path) -> Path:
    """Each fault a row, stock and the engine side by side: calls per 100 ms."""
    phases = [p for p in data["phases"] if not p["skipped"]]
    keys = [k for k in ("stock", "engine") if k in data["columns"]]
    fig, axes = plt.subplots(
        len(phases), len(keys), figsize=(7.5, 1.25 * len(phases) + 0.6), squeeze=False
    )
    for row, phase in enumerate(phases):
        for col, key in enumerate(keys):
            ax = axes[row][col]
            _timeline(ax, phase, key)
            s = phase["columns"][key]
            when = "never" if s["recovered_after"] is None else f"{s['recovered_after']:.2f} s"
            ax.set_title(
                f"{phase['title']}: {data['columns'][key]}, {s['failed']} failed, "
                f"recovered {when}",
                loc="left",
            )
    for ax in axes[-1]:
        ax.set_xlabel("seconds from the start of the phase")
    fig.supylabel("calls per 100 ms", fontsize=8)
    fig.suptitle(f"Recovery from faults, {DRIVERS[data['driver']]}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _legend(fig, axes.flat[0])
    return _save(fig, path)


def single_phase(phase: dict[str, Any], columns: dict[str, Any], title: str, path: Path) -> Path:
    """One phase, a row per column."""
    keys = list(phase["timelines"])
    fig, axes = plt.subplots(len(keys), 1, figsize=(7.5, 1.2 * len(keys) + 0.6), sharex=True)
    for row, key in enumerate(keys):
        ax = axes[row]
        _timeline(ax, phase, key)
        ax.set_title(columns[key]["label"], loc="left")
    axes[-1].set_xlabel("seconds from the start of the phase")
    fig.supylabel("calls per 100 ms", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _legend(fig, axes.flat[0])
    return _save(fig, path)


def load(data: dict[str, Any], path: Path) -> Path:
    """A row per column, the outage and the restart side by side."""
    keys = list(data["phases"])
    titles = list(next(iter(data["phases"].values())))
    fig, axes = plt.subplots(
        len(keys), len(titles), figsize=(7.5, 1.3 * len(keys) + 0.6), squeeze=False
    )
    for row, key in enumerate(keys):
        for col, title in enumerate(titles):
            phase = data["phases"][key][title]
            ax = axes[row][col]
            _timeline(ax, phase, key)
            ax.set_title(f"{data['columns'][key]['label']}: {title}", loc="left")
    for ax in axes[-1]:
        ax.set_xlabel("seconds from the start of the phase")
    fig.supylabel("calls per 100 ms", fontsize=8)
    fig.suptitle(f"{data['threads']} threads on one alias, {DRIVERS[data['driver']]}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _legend(fig, axes.flat[0])
    return _save(fig, path)


def overhead(by_driver: dict[str, dict[str, Any]], images: Path) -> Path:
    """Per-call time percentiles, stock against the engine, loopback, per driver and workload."""
    workloads = [r["workload"] for r in next(iter(by_driver.values()))["results"]]
    fig, axes = plt.subplots(
        len(by_driver), len(workloads), figsize=(7.5, 2.0 * len(by_driver) + 0.5), squeeze=False
    )
    for row, (driver, data) in enumerate(by_driver.items()):
        percentiles = data["percentiles"]
        for col, r in enumerate(data["results"]):
            ax = axes[row][col]
            ax.plot(
                r["stock_percentiles_us"], percentiles, color=STOCK_COLOR, lw=1.2, label="stock"
            )
            ax.plot(
                r["engine_percentiles_us"], percentiles, color=ENGINE_COLOR, lw=1.2, label="engine"
            )
            ax.set_title(
                f"{DRIVERS[driver]}, {r['workload']}: median ratio {r['ratio']:.3f} "
                f"(noise {r['noise_floor']:.3f})",
                loc="left",
            )
            ax.set_xlabel("µs per call")
            ax.set_ylabel("percentile")
            if row == 0 and col == 0:
                ax.legend(loc="lower right", frameon=False)
    fig.suptitle("Per-statement time on a healthy connection, loopback", fontsize=9)
    fig.tight_layout()
    return _save(fig, images / "overhead.svg")


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
