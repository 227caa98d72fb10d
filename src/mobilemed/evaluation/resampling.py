"""Vectorised bootstrap of the test set: every resample at once, as integer weights.

Drawing N indices with replacement is the same as giving each example an integer weight (how often it
was drawn). With weights W of shape (B, N), each metric of all B resamples is a few array operations
instead of B calls to scikit-learn. AUROC and average precision use the weighted forms of
scikit-learn's own formulas, so each resample's value equals `roc_auc_score` /
`average_precision_score` on the resampled arrays (tests/evaluation/test_metrics.py checks this).

A resample in which a metric is undefined (no positives for AUROC or sensitivity, no predicted
positives for PPV, ...) gives NaN for that resample; callers take NaN-aware percentiles.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Weights of this many (resample, example) cells per chunk bound the memory of large test sets.
_CELLS_PER_CHUNK = 4_000_000


def iter_bootstrap_weights(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) float weight matrices, b <= n_resamples in total, from one seeded generator.

    The same (n, n_resamples, seed) always yields the same resamples, which is what makes a paired
    comparison of two runs on the same test set possible.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _CELLS_PER_CHUNK // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) drawn example indices
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start index of each run of equal scores in a sorted score vector."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den == 0 (the metric is undefined in that resample)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_auroc(weights: np.ndarray, truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(B,) AUROC per resample: P(score_pos > score_neg) + 0.5 P(tie), the Mann-Whitney form."""
    order = np.argsort(score, kind="mergesort")  # ascending
    starts = _tie_groups(score[order])
    w, pos = weights[:, order], truth[order]
    pos_w = np.add.reduceat(w * pos, starts, axis=1)  # (B, U) positives per tied score
    neg_w = np.add.reduceat(w * ~pos, starts, axis=1)
    neg_below = np.cumsum(neg_w, axis=1) - neg_w
    pairs = (pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1)
    return _divide(pairs, pos_w.sum(axis=1) * neg_w.sum(axis=1))


def weighted_average_precision(weights: np.ndarray, truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(B,) average precision per resample: sum over thresholds of (recall gain) x precision."""
    order = np.argsort(-score, kind="mergesort")  # descending: thresholds from strict to lenient
    starts = _tie_groups(score[order])
    w, pos = weights[:, order], truth[order]
    tp = np.add.reduceat(w * pos, starts, axis=1)  # (B, U)
    fp = np.add.reduceat(w * ~pos, starts, axis=1)
    cum_tp, cum_fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    precision = np.divide(cum_tp, cum_tp + cum_fp, out=np.zeros_like(cum_tp), where=(cum_tp + cum_fp) > 0)
    return _divide((tp * precision).sum(axis=1), cum_tp[:, -1])


def weighted_counts(weights: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """(B,) confusion counts tp, fp, tn, fn per resample at fixed predictions."""
    return {"tp": weights @ (truth & pred), "fp": weights @ (~truth & pred),
            "tn": weights @ (~truth & ~pred), "fn": weights @ (truth & ~pred)}


def rates_from_counts(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV and F1 from confusion counts (arrays; NaN when undefined)."""
    tp, fp, tn, fn = (np.asarray(c[k], dtype=float) for k in ("tp", "fp", "tn", "fn"))
    return {"sensitivity": _divide(tp, tp + fn), "specificity": _divide(tn, tn + fp),
            "ppv": _divide(tp, tp + fp), "npv": _divide(tn, tn + fn), "f1": _divide(2 * tp, 2 * tp + fp + fn)}


def nan_mean(stack: np.ndarray, axis: int = 0) -> np.ndarray:
    """np.nanmean without the all-NaN warning: an all-undefined slice stays NaN."""
    stack = np.asarray(stack, dtype=float)
    defined = ~np.isnan(stack)
    total = np.where(defined, stack, 0.0).sum(axis=axis)
    return _divide(total, defined.sum(axis=axis).astype(float))


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None, int]:
    """(low, high, n_undefined): the percentile interval over the defined resamples."""
    samples = np.asarray(samples, dtype=float)
    defined = samples[~np.isnan(samples)]
    n_undefined = int(samples.size - defined.size)
    if defined.size == 0:
        return None, None, n_undefined
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high), n_undefined
