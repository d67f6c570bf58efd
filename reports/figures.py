"""Figures as PNG bytes, from plain arrays: ROC and PR curves per category, qualitative grids as in
the paper's Fig. 3 (input, reconstruction, ground truth, predicted map), the correction
trajectory of Fig. 4, and metric-versus-setting plots for sweeps.

Made with matplotlib's object API (no pyplot state) and saved without a timestamp or software
tag, so the same data gives the same bytes: a report regenerated from a tracking server equals
the one written when the run finished.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

DPI = 100
ROLES = ("best", "typical", "worst")
BY_SCORE = {"best": "highest score", "typical": "median score", "worst": "lowest score"}  # roles without masks


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


# ---- curves ---------------------------------------------------------------------------------------
def roc_pr_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray] | None:
    """Exact ROC and precision-recall points of (scores, 0/1 labels), one per distinct score;
    None when one class is missing."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    p, n = int(labels.sum()), int((~labels).sum())
    if p == 0 or n == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = np.cumsum(~y)[last].astype(np.float64)
    return {
        "fpr": np.r_[0.0, fp / n],
        "tpr": np.r_[0.0, tp / p],
        "recall": tp / p,
        "precision": tp / np.maximum(tp + fp, 1),
    }


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def roc_pr_figure(curves: dict[str, dict[str, Any]], title: str) -> bytes:
    """Left: ROC, right: precision-recall; one line per category, AUROC / AP in the legend."""
    fig = Figure(figsize=(11, 4.6))
    ax_roc, ax_pr = fig.subplots(1, 2)
    cmap = _colors(len(curves))
    for (cat, c), color in zip(sorted(curves.items()), cmap):
        fpr, tpr = np.asarray(c["fpr"]), np.asarray(c["tpr"])
        rec, prec = np.asarray(c["recall"]), np.asarray(c["precision"])
        ax_roc.plot(fpr, tpr, color=color, lw=1.4, label=f"{cat} ({100 * _area(fpr, tpr):.1f})")
        ap = float(np.sum(np.diff(np.r_[0.0, rec]) * prec)) if rec.size else float("nan")
        ax_pr.step(rec, prec, where="post", color=color, lw=1.4, label=f"{cat} ({100 * ap:.1f})")
    ax_roc.plot([0, 1], [0, 1], ls=":", color="#999999", lw=1)
    ax_roc.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="ROC (legend: AUROC %)",
    )
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (legend: AP %)")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "upper right", ncol=1 + len(curves) // 10)
    fig.suptitle(title)
    fig.tight_layout()
    return png_bytes(fig)


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


# ---- images ---------------------------------------------------------------------------------------
def _show(ax, img: np.ndarray, cmap: str | None = None, vmin: float | None = None, vmax: float | None = None) -> None:
    ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _score_of(item: dict[str, Any]) -> str:
    """A score that is not the shown map's maximum says what it is of (infer.image_map=latent)."""
    return "" if item.get("score_of", "map") == "map" else f" ({item['score_of']})"


def qualitative_figure(category: str, items: list[dict[str, Any]]) -> bytes:
    """Fig. 3's grid for one category: columns are samples (best, typical, worst), rows the input
    image, DeCo-Diff's reconstruction, the ground-truth mask and the predicted anomaly map. Items
    without a mask (`has_mask` False) get no ground-truth panel; where none has one, there is no
    ground-truth row and the title says the examples are ranked by image score."""
    masked = [it.get("has_mask", True) for it in items]
    rows = (
        ("input", "reconstruction", "ground truth", "predicted map")
        if any(masked)
        else ("input", "reconstruction", "predicted map")
    )
    n = max(len(items), 1)
    fig = Figure(figsize=(2.3 * n + 0.9, 2.35 * len(rows)))
    axes = np.asarray(fig.subplots(len(rows), n, squeeze=False))
    vmax = max((float(np.max(it["map"])) for it in items), default=1.0) or 1.0
    for j, it in enumerate(items):
        _show(axes[0, j], it["input"])
        _show(axes[1, j], it["reconstruction"])
        if any(masked):
            if masked[j]:
                _show(axes[2, j], it["mask"], cmap="gray", vmin=0, vmax=1)
            else:
                axes[2, j].axis("off")
                axes[2, j].text(0.5, 0.5, "no mask", ha="center", va="center", fontsize=9)
        _show(axes[-1, j], it["map"].astype(np.float32), cmap="jet", vmin=0, vmax=vmax)
        role = it["role"] if any(masked) else BY_SCORE.get(it["role"], it["role"])
        name = it["key"].split("/")[-2] if "/" in it["key"] else it["key"]
        axes[0, j].set_title(
            f"{role}\n{name}\nscore {it['score']:.3f}{_score_of(it)}",
            fontsize=8,
        )
    for i, name in enumerate(rows):
        axes[i, 0].set_ylabel(name, fontsize=9)
    if any(masked):
        fig.suptitle(f"{category}: best, typical and worst localisation (pixel AP per image)", fontsize=10)
    else:
        fig.suptitle(
            f"{category}: highest, median and lowest image score (no masks: nothing to rank localisation by)",
            fontsize=10,
        )
    fig.tight_layout()
    return png_bytes(fig)


def trajectory_figure(entries: list[dict[str, Any]]) -> bytes:
    """Fig. 4: per row one anomalous test image, then the decoded prediction after each reverse
    (correction) step, then the final map: the anomaly fades while the normal detail stays."""
    steps = max((len(e["frames"]) for e in entries), default=0)
    cols = steps + 2
    fig = Figure(figsize=(1.9 * cols, 2.0 * max(len(entries), 1) + 0.6))
    axes = np.asarray(fig.subplots(max(len(entries), 1), cols, squeeze=False))
    for i, e in enumerate(entries):
        _show(axes[i, 0], e["input"])
        axes[i, 0].set_ylabel(e["category"], fontsize=9)
        for s in range(steps):
            if s < len(e["frames"]):
                _show(axes[i, s + 1], e["frames"][s])
            else:
                axes[i, s + 1].axis("off")
        _show(axes[i, cols - 1], e["map"].astype(np.float32), cmap="jet", vmin=0)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=9)
            for s in range(steps):
                axes[i, s + 1].set_title(
                    f"step {s + 1}" + (f" (t={e['timesteps'][s]})" if "timesteps" in e else ""), fontsize=9
                )
            axes[i, cols - 1].set_title("map", fontsize=9)
    fig.suptitle("Deviation correction over the reverse steps (predicted normal image after each step)", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


# ---- sweeps -------------------------------------------------------------------------------------
Point = tuple[Any, "float | None", "float | None"]  # (value of the swept key, mean, std across seeds)


def sweep_figure(key: str, series: dict[str, list[list[Point]]], metrics: list[str], title: str) -> bytes:
    """Each metric against one swept key: `series[label][m]` are the points of metric m for one
    combination of the other swept keys (one line each), error bars the std across seeds."""
    n = len(metrics)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.4 * cols, 2.9 * rows + 0.5))
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    xs_all = []
    for pts in series.values():
        for metric_pts in pts:
            xs_all += [p[0] for p in metric_pts]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all) and len(xs_all) > 0
    labels = list(dict.fromkeys(str(x) for x in xs_all))  # order of first appearance
    colors = _colors(len(series))
    for m, ax in enumerate(axes):
        if m >= n:
            ax.axis("off")
            continue
        for (label, pts), color in zip(series.items(), colors):
            p = [q for q in pts[m] if q[1] is not None]
            if not p:
                continue
            x = [q[0] if numeric else labels.index(str(q[0])) for q in p]
            y = [100 * q[1] for q in p]
            err = [100 * (q[2] or 0.0) for q in p]
            ax.errorbar(
                x, y, yerr=err if any(err) else None, marker="o", ms=4, lw=1.3, capsize=3, color=color, label=label
            )
        if not numeric:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=30, fontsize=7, ha="right")
        ax.set_title(metrics[m], fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xlabel(key, fontsize=8)
    if len(series) > 1:
        axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)
