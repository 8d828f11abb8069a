"""Training curves and the ablation bar chart.

Reads what the training engine writes (:mod:`ikd_edu.train.engine`): ``metrics.csv``
(``step, epoch, lr`` and one column per weighted loss term: ``total, gt, logit, feature,
affinity, relation``, whichever a run has) and ``eval.csv`` (``step, epoch, AP, AP50, ...``
or ``PCKh``). Columns may be missing, empty or added later; whatever is there is plotted.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure

from ikd_edu.viz.skeleton import new_figure

__all__ = ["read_csv_rows", "plot_training_curves", "plot_ablation", "METRIC_PREFIXES"]

#: columns that are evaluation metrics, not loss terms
METRIC_PREFIXES = ("AP", "AR", "PCK", "Mean", "mAP", "OKS")
_NON_LOSS = {"step", "epoch", "lr", "time", "seconds", "wall", "images", "img_per_s"}


def _float(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def read_csv_rows(path) -> list[dict]:
    """A CSV file -> list of dicts with float values (NaN where a cell is empty or not a number)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV log at {path}; pass the run folder's metrics.csv (written by the training engine)")
    with open(path, newline="") as fh:
        return [{k: _float(v) if k not in ("name", "variant") else v for k, v in row.items() if k is not None}
                for row in csv.DictReader(fh)]


def _rows(source) -> list[dict]:
    if source is None:
        return []
    if isinstance(source, (str, os.PathLike)):
        return read_csv_rows(source)
    rows = list(source)
    if rows and not isinstance(rows[0], dict):
        raise ValueError("rows must be dicts (column -> value), e.g. from csv.DictReader")
    return rows


def _column(rows: Sequence[dict], key: str) -> np.ndarray:
    return np.array([_float(r.get(key)) for r in rows], dtype=np.float64)


def _is_metric(key: str) -> bool:
    return key.startswith(METRIC_PREFIXES)


def plot_training_curves(source, keys: Iterable[str] | None = None, eval_source=None, metric: str = "AP",
                         log_scale: bool = True, title: str | None = None) -> Figure:
    """Loss terms vs step (left) and the validation metric vs step (right).

    Args:
        source: a run folder (reads ``metrics.csv`` and, if present, ``eval.csv``), a CSV
            path, or rows (a list of dicts, e.g. ``csv.DictReader``).
        keys: loss columns to plot; default every numeric column that is not ``step``,
            ``epoch``, ``lr`` or a metric. Missing keys are skipped.
        eval_source: where the metric comes from (path or rows); default ``eval.csv`` next
            to ``source``, else the metric columns of ``source`` itself.
        metric: the metric column (``AP`` for COCO, ``PCKh`` for MPII); its siblings
            (``AP50``, ``AP75``) are not drawn.
        log_scale: log y axis for the losses (terms differ by orders of magnitude).

    Returns:
        a Figure with 1 Axes (losses; or the metric alone for an ``eval.csv``) or 2 Axes
        (losses | metric). Raises ValueError if nothing in the rows can be plotted.
    """
    eval_rows: list[dict] = []
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = Path(source)
        if eval_source is None and (folder / "eval.csv").is_file():
            eval_source = folder / "eval.csv"
        source = folder / "metrics.csv"
        if not source.is_file() and eval_source is not None:
            source = None
    elif eval_source is None and isinstance(source, (str, os.PathLike)):
        sibling = Path(source).with_name("eval.csv")
        if sibling.is_file() and sibling != Path(source):
            eval_source = sibling
    rows = _rows(source)
    eval_rows = _rows(eval_source) if eval_source is not None else [r for r in rows if not math.isnan(_float(r.get(metric)))]

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    if keys is None:
        keys = [k for k in columns if k not in _NON_LOSS and not _is_metric(k)
                and np.isfinite(_column(rows, k)).any()]
    else:
        keys = [k for k in keys if k in columns]
    has_metric = bool(eval_rows) and bool(np.isfinite(_column(eval_rows, metric)).any())
    if not keys and not has_metric:
        raise ValueError(f"nothing to plot: no loss columns and no {metric!r} column in the rows "
                         f"(columns: {columns or 'none'}); pass the run's metrics.csv / eval.csv or keys=[...]")

    n = int(bool(keys)) + int(has_metric)
    fig, axes = new_figure(1, n, panel_size=4.0, aspect=0.75)
    axes = list(axes[0])
    if keys:
        ax = axes.pop(0)
        step = _column(rows, "step") if "step" in columns else np.arange(len(rows), dtype=np.float64)
        for key in keys:
            y = _column(rows, key)
            ok = np.isfinite(y) & np.isfinite(step)
            if log_scale:
                ok &= y > 0
            if ok.any():
                ax.plot(step[ok], y[ok], label=key, lw=1.6 if key == "total" else 1.2,
                        color="black" if key == "total" else None)
        if log_scale and ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (weighted terms)")
        ax.set_title("training losses", fontsize=10)
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if has_metric:
        ax = axes.pop(0)
        step = _column(eval_rows, "step") if any("step" in r for r in eval_rows) else np.arange(len(eval_rows), dtype=float)
        y = _column(eval_rows, metric)
        ok = np.isfinite(y) & np.isfinite(step)
        ax.plot(step[ok], y[ok], marker="o", color="tab:green", label=metric)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(f"validation {metric}", fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


_BASELINE_NAMES = ("labels-only", "labels_only", "labels only", "labels", "baseline", "gt", "none")


def _find(row: dict, *keys: str):
    for k in keys:
        if k in row and row[k] is not None and row[k] != "":
            return row[k]
    return None


def plot_ablation(rows, metric: str = "AP", baseline: str | None = None, title: str | None = None,
                  scale: float = 1.0) -> Figure:
    """The ablation as bars: one bar per variant, mean +- std over seeds, the labels-only line.

    Args:
        rows: list of dicts (or a CSV path), one per variant: ``name`` (or ``variant``),
            ``<metric>_mean`` (or ``<metric>``), optional ``<metric>_std`` and ``n``/``seeds``
            (shown under the bar).
        metric: the metric's name in the keys.
        baseline: the name of the labels-only row; default the first row whose name is
            one of ``labels-only``, ``labels_only``, ``labels``, ``baseline``, ``gt``, ``none``.
        scale: multiply values (``100`` to show AP x 100).

    Returns:
        a Figure with one Axes: bars with error bars, a dashed horizontal line (and a grey
        +-std band) at the labels-only mean.
    """
    rows = _rows(rows)
    if not rows:
        raise ValueError("plot_ablation needs at least one row (name, AP_mean, AP_std)")
    names, means, stds, counts = [], [], [], []
    for i, r in enumerate(rows):
        names.append(str(_find(r, "name", "variant") or f"variant {i}"))
        means.append(_float(_find(r, f"{metric}_mean", metric, "mean")) * scale)
        stds.append(_float(_find(r, f"{metric}_std", "std")) * scale)
        counts.append(_find(r, "n", "seeds", "num_seeds"))
    means_arr = np.array(means)
    stds_arr = np.nan_to_num(np.array(stds), nan=0.0)
    if not np.isfinite(means_arr).any():
        raise ValueError(f"no {metric}_mean / {metric} values in the rows; keys of the first row: {sorted(rows[0])}")
    if baseline is None:
        baseline = next((n for n in names if n.lower() in _BASELINE_NAMES), None)
    elif baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the rows: {names}")

    fig, axes = new_figure(1, 1, panel_size=max(4.0, 0.9 * len(names) + 1.5), aspect=0.6)
    ax = axes[0, 0]
    x = np.arange(len(names))
    colours = ["0.6" if n == baseline else f"C{i % 10}" for i, n in enumerate(names)]
    ax.bar(x, np.nan_to_num(means_arr), yerr=stds_arr, color=colours, capsize=4, edgecolor="black", linewidth=0.5)
    for xi, m, s, c in zip(x, means_arr, stds_arr, counts):
        if np.isfinite(m):
            label = f"{m:.1f}" + (f"\n±{s:.1f}" if s > 0 else "")
            ax.text(xi, m + s, label, ha="center", va="bottom", fontsize=8)
    if baseline is not None:
        b = names.index(baseline)
        ax.axhline(means_arr[b], color="black", ls="--", lw=1.0, label=f"{baseline}: {means_arr[b]:.1f}")
        if stds_arr[b] > 0:
            ax.axhspan(means_arr[b] - stds_arr[b], means_arr[b] + stds_arr[b], color="0.5", alpha=0.15, lw=0)
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(x)
    ax.set_xticklabels([n + (f"\n(n={int(_float(c))})" if c is not None and np.isfinite(_float(c)) else "")
                        for n, c in zip(names, counts)], fontsize=8, rotation=20 if len(names) > 5 else 0)
    ax.set_ylabel(metric + (" x100" if scale == 100 else ""))
    finite = means_arr[np.isfinite(means_arr)]
    top = float(np.max(finite + stds_arr[np.isfinite(means_arr)]))
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.set_title(title or f"ablation: {metric} (mean ± std over seeds)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig
