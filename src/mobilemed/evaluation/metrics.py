"""Metrics at the operating point, each with a bootstrap confidence interval. numpy + scikit-learn only.

Conventions (the package's prediction arrays): y_true binary/multiclass (N,) int class index, multilabel
(N, K) 0/1; y_prob binary (N,) = P(class_names[1]), multiclass (N, K) softmax, multilabel (N, K) sigmoids.

Per class ("one column"): binary has one column, the positive class at thresholds[0]; multiclass has one
one-vs-rest column per class with argmax predictions; multilabel one column per finding at its threshold.
Macro values are the mean over columns where the metric is defined (a finding without positives has no
AUROC or sensitivity); for binary the macro value is the positive class's value. Multilabel accuracy is
label-wise (the fraction of correct image-finding decisions).

Point estimates come from scikit-learn. Confidence intervals are percentile intervals over bootstrap
resamples of the test set (fixed seed; every metric and class sees the same resamples, so they are
paired); resamples in which a metric is undefined are left out of its interval and counted.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from mobilemed.decision import decisions
from mobilemed.evaluation import resampling as rs

log = logging.getLogger(__name__)

CLASS_METRICS = ("auroc", "average_precision", "sensitivity", "specificity", "ppv", "npv", "f1")
OVERALL_METRICS = ("auroc_macro", "average_precision_macro", "accuracy", "balanced_accuracy",
                   "sensitivity_macro", "specificity_macro", "ppv_macro", "npv_macro", "f1_macro")
HEADLINE = ("auroc_macro", "average_precision_macro", "accuracy", "sensitivity_macro", "specificity_macro",
            "ppv_macro", "npv_macro")
FOR_POSITIVE = ("sensitivity", "specificity", "ppv", "npv")  # binary: named with the positive class
LABELS = {"auroc": "AUROC", "average_precision": "Average precision", "accuracy": "Accuracy",
          "balanced_accuracy": "Balanced accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity",
          "ppv": "PPV", "npv": "NPV", "f1": "F1"}


@dataclass
class Estimate:
    """A point estimate with its bootstrap interval (None when undefined or not bootstrapped)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_undefined: int = 0  # resamples in which the metric was undefined (left out of the interval)

    def to_dict(self) -> dict:
        """{"value": v, "ci": [low, high] or None} (+ "n_resamples_undefined" when some were)."""
        out = {"value": self.value, "ci": None if self.ci_low is None else [self.ci_low, self.ci_high]}
        if self.n_undefined:
            out["n_resamples_undefined"] = self.n_undefined
        return out

    def format(self, digits: int = 3) -> str:
        if self.value is None:
            return "n/a"
        text = f"{self.value:.{digits}f}"
        if self.ci_low is not None:
            text += f" [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"
        return text


@dataclass
class MetricsReport:
    task: str
    class_names: list[str]
    n: int
    thresholds: list[float]
    overall: dict[str, Estimate]
    per_class: dict[str, dict]  # class -> {metric: Estimate, "n_positive": int, "threshold": float | None}
    confusion_matrix: list[list[int]] | None  # rows true, columns predicted; None for multilabel
    bootstrap: dict = field(default_factory=dict)

    def headline(self) -> dict[str, Estimate]:
        """The metrics a comparison of runs shows, by name (auroc_macro, accuracy, ...)."""
        return {name: self.overall[name] for name in HEADLINE}

    def to_dict(self) -> dict:
        """JSON-ready, NaN never appears (undefined values are None). Overall metrics sit at the top level:
        report["auroc_macro"] == {"value": 0.93, "ci": [0.91, 0.95]}."""
        per_class = {name: {k: v.to_dict() if isinstance(v, Estimate) else v for k, v in entry.items()}
                     for name, entry in self.per_class.items()}
        return {"task": self.task, "class_names": list(self.class_names), "n": self.n,
                "positive_class": self.class_names[1] if self.task == "binary" else None,
                "thresholds": list(self.thresholds),
                **{k: v.to_dict() for k, v in self.overall.items()},
                "per_class": per_class, "confusion_matrix": self.confusion_matrix, "bootstrap": self.bootstrap}


def compute_metrics(y_true, y_prob, *, task: str, class_names, thresholds=None, n_bootstrap: int = 1000,
                    seed: int = 0, confidence: float = 0.95) -> MetricsReport:
    """Metrics of predictions at the operating thresholds, with percentile bootstrap CIs.

    thresholds: binary [t] on P(class_names[1]) (default [0.5]); multilabel one per finding (default 0.5
    each); ignored for multiclass (argmax). n_bootstrap=0 skips the intervals.
    """
    y_true, y_prob = _check_arrays(y_true, y_prob, task, list(class_names))
    thresholds = _resolve_thresholds(thresholds, task, len(class_names))
    columns = _columns(y_true, y_prob, task, list(class_names), thresholds)
    point_cols = {name: _point_column(*col) for name, col in columns.items()}
    point_overall = _overall(point_cols, _point_accuracy(y_true, y_prob, task, columns), task)
    samples_cols, samples_overall = _bootstrap(y_true, y_prob, task, columns, n_bootstrap, seed)
    overall = {m: _estimate(point_overall[m], samples_overall.get(m), confidence) for m in OVERALL_METRICS}
    per_class = {}
    for name, (truth, _score, _pred, threshold) in columns.items():
        entry = {m: _estimate(point_cols[name][m], samples_cols.get(name, {}).get(m), confidence)
                 for m in CLASS_METRICS}
        entry.update(n_positive=int(truth.sum()), threshold=threshold)
        if task == "multilabel":
            entry["confusion_matrix"] = point_cols[name]["confusion_matrix"]
        per_class[name] = entry
    boot = {"n_resamples": int(n_bootstrap), "seed": int(seed), "confidence": confidence,
            "method": "percentile, resampling test images with replacement"} if n_bootstrap else {}
    return MetricsReport(task, list(class_names), len(y_true), thresholds, overall, per_class,
                         _confusion(y_true, y_prob, task, columns), boot)


def _check_arrays(y_true, y_prob, task: str, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    k = len(class_names)
    if task == "binary":
        y_prob = y_prob.reshape(-1) if y_prob.ndim == 2 and y_prob.shape[1] == 1 else y_prob
        expected_prob, expected_true = (len(y_true),), 1
    elif task in ("multiclass", "multilabel"):
        expected_prob, expected_true = (len(y_true), k), 1 if task == "multiclass" else 2
    else:
        raise ValueError(f"unknown task {task!r}")
    if y_prob.shape != expected_prob or y_true.ndim != expected_true or len(y_true) == 0:
        raise ValueError(f"{task} metrics need y_true with {expected_true} dims and y_prob of shape "
                         f"{expected_prob}; got {y_true.shape} and {y_prob.shape}")
    if task == "multilabel" and y_true.shape[1] != k:
        raise ValueError(f"y_true has {y_true.shape[1]} findings but class_names lists {k}")
    if task == "binary" and k != 2:
        raise ValueError(f"a binary task has two class names [negative, positive]; got {class_names}")
    return y_true.astype(int), y_prob


def _resolve_thresholds(thresholds, task: str, k: int) -> list[float]:
    if task == "multiclass":
        return []
    wanted = 1 if task == "binary" else k
    thresholds = [0.5] * wanted if thresholds is None or len(thresholds) == 0 else [float(t) for t in thresholds]
    if len(thresholds) != wanted:
        raise ValueError(f"{task} metrics need {wanted} threshold(s), got {len(thresholds)}")
    return thresholds


def _columns(y_true, y_prob, task, class_names, thresholds) -> dict[str, tuple]:
    """class name -> (truth (N,) bool, score (N,), prediction (N,) bool, threshold or None)."""
    pred = decisions(y_prob, task, thresholds)
    if task == "binary":
        return {class_names[1]: (y_true == 1, y_prob, pred == 1, thresholds[0])}
    if task == "multiclass":
        return {name: (y_true == k, y_prob[:, k], pred == k, None) for k, name in enumerate(class_names)}
    return {name: (y_true[:, k] == 1, y_prob[:, k], pred[:, k], thresholds[k]) for k, name in enumerate(class_names)}


def _point_column(truth, score, pred, _threshold) -> dict:
    """One column's metrics as (1,) arrays (NaN when undefined), via scikit-learn for the ranking ones."""
    both = 0 < truth.sum() < len(truth)
    counts = {"tp": np.sum(truth & pred), "fp": np.sum(~truth & pred), "tn": np.sum(~truth & ~pred),
              "fn": np.sum(truth & ~pred)}
    out = {m: np.atleast_1d(v) for m, v in rs.rates_from_counts(counts).items()}
    out["auroc"] = np.array([roc_auc_score(truth, score) if both else np.nan])
    out["average_precision"] = np.array([average_precision_score(truth, score) if truth.any() else np.nan])
    out["confusion_matrix"] = [[int(counts["tn"]), int(counts["fp"])], [int(counts["fn"]), int(counts["tp"])]]
    return out


def _point_accuracy(y_true, y_prob, task, columns) -> np.ndarray:
    if task == "multiclass":
        return np.array([accuracy_score(y_true, decisions(y_prob, task))])
    return np.array([np.mean([np.mean(truth == pred) for truth, _s, pred, _t in columns.values()])])


def _overall(cols: dict[str, dict], accuracy: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """Overall metrics from per-column arrays (shape (1,) for the point estimate, (B,) for resamples)."""
    out = {f"{m}_macro": rs.nan_mean(np.stack([c[m] for c in cols.values()])) for m in CLASS_METRICS}
    out["accuracy"] = accuracy
    sens = np.stack([c["sensitivity"] for c in cols.values()])
    spec = np.stack([c["specificity"] for c in cols.values()])
    # multiclass: mean recall over classes (scikit-learn's balanced accuracy); else mean of (sens + spec) / 2
    out["balanced_accuracy"] = rs.nan_mean(sens) if task == "multiclass" else rs.nan_mean((sens + spec) / 2)
    return out


def _bootstrap(y_true, y_prob, task, columns, n_bootstrap: int, seed: int) -> tuple[dict, dict]:
    """Per-column and overall metric samples (B,) over the same resamples; ({}, {}) when n_bootstrap=0."""
    if n_bootstrap <= 0:
        return {}, {}
    chunks = [_bootstrap_chunk(w, y_true, y_prob, task, columns)
              for w in rs.iter_bootstrap_weights(len(y_true), n_bootstrap, seed)]
    cols = {name: {m: np.concatenate([c[0][name][m] for c in chunks]) for m in CLASS_METRICS} for name in columns}
    overall = {m: np.concatenate([c[1][m] for c in chunks]) for m in OVERALL_METRICS}
    return cols, overall


def _bootstrap_chunk(w: np.ndarray, y_true, y_prob, task, columns) -> tuple[dict, dict]:
    cols = {}
    for name, (truth, score, pred, _t) in columns.items():
        cols[name] = rs.rates_from_counts(rs.weighted_counts(w, truth, pred))
        cols[name]["auroc"] = rs.weighted_auroc(w, truth, score)
        cols[name]["average_precision"] = rs.weighted_average_precision(w, truth, score)
    n = w.sum(axis=1)
    if task == "multiclass":
        accuracy = w @ (decisions(y_prob, task) == y_true) / n
    else:
        accuracy = np.mean([w @ (truth == pred) / n for truth, _s, pred, _t in columns.values()], axis=0)
    return cols, _overall(cols, accuracy, task)


def _estimate(point: np.ndarray, samples: np.ndarray | None, confidence: float) -> Estimate:
    value = float(point[0])
    if math.isnan(value):
        return Estimate(None)
    if samples is None:
        return Estimate(value)
    low, high, n_undefined = rs.percentile_interval(samples, confidence)
    return Estimate(value, low, high, n_undefined)


def _confusion(y_true, y_prob, task, columns) -> list[list[int]] | None:
    """Rows: true class, columns: predicted class, in class_names order (binary: [[TN, FP], [FN, TP]])."""
    if task == "multilabel":
        return None
    if task == "binary":
        (truth, _s, pred, _t), = columns.values()
        true_idx, pred_idx, k = truth.astype(int), pred.astype(int), 2
    else:
        true_idx, pred_idx, k = y_true, decisions(y_prob, task), y_prob.shape[1]
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (true_idx, pred_idx), 1)
    return matrix.tolist()


def format_run_summary(metrics: dict) -> str:
    """The text block `train` prints for a run's metrics.json: validation (or, with --cv, the pooled
    out-of-fold predictions with their intervals) and test."""
    blocks = []
    cv = metrics.get("cv")
    if cv:  # metrics["val"] is the same pooled out-of-fold set, without the intervals
        blocks.append(f"[cross-validation: pooled out-of-fold predictions of {cv['folds']} folds; "
                      f"deployed: {cv['deployed']}]\n{format_summary(cv['pooled_out_of_fold'])}")
    blocks += [f"[{split}]\n{format_summary(metrics[split])}"
               for split in (("test",) if cv else ("val", "test")) if split in metrics]
    return "".join(f"\n{block}\n" for block in blocks).rstrip("\n")


def format_summary(metrics: dict) -> str:
    """A person-readable text block of a to_dict() report: overall metrics with CIs, then per class."""
    level = f"{int(metrics['bootstrap']['confidence'] * 100)}% CI" if metrics.get("bootstrap") else ""
    labels = [metric_label(name, metrics["task"], metrics.get("positive_class")) for name in OVERALL_METRICS]
    width = max(28, max(map(len, labels)) + 2)
    lines = [_summary_header(metrics), f"{'metric':<{width}}{'value':>7}  {level}"]
    for name, label in zip(OVERALL_METRICS, labels):
        lines.append(f"{label:<{width}}{_fmt(metrics[name])}")
    if metrics["task"] != "binary":
        width = max(len(n) for n in metrics["per_class"]) + 2
        lines += ["", f"{'class':<{width}}{'n+':>6}  {'AUROC':>6} {'sens':>6} {'spec':>6} {'PPV':>6} {'NPV':>6}"]
        for name, entry in metrics["per_class"].items():
            values = " ".join(_fmt_value(entry[m]) for m in ("auroc", "sensitivity", "specificity", "ppv", "npv"))
            lines.append(f"{name:<{width}}{entry['n_positive']:>6}  {values}")
    return "\n".join(lines)


def metric_label(name: str, task: str, positive_class: str | None = None) -> str:
    """"Sensitivity for PNEUMONIA" (binary: the metrics that depend on which class is the finding name it),
    "Sensitivity (macro)" (multiclass, multilabel), "AUROC"."""
    base = name.removesuffix("_macro")
    if task == "binary":
        return LABELS[base] + (f" for {positive_class}" if positive_class and base in FOR_POSITIVE else "")
    return LABELS[base] + (" (macro)" if name.endswith("_macro") else "")


def _summary_header(metrics: dict) -> str:
    if metrics["task"] == "binary":
        return (f"n = {metrics['n']}, positive class {metrics['positive_class']!r}, "
                f"threshold {metrics['thresholds'][0]:.3f}")
    return f"n = {metrics['n']}, {metrics['task']}, {len(metrics['class_names'])} classes"


def _fmt_value(entry: dict) -> str:
    return f"{entry['value']:6.3f}" if entry.get("value") is not None else f"{'n/a':>6}"


def _fmt(entry: dict) -> str:
    text = f"{entry['value']:7.3f}" if entry.get("value") is not None else f"{'n/a':>7}"
    if entry.get("ci"):
        text += f"  [{entry['ci'][0]:.3f}, {entry['ci'][1]:.3f}]"
    return text
