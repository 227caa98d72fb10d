"""Figures for people: ROC, precision-recall, confusion matrix, reliability diagram, training curves.

Each plot_* function draws on `ax` (or a new figure of a sensible size) and returns the axes (the
figure for training curves). Figures are built with matplotlib's object API on the Agg canvas, never
pyplot, so no global state or display is involved; matplotlib is imported only when a plot is drawn.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from mobilemed.decision import is_positive
from mobilemed.evaluation.calibration import expected_calibration_error, reliability_curve
from mobilemed.fsutil import atomic_save_figure

MANY_CLASSES = 6  # beyond this, legends move outside the axes and figures get wider


def new_figure(figsize=(5.5, 4.8)):
    """A Figure on the Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Write the figure as PNG (or the suffix's format) atomically."""
    return atomic_save_figure(fig, path, dpi=dpi, bbox_inches="tight")


def _axes(ax, n_curves: int = 1):
    if ax is not None:
        return ax
    return new_figure((8.6, 5.0) if n_curves > MANY_CLASSES else (5.5, 4.8)).add_subplot()


def _class_columns(y_true, y_prob, task: str, class_names, thresholds=None) -> list[tuple]:
    """(name, truth (N,) bool, score (N,), threshold or None) per curve; binary draws the positive class."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    thresholds = list(thresholds or [])
    if task == "binary":
        return [(class_names[1], y_true.reshape(-1) == 1, y_prob.reshape(-1), (thresholds or [None])[0])]
    truth = (y_true[:, None] == np.arange(len(class_names))) if task == "multiclass" else y_true == 1
    cuts = thresholds if task == "multilabel" and len(thresholds) == len(class_names) else [None] * len(class_names)
    return [(name, truth[:, k], y_prob[:, k], cuts[k]) for k, name in enumerate(class_names)]


def _styles(n: int) -> list[dict]:
    """Distinguishable colours (and dashes beyond ten curves) for n curves."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [{"color": cmap(i % cmap.N), "linestyle": "-" if n <= 10 or i % 2 == 0 else "--"} for i in range(n)]


def _legend(ax, n_curves: int, inside_loc: str) -> None:
    if n_curves > MANY_CLASSES:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    else:
        ax.legend(loc=inside_loc, fontsize="small")


def _square(ax, xlabel: str, ylabel: str, title: str | None) -> None:
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal", xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)


def _small_multiples(columns: list[tuple], draw, title: str, xlabel: str, ylabel: str, *, diagonal: bool = False):
    """One small panel per class (legible with 14 findings); returns the Figure."""
    ncols = 4 if len(columns) > 9 else 3
    nrows = math.ceil(len(columns) / ncols)
    fig = new_figure((2.75 * ncols + 0.6, 2.75 * nrows + 0.7))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, column in zip(axes, columns):
        if diagonal:
            ax.plot([0, 1], [0, 1], color="0.6", lw=1, linestyle=":")
        text = draw(ax, *column, color="tab:blue")
        ax.set_title(f"{column[0]} (n+ {int(column[1].sum())})\n{text}", fontsize="medium")
        _square(ax, "", "", None)
    for i, ax in enumerate(axes):
        ax.set_visible(i < len(columns))
        if i + ncols >= len(columns):  # nothing below it: this panel carries the x tick labels
            ax.tick_params(labelbottom=True)
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
    fig.suptitle(title, fontsize="large")
    fig.supxlabel(xlabel)
    fig.supylabel(ylabel)
    return fig


ROC_X, ROC_Y = "False positive rate (1 - specificity)", "True positive rate (sensitivity)"
PR_X, PR_Y = "Recall (sensitivity)", "Precision (PPV)"


def plot_roc(y_true, y_prob, task: str, class_names, ax=None, thresholds=None):
    """ROC curve per class with AUROC; operating points (p >= threshold) are marked when thresholds are given.

    Returns the Axes; with ax=None and more than MANY_CLASSES classes, a Figure of small multiples
    (one panel per class). Both have `.figure`.
    """
    columns = _class_columns(y_true, y_prob, task, class_names, thresholds)
    if ax is None and len(columns) > MANY_CLASSES:
        return _small_multiples(columns, _draw_roc, "ROC curve per class (dot: operating point)", ROC_X,
                                ROC_Y, diagonal=True)
    ax = _axes(ax, len(columns))
    for column, style in zip(columns, _styles(len(columns))):
        _draw_roc(ax, *column, legend=True, point=len(columns) == 1, **style)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, linestyle=":", label="chance")
    _square(ax, ROC_X, ROC_Y, "ROC curve")
    _legend(ax, len(columns), "lower right")
    return ax


def _draw_roc(ax, name, truth, score, threshold, *, legend: bool = False, point: bool = True, **style) -> str:
    """Draw one ROC curve (and its operating point); return the AUROC text."""
    if truth.all() or not truth.any():
        text, fpr, tpr = "AUROC n/a: one label value", [], []
    else:
        fpr, tpr, _ = roc_curve(truth, score)
        text = f"AUROC {auc(fpr, tpr):.3f}"
    ax.plot(fpr, tpr, lw=1.6, label=f"{name} ({text})" if legend else None, **style)
    if threshold is not None and point and len(fpr):
        pred = is_positive(score, threshold)
        sens, spec = _rate(truth & pred, truth), _rate(~truth & ~pred, ~truth)
        ax.plot(1 - spec, sens, "o", color="black", ms=6,
                label=f"operating point, t = {threshold:.3f}\n(sens {sens:.2f}, spec {spec:.2f})")
    return text


def plot_pr(y_true, y_prob, task: str, class_names, ax=None, thresholds=None):
    """Precision-recall curve per class with average precision (AP); a single curve also shows the
    prevalence (the precision of a random model). Returns the Axes, or small multiples as plot_roc."""
    columns = _class_columns(y_true, y_prob, task, class_names, thresholds)
    if ax is None and len(columns) > MANY_CLASSES:
        return _small_multiples(columns, _draw_pr, "Precision-recall curve per class (dotted: prevalence)",
                                PR_X, PR_Y)
    ax = _axes(ax, len(columns))
    for column, style in zip(columns, _styles(len(columns))):
        _draw_pr(ax, *column, legend=True, point=len(columns) == 1, **style)
    _square(ax, PR_X, PR_Y, "Precision-recall curve")
    _legend(ax, len(columns), "lower left")
    return ax


def _draw_pr(ax, name, truth, score, threshold, *, legend: bool = False, point: bool = True, **style) -> str:
    """Draw one precision-recall curve with its prevalence line and operating point; return the AP text."""
    if not truth.any():
        ax.plot([], [], label=f"{name} (AP n/a: no positives)" if legend else None, **style)
        return "AP n/a: no positives"
    precision, recall, _ = precision_recall_curve(truth, score)
    text = f"AP {average_precision_score(truth, score):.3f}"
    ax.plot(recall, precision, lw=1.6, drawstyle="steps-post", label=f"{name} ({text})" if legend else None,
            **style)
    if point:
        ax.axhline(truth.mean(), color="0.6", lw=1, linestyle=":", label=f"prevalence {truth.mean():.2f}")
    if threshold is not None and point:
        pred = is_positive(score, threshold)
        ax.plot(_rate(truth & pred, truth), _rate(truth & pred, pred), "o", color="black", ms=6,
                label=f"operating point, t = {threshold:.3f}")
    return text


def _rate(hits: np.ndarray, of: np.ndarray) -> float:
    return float(hits.sum() / of.sum()) if of.sum() else float("nan")


def plot_confusion(matrix, class_names, ax=None, title: str = "Confusion matrix at the operating point"):
    """Counts with the row percentage (share of each true class) in every cell."""
    matrix = np.asarray(matrix, dtype=int)
    k = len(class_names)
    if ax is None:
        side = min(9.0, 3.4 + 0.55 * k)
        ax = new_figure((side + 0.6, side)).add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    size = "medium" if k <= 4 else "small" if k <= 8 else "x-small"
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]}\n({share[i, j]:.0%})", ha="center", va="center", fontsize=size,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), labels=class_names, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), labels=class_names)
    ax.set(xlabel="Predicted class", ylabel="True class", title=title)
    return ax


def plot_reliability(y_true, y_prob, task: str, n_bins: int = 15, ax=None, temperature: float | None = None):
    """Observed frequency against predicted probability per bin; bars show how many predictions fall in each."""
    curve = reliability_curve(y_true, y_prob, task, n_bins)
    ece = expected_calibration_error(y_true, y_prob, task, n_bins)
    ax = _axes(ax)
    edges, filled = curve["bin_edges"], curve["count"] > 0
    counts_ax = ax.twinx()
    counts_ax.bar(edges[:-1], curve["count"], width=np.diff(edges), align="edge", color="0.85", edgecolor="0.7")
    counts_ax.set_ylabel("predictions per bin" if task != "multilabel" else "image-finding pairs per bin")
    ax.set_zorder(counts_ax.get_zorder() + 1)  # curve above the bars
    ax.patch.set_visible(False)
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, linestyle=":", label="perfect calibration")
    ax.plot(curve["mean_predicted"][filled], curve["observed"][filled], "o-", color="tab:blue", lw=1.6,
            label="model")
    multiclass = task == "multiclass"
    note = f", T = {temperature:.2f}" if temperature not in (None, 1.0) else ""
    ax.set(xlim=(0, 1), ylim=(0, 1), title=f"Reliability diagram (ECE {ece:.3f}{note})",
           xlabel="Confidence (top-class probability)" if multiclass else "Predicted probability",
           ylabel="Accuracy" if multiclass else "Observed fraction positive")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_training_curves(history: list[dict], fig=None):
    """Loss (train and validation) and validation AUROC against epoch; the best epoch is marked."""
    fig = fig or new_figure((10.0, 4.0))
    loss_ax, auroc_ax = fig.subplots(1, 2)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        values = _series(history, key)
        if not all(math.isnan(v) for v in values):
            loss_ax.plot(epochs, values, "o-", ms=3, label=label)
    loss_ax.set(title="Loss", xlabel="Epoch", ylabel="Loss (cross-entropy)")
    auroc = _series(history, "val_auroc")
    auroc_ax.plot(epochs, auroc, "o-", ms=3, color="tab:green", label="validation AUROC")
    if not all(math.isnan(v) for v in auroc):
        best = int(np.nanargmax(auroc))
        auroc_ax.plot(epochs[best], auroc[best], "*", ms=14, color="tab:red",
                      label=f"best: epoch {epochs[best]} ({auroc[best]:.3f})")
    auroc_ax.set(title="Validation AUROC", xlabel="Epoch", ylabel="AUROC (macro)")
    for ax in (loss_ax, auroc_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def plot_member_curves(histories: dict[str, list[dict]], fig=None):
    """An ensemble's networks (--ensemble members, --cv folds): validation loss and AUROC against epoch, one line
    per network, so a member that trained differently from the others shows."""
    fig = fig or new_figure((10.0, 4.0))
    loss_ax, auroc_ax = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        loss_ax.plot(epochs, _series(history, "val_loss"), "o-", ms=3, label=name)
        auroc_ax.plot(epochs, _series(history, "val_auroc"), "o-", ms=3, label=name)
    loss_ax.set(title="Validation loss", xlabel="Epoch", ylabel="Loss (cross-entropy)")
    auroc_ax.set(title="Validation AUROC", xlabel="Epoch", ylabel="AUROC (macro)")
    for ax in (loss_ax, auroc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def _series(history: list[dict], key: str) -> list[float]:
    return [float(h[key]) if h.get(key) is not None else float("nan") for h in history]
