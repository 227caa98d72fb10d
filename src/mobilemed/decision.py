"""What a model says: probabilities from its logits, its decisions at the stored thresholds, and their text.

The one home of the decision rule, so that predict, evaluate, explain and the report cannot disagree:
  probabilities  logits / temperature -> sigmoid (binary: one logit; multilabel: one per finding) or softmax
  decisions      binary: class 1 when P(positive) >= threshold; multiclass: the most probable class;
                 multilabel: each finding present when its probability >= its own threshold
  label_text     the class name, or the present findings joined by "|" ("none" when there is none)
Functions take a ModelSpec, or a task name with the thresholds spelled out (evaluation has no spec).
Imports: numpy and spec only, so a deployment reads a model's answer without scipy or torch.
"""
from __future__ import annotations

import numpy as np

from mobilemed.spec import TASKS, ModelSpec

NO_FINDING = "none"
SEPARATOR = "|"


def probabilities(logits, spec: ModelSpec | str, temperature: float | None = None) -> np.ndarray:
    """Binary (N,) or (N, 1) logits -> (N,) P(class_names[1]); multiclass (N, K) -> softmax (N, K);
    multilabel (N, K) -> one sigmoid per finding. temperature defaults to the spec's (1.0 for a task name)."""
    task = _task(spec)
    if temperature is None:
        temperature = spec.temperature if isinstance(spec, ModelSpec) else 1.0
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if task == "binary":
        return _sigmoid(binary_column(z))
    if task == "multiclass":
        z = z - z.max(axis=1, keepdims=True)  # exp never overflows
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return _sigmoid(z)


def is_positive(probs, thresholds) -> np.ndarray:
    """The operating-point rule: positive when p >= threshold (thresholds broadcast over the last axis)."""
    return np.asarray(probs, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)


def decisions(probs, spec: ModelSpec | str, thresholds=None) -> np.ndarray:
    """Binary (N,) int class index by thresholds[0]; multiclass (N,) int argmax; multilabel (N, K) bool.

    thresholds default to the spec's; with a task name they are required for binary and multilabel."""
    task = _task(spec)
    probs = np.asarray(probs, dtype=np.float64)
    if task == "multiclass":
        return probs.argmax(axis=1)
    if thresholds is None:
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"{task} decisions need thresholds")
        thresholds = spec.thresholds
    if task == "binary":
        return is_positive(binary_column(probs), thresholds[0]).astype(int)
    return is_positive(probs, np.asarray(thresholds)[None, :])


def class_probabilities(probs, task: ModelSpec | str) -> np.ndarray:
    """(N, num_classes) probability of every class: binary (N,) P(positive) becomes [1 - p, p]."""
    probs = np.asarray(probs, dtype=np.float64)
    if _task(task) == "binary":
        p = binary_column(probs)
        return np.stack([1 - p, p], axis=1)
    return probs


def label_text(decided, class_names) -> list[str]:
    """Text per row of decisions(): the class name (N,) ints, or for multilabel (N, K) the present
    findings joined by "|", "none" when no finding is present. class_names may be a ModelSpec."""
    names = class_names.class_names if isinstance(class_names, ModelSpec) else list(class_names)
    decided = np.asarray(decided)
    if decided.ndim == 2:
        return [SEPARATOR.join(n for n, hit in zip(names, row) if hit) or NO_FINDING for row in decided]
    return [names[int(k)] for k in decided]


def binary_column(z: np.ndarray) -> np.ndarray:
    """A binary model's single output as (N,), from (N,) or (N, 1)."""
    if z.ndim == 2 and z.shape[1] == 1:
        return z[:, 0]
    if z.ndim != 1:
        raise ValueError(f"binary logits have shape (N,) or (N, 1), got {z.shape}")
    return z


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + e^-z) without overflow for large |z|


def _task(spec: ModelSpec | str) -> str:
    task = spec.task if isinstance(spec, ModelSpec) else spec
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    return task
