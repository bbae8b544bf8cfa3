"""PNG plots of a run: latency and statements against N, and ratio-to-floor bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib import ticker

_DPI = 110
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")
_LINES = ("-", "--", "-.", ":")


def _scaling(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in run["workloads"].values() if w["scaling"] and w["cases"]]


def _series(workload: dict[str, Any], field: str) -> dict[str, tuple[list[int], list[float]]]:
    """variant -> (N values, `field` at each N)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for case in workload["cases"]:
        for record in case["variants"]:
            xs, ys = series.setdefault(record["variant"], ([], []))
            xs.append(case["params"]["n"])
            ys.append(record[field])
    return series


def _against_n(run: dict[str, Any], path: Path, field: str, ylabel: str, title: str) -> Path | None:
    workloads = _scaling(run)
    if not workloads:
        return None
    figure, axes = plt.subplots(
        1, len(workloads), figsize=(7.5 * len(workloads), 5.5), squeeze=False
    )
    for axis, workload in zip(axes[0], workloads, strict=True):
        # Hollow markers of different shapes and sizes: lines that coincide (the
        # same statement counts) stay visible.
        for index, (variant, (xs, ys)) in enumerate(_series(workload, field).items()):
            axis.plot(
                xs, ys, label=variant,
                marker=_MARKERS[index % len(_MARKERS)], markersize=11 - index % 6,
                fillstyle="none", linestyle=_LINES[index % len(_LINES)],
            )  # fmt: skip
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("N (customers, each with 5 orders)")
        axis.set_ylabel(ylabel)
        axis.set_title(f"{workload['key']}: {title}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


# Bars of harbordb's own paths stand out; the floor is grey.
_HARBORDB = {"repository", "repository-view", "repository-copy"}


def _colour(variant: str, floor: str) -> str:
    if variant == floor:
        return "tab:gray"
    return "tab:orange" if variant in _HARBORDB else "tab:blue"


def _ratio_bars(run: dict[str, Any], path: Path) -> Path | None:
    # A scaling workload shows its largest N only.
    workloads = [
        {**w, "cases": [w["cases"][-1]]} if w["scaling"] else w
        for w in run["workloads"].values()
        if w["floor"] and w["cases"]
    ]
    if not workloads:
        return None
    figure, axes = plt.subplots(
        len(workloads), 1, figsize=(10, 3.2 * len(workloads)), squeeze=False
    )
    for axis, workload in zip(axes[:, 0], workloads, strict=True):
        labels: list[str] = []
        values: list[float] = []
        colours: list[str] = []
        for case in workload["cases"]:
            for record in case["variants"]:
                if record["ratio_to_floor"] is not None:
                    prefix = f"{case['label']} " if len(workload["cases"]) > 1 else ""
                    labels.append(prefix + record["variant"])
                    values.append(record["ratio_to_floor"])
                    colours.append(_colour(record["variant"], workload["floor"]))
        bars = axis.barh(labels, values, color=colours)
        axis.bar_label(bars, fmt="%.2f", fontsize="small", padding=2)
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlim(min(0.5, min(values) * 0.8), max(values) * 1.6)
        axis.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.invert_yaxis()
        case_note = f" ({workload['cases'][0]['label']})" if len(workload["cases"]) == 1 else ""
        axis.set_title(
            f"{workload['key']}{case_note}: p50 latency / {workload['floor']} p50",
            fontsize="medium",
        )
        axis.tick_params(axis="y", labelsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


def write_all(run: dict[str, Any], output: Path, stem: str) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    made = [
        _against_n(
            run, output / f"{stem}-latency-vs-n.png", "p50_ms", "p50 latency (ms)",
            "latency against N",
        ),
        _against_n(
            run, output / f"{stem}-statements-vs-n.png", "statements_per_op",
            "statements per operation", "statements against N",
        ),
        _ratio_bars(run, output / f"{stem}-ratio-to-floor.png"),
    ]  # fmt: skip
    return [path for path in made if path is not None]
