"""The comparison figures. Each group is drawn as the mean over its seeds with a min–max band, so the spread
between seeds stays visible next to the difference between groups. Inputs are plain numbers: one
`{x: y}` curve per run, grouped by label."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines or in CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

Curves = Mapping[str, Sequence[Mapping[float, float]]]  # group label → one {x: y} per run
COLORS = plt.get_cmap("tab10").colors
METRIC_NAMES = {"exact": "EM", "f1": "F1", "HasAns_f1": "F1 (answerable)", "NoAns_f1": "F1 (unanswerable)"}


def band(curves: Sequence[Mapping[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, min, max over the runs at every x any run logged (runs missing an x are left out there)."""
    xs = np.array(sorted({x for c in curves for x in c}), dtype=float)
    ys = np.array([[c.get(x, np.nan) for x in xs] for c in curves], dtype=float).reshape(len(curves), xs.size)
    return xs, np.nanmean(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)


def history_curves(log_history: Sequence[Mapping[str, Any]]) -> dict[str, dict[float, float]]:
    """From the Trainer's log history: loss and pre-clip gradient norm by step; eval_loss, eval_f1, eval_exact by
    epoch."""
    out: dict[str, dict[float, float]] = {"loss": {}, "grad_norm": {}, "eval_loss": {}, "eval_f1": {}, "eval_exact": {}}
    for entry in log_history:
        if "train_runtime" in entry:
            break  # what follows is the final evaluation of the best checkpoint, not another epoch
        if entry.get("loss") is not None and entry.get("step") is not None:
            out["loss"].setdefault(float(entry["step"]), float(entry["loss"]))
            if entry.get("grad_norm") is not None:
                out["grad_norm"].setdefault(float(entry["step"]), float(entry["grad_norm"]))
        for key in ("eval_loss", "eval_f1", "eval_exact"):
            if entry.get(key) is not None and entry.get("epoch") is not None:
                out[key].setdefault(round(float(entry["epoch"]), 2), float(entry[key]))
    return out


def _draw(ax: Axes, curves: Curves, title: str, xlabel: str, ylabel: str, markers: bool) -> None:
    drawn = False
    for i, (label, runs) in enumerate(curves.items()):
        runs = [r for r in runs if r]
        if not runs:
            continue
        xs, mean, lo, hi = band(runs)
        color = COLORS[i % len(COLORS)]
        ax.plot(
            xs, mean, color=color, marker="o" if markers else None, label=textwrap.fill(f"{label} (n={len(runs)})", 45)
        )
        if len(runs) > 1:
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        drawn = True
    positive = [v for runs in curves.values() for r in runs for v in r.values() if v > 0]
    if positive and max(positive) / min(positive) > 30:  # heads whose losses differ in scale stay readable
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xlabel == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_loss_curves(train_loss: Curves, eval_loss: Curves, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    _draw(left, train_loss, "Train loss (mean over seeds, band = min–max)", "optimizer step", "loss", False)
    _draw(right, eval_loss, "Eval loss per epoch (mean over seeds, band = min–max)", "epoch", "loss", True)
    fig.text(0.5, 0.005, "The span and CRF heads optimise different losses: compare shapes, not levels.",
             ha="center", fontsize=8, color="0.35")  # fmt: skip
    return _save(fig, path)


def _marks(ax: Axes, curves: Curves, best_epochs: Mapping[str, Sequence[float]], baseline: float | None) -> None:
    """Each group's best epochs (the checkpoints reported) as stars on its runs' curves, and the all-"" baseline."""
    for i, (label, runs) in enumerate(curves.items()):
        points = [(e, run[e]) for run, e in zip(runs, best_epochs.get(label, []), strict=False) if e in run]
        if points:
            ax.scatter(*zip(*points, strict=True), marker="*", s=140, color=COLORS[i % len(COLORS)], zorder=3,
                       edgecolors="black", linewidths=0.5)  # fmt: skip
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linestyle=":", linewidth=1.2, label='all-"" baseline')
        ax.legend(fontsize=8)


def plot_f1_curves(
    f1: Curves,
    exact: Curves,
    path: Path,
    best_epochs: Mapping[str, Sequence[float]] | None = None,
    baseline: float | None = None,
) -> Path:
    """F1 and EM per epoch; stars: each run's best epoch (its reported checkpoint); dotted: answering "" to all."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    _draw(left, f1, "Eval F1 per epoch (mean over seeds, band = min–max)", "epoch", "F1 (%)", True)
    _draw(right, exact, "Eval exact match per epoch (mean over seeds, band = min–max)", "epoch", "EM (%)", True)
    _marks(left, f1, best_epochs or {}, baseline)
    _marks(right, exact, best_epochs or {}, baseline)
    fig.text(0.5, 0.005, 'Stars: the best epoch of each run (the checkpoint reported). Dotted: the all-"" baseline.',
             ha="center", fontsize=8, color="0.35")  # fmt: skip
    return _save(fig, path)


def plot_threshold_curves(
    curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    applied: Mapping[str, Sequence[float]],
    path: Path,
) -> Path:
    """F1 and EM against the null threshold (answer "" when the no-answer probability exceeds it), re-scored from
    each run's saved best spans and no-answer probabilities: mean over seeds, band = min–max, and a marker at
    the threshold each group's runs applied (their mean)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, column, name in ((axes[0], 1, "F1"), (axes[1], 2, "EM")):
        drawn = False
        for i, (label, runs) in enumerate(curves.items()):
            if not runs:
                continue
            grid = runs[0][0]
            ys = np.array([r[column] for r in runs])
            color = COLORS[i % len(COLORS)]
            ax.plot(grid, ys.mean(axis=0), color=color, label=textwrap.fill(f"{label} (n={len(runs)})", 45))
            if len(runs) > 1:
                ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2, linewidth=0)
            used = [t for t in applied.get(label, []) if t == t]
            if used:
                t = float(np.mean(used))
                ax.scatter([t], [float(np.interp(t, grid, ys.mean(axis=0)))], color=color, marker="D", s=50,
                           zorder=3, edgecolors="black", linewidths=0.5)  # fmt: skip
            drawn = True
        ax.set(title=f"{name} against the null threshold", xlabel="null threshold (no-answer probability)",
               ylabel=f"{name} (%)", xlim=(0, 1))  # fmt: skip
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no per-question best spans saved", ha="center", va="center", transform=ax.transAxes)
    fig.text(0.5, 0.005, "Diamonds: the threshold each group applied. Left of it more questions get \"\".",
             ha="center", fontsize=8, color="0.35")  # fmt: skip
    return _save(fig, path)


def plot_grad_norms(norms: Curves, max_norms: Mapping[str, float], path: Path) -> Path:
    """Pre-clip gradient norm per logged step, each group's max_grad_norm as a dashed line of its colour."""
    fig, ax = plt.subplots(figsize=(13, 4.8))
    _draw(ax, norms, "Gradient norm before clipping (mean over seeds, band = min–max)", "optimizer step", "norm", False)
    for i, limit in enumerate(max_norms.values()):
        ax.axhline(limit, color=COLORS[i % len(COLORS)], linestyle="--", linewidth=1, alpha=0.7)
    ax.set_yscale("log")
    fig.text(0.5, 0.005, "Dashed: optimizer.max_grad_norm. Steps above it are clipped to it.",
             ha="center", fontsize=8, color="0.35")  # fmt: skip
    return _save(fig, path)


def plot_metric_bars(
    stats: Mapping[str, Mapping[str, tuple[float, float]]],
    metrics: Sequence[str],
    path: Path,
    per_seed: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> Path:
    """`stats`: group label → metric → (mean, std); error bars are ± std over seeds (none for one seed), and the
    seeds' own scores (`per_seed`: group label → one {metric: score} per run) as points on their bar. The axis is
    0–100 whatever the gap: a 0.25-point difference is drawn as what it is."""
    fig, ax = plt.subplots(figsize=(max(8.0, 2.2 * len(metrics) + 0.6 * len(stats)), 5))
    width = 0.8 / max(1, len(stats))
    x = np.arange(len(metrics))
    for i, (label, by_metric) in enumerate(stats.items()):
        means = np.array([by_metric[m][0] for m in metrics], dtype=float)
        stds = np.array([by_metric[m][1] for m in metrics], dtype=float)  # nan (one seed): no error bar
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(
            pos, means, width, yerr=stds, capsize=4, color=COLORS[i % len(COLORS)], label=textwrap.fill(label, 45)
        )
        ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], padding=3, fontsize=8)
        for run in (per_seed or {}).get(label, []):
            ax.scatter(pos, [run.get(m, np.nan) for m in metrics], color="black", s=10, zorder=3)
    ax.set_xticks(x, [METRIC_NAMES.get(m, m) for m in metrics])
    title = "SQuAD v2 eval metrics per group (bars: mean over seeds, error bars: ± sample std, dots: seeds)"
    lone = [label for label, runs in (per_seed or {}).items() if len(runs) == 1]
    if lone:
        title += f"\nn = 1 (no spread to show) for {', '.join(lone)}"
    ax.set(ylabel="score (%)", ylim=(0, 112), title=title)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes: bars reach 100 and long group labels would hide them.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=min(3, max(1, len(stats))))
    return _save(fig, path)
