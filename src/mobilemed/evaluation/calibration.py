"""Temperature scaling and calibration error. numpy + scipy only.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T fitted on VALIDATION by
minimising the negative log-likelihood; it changes how confident the probabilities are, never the
ranking (AUROC is unchanged). The fitted T is stored in the spec and every prediction path applies it
through `mobilemed.decision.probabilities` (re-exported here as `probabilities_from_logits`).

What calibration measures per task:
  binary      P(positive class) against the fraction of positives
  multiclass  the top-class confidence against accuracy (the usual multiclass ECE)
  multilabel  every image-finding probability against the finding's presence, pooled over findings
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from mobilemed.decision import binary_column, decisions
from mobilemed.decision import probabilities as probabilities_from_logits  # noqa: F401 - the historical name

# T outside this range means the logits are degenerate rather than mis-calibrated.
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def apply_temperature(logits, temperature: float, task: str) -> np.ndarray:
    """Calibrated probabilities: the same as probabilities_from_logits(logits, task, temperature)."""
    return probabilities_from_logits(logits, task, temperature)


def fit_temperature(logits, y_true, *, task: str) -> float:
    """The T > 0 minimising validation NLL of softmax/sigmoid(logits / T); bounded to [0.05, 20]."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true)
    if task == "binary":
        z = binary_column(z)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(z / np.exp(log_t), y, task),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def negative_log_likelihood(logits: np.ndarray, y_true: np.ndarray, task: str) -> float:
    """Mean NLL of the labels under the logits (binary/multilabel: binary cross-entropy, stable form)."""
    if task == "multiclass":
        return float(-log_softmax(logits, axis=1)[np.arange(len(y_true)), y_true.astype(int)].mean())
    z = logits.reshape(y_true.shape)
    return float(np.mean(np.logaddexp(0.0, z) - y_true * z))


def reliability_curve(y_true, y_prob, task: str, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins of predicted probability (confidence for multiclass).

    Returns bin_edges (n_bins + 1,), and per bin: mean_predicted, observed (fraction positive, or
    accuracy for multiclass) and count; empty bins have NaN means and count 0.
    """
    confidence, outcome = _calibration_pairs(y_true, y_prob, task)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)  # p = 1.0 joins the last bin
    count = np.bincount(which, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(which, weights=confidence, minlength=n_bins) / count
        observed = np.bincount(which, weights=outcome, minlength=n_bins) / count
    return {"bin_edges": edges, "mean_predicted": mean_predicted, "observed": observed, "count": count}


def expected_calibration_error(y_true, y_prob, task: str, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |observed - predicted| over the reliability bins (0 = calibrated)."""
    curve = reliability_curve(y_true, y_prob, task, n_bins)
    gap = np.abs(curve["observed"] - curve["mean_predicted"])
    filled = curve["count"] > 0
    return float(np.sum(curve["count"][filled] * gap[filled]) / curve["count"].sum())


def _calibration_pairs(y_true, y_prob, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted probability, 0/1 outcome) pairs that calibration compares."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    if task == "multiclass":
        return y_prob.max(axis=1), (decisions(y_prob, task) == y_true).astype(float)
    if task in ("binary", "multilabel"):
        return y_prob.reshape(-1), (y_true.reshape(-1) == 1).astype(float)
    raise ValueError(f"unknown task {task!r}")
