"""The per-epoch validation score that drives early stopping and checkpoint selection."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def validation_metrics(y_true: np.ndarray, logits: np.ndarray, task: str) -> dict:
    """{"val_auroc": macro AUROC over classes with both labels present, "val_accuracy": ...}."""
    if task == "binary":
        scores = logits.reshape(-1)
        auroc = _safe_auroc(y_true, scores)
        accuracy = float(((scores > 0).astype(int) == y_true).mean())
    elif task == "multiclass":
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        onehot = np.eye(logits.shape[1])[y_true.astype(int)]
        auroc = float(np.nanmean([_safe_auroc(onehot[:, k], probs[:, k]) for k in range(logits.shape[1])]))
        accuracy = float((probs.argmax(1) == y_true).mean())
    else:
        auroc = float(np.nanmean([_safe_auroc(y_true[:, k], logits[:, k]) for k in range(logits.shape[1])]))
        accuracy = float(((logits > 0) == (y_true > 0.5)).mean())
    return {"val_auroc": auroc, "val_accuracy": accuracy}


def _safe_auroc(y: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")
