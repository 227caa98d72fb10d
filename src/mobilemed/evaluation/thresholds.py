"""Operating points: the probability threshold above which an image is called positive.

Contract: callers pass VALIDATION labels and probabilities only. The threshold is then stored in the
model's spec and reused unchanged on the test split and in prediction, so test labels can never move it
(tests/evaluation/test_thresholds.py holds this line).

Rules (a prediction is positive when p >= threshold):
  youden              Youden's J = sensitivity + specificity - 1, robust on flat stretches: among the thresholds
                      whose validation J is within two standard errors of the best J (the plateau), the
                      training loss's own J-optimal point when given (`neutral`) and on it, else the middle
  youden_max          the strictest threshold of maximal validation J (the rule before the plateau; fragile)
  target_sensitivity  the highest threshold whose validation sensitivity is >= target (best specificity)
  target_specificity  the lowest threshold whose validation specificity is >= target (best sensitivity)
  fixed               target, or 0.5 when no target is given
A chosen threshold sits halfway between the validation score it admits and the next lower one, so it
gives exactly the validation operating point while not sitting on an observed score.

Why the plateau: a model with validation AUROC near 1 has a long flat stretch of near-maximal J, and the
maximum's position on it is decided by one or two validation images. The README's PneumoniaMNIST recipe
rerun with the same seed picked 0.114 where the first run picked 0.353, and test accuracy moved from 0.928
to 0.886. J at a fixed threshold has the binomial standard error sqrt(tpr (1 - tpr) / P + fpr (1 - fpr) / N)
(what a bootstrap of the validation split estimates); thresholds whose J is within two of them (a 95% band)
cannot be told apart on this validation split, so `youden` takes the midpoint (in probability) of the range
of such thresholds, the choice farthest from both edges, or the near-best threshold closest to it when the
midpoint itself falls in a dip. Its validation J is within two standard errors of the maximum by construction,
and across validation samples of one model it moves about half as much as the strict maximum
(tests/evaluation/test_thresholds.py; scripts/operating_point_seeds.py measures test accuracy over seeds).

Why the neutral point first: the plateau's thresholds are all equally good on validation, and its middle is
still set by where the few highest-scoring negatives and lowest-scoring positives fall, so it moves between
seeds (0.27-0.60 on Kermany and PneumoniaMNIST fine-tunes whose validation AUROC is 0.995). The training loss
has its own answer: a class-balanced BCE is minimised at p = 0.5 exactly where an image is as likely under
either class, which is the threshold that maximises J (balanced accuracy) on data like the training data
(training/loop.py: neutral_logits, which also covers smoothing, the weight cap and unweighted losses). When
validation cannot tell that point from the best, it is the better-founded choice, and it is the same for every
seed; when validation shows it is worse (it lies off the plateau), validation wins and the middle is taken.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import roc_curve

from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)

RULES = ("youden", "youden_max", "target_sensitivity", "target_specificity", "fixed")
DEFAULT_THRESHOLD = 0.5
PLATEAU_SE = 2.0  # youden: J within this many standard errors of the best counts as the plateau


def choose_thresholds(y_true, y_prob, *, task: str, rule: str = "youden", target: float | None = None,
                      class_names=None, neutral=None, views: int = 1) -> list[float]:
    """Thresholds chosen on validation: binary [t] for P(positive class), multilabel one per finding,
    multiclass [] (argmax needs none). y_true / y_prob follow the package's prediction convention.
    neutral: per output, the probability at which the training loss puts the J-optimal threshold (the
    youden rule takes it when it lies on the validation plateau; see the module docstring), or None.
    views: the rows are this many pooled views of each validation image (training/threshold_views.py); the
    plateau's standard error then counts images, not rows, since the views of one image are not independent."""
    _check_rule(rule, target)
    if task == "multiclass":
        return []
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    outputs = 1 if task == "binary" else y_prob.shape[1]
    neutral = [None] * outputs if neutral is None else list(neutral)
    if len(neutral) != outputs:
        raise ValueError(f"neutral has {len(neutral)} values for {outputs} outputs")
    if task == "binary":
        return [_choose_one(y_true.reshape(-1) == 1, y_prob.reshape(-1), rule, target, "the positive class",
                            neutral[0], views)]
    if task != "multilabel":
        raise ValueError(f"unknown task {task!r}")
    names = class_names or [f"finding {k}" for k in range(y_prob.shape[1])]
    return [_choose_one(y_true[:, k] == 1, y_prob[:, k], rule, target, names[k], neutral[k], views)
            for k in range(outputs)]


def neutral_probabilities(neutral_logits, temperature: float = 1.0) -> list[float] | None:
    """The loss's J-optimal points (training/loop.py: neutral_logits) as probabilities at `temperature`, the
    `neutral` of choose_thresholds; None when the model's provenance has none (checkpoints before it)."""
    if not neutral_logits:
        return None
    return [float(1 / (1 + np.exp(-z / temperature))) for z in neutral_logits]


def recorded_neutral_logits(provenance: dict | None) -> list[float] | None:
    """The loss's neutral logits a checkpoint recorded at training (spec.provenance["thresholds"]), or None."""
    return ((provenance or {}).get("thresholds") or {}).get("neutral_logits")


def _check_rule(rule: str, target: float | None) -> None:
    if rule not in RULES:
        raise MobilemedError(f"threshold rule {rule!r} is unknown; choose one of {', '.join(RULES)}")
    if rule.startswith("target_") and (target is None or not 0 < target <= 1):
        flag = "--target-sensitivity" if rule == "target_sensitivity" else "--target-specificity"
        raise MobilemedError(f"the {rule} rule needs a target in (0, 1], e.g. {flag} 0.95; got {target}")
    if rule == "fixed" and target is not None and not 0 <= target <= 1:
        raise MobilemedError(f"a fixed threshold is a probability in [0, 1]; got {target}")


def _choose_one(truth: np.ndarray, score: np.ndarray, rule: str, target: float | None, name: str,
                neutral: float | None = None, views: int = 1) -> float:
    if rule == "fixed":
        return float(DEFAULT_THRESHOLD if target is None else target)
    if truth.all() or not truth.any():
        log.warning("validation has only one label value for %s: its threshold stays %.2f (rule %s "
                    "needs positives and negatives)", name, DEFAULT_THRESHOLD, rule)
        return DEFAULT_THRESHOLD
    fpr, tpr, cuts = roc_curve(truth, score, drop_intermediate=False)  # cuts descending, cuts[0] = inf
    if rule == "youden":
        return _youden_plateau(fpr, tpr, cuts, positives=truth.sum() / views, negatives=(~truth).sum() / views,
                               neutral=neutral)
    if rule == "youden_max":
        k = int(np.argmax(tpr - fpr))  # first maximum: the strictest threshold among equals
    elif rule == "target_sensitivity":
        k = int(np.argmax(tpr >= target - 1e-12))  # tpr rises with k: first hit has the best specificity
    else:
        allowed = np.flatnonzero(1 - fpr >= target - 1e-12)  # k = 0 (nothing positive) always qualifies
        k = int(allowed[-1])
    return _between(cuts, k)


def _youden_plateau(fpr: np.ndarray, tpr: np.ndarray, cuts: np.ndarray, *, positives: float,
                    negatives: float, neutral: float | None = None) -> float:
    """`neutral` when its operating point is among the ROC cuts whose J is within PLATEAU_SE standard errors
    of the best J, else the middle of their range."""
    j = tpr - fpr
    best = int(np.argmax(j))
    se = np.sqrt(tpr[best] * (1 - tpr[best]) / positives + fpr[best] * (1 - fpr[best]) / negatives)
    near = np.flatnonzero(j >= j[best] - PLATEAU_SE * se - 1e-12)
    near = near[near > 0]  # k = 0 admits nothing: never part of a plateau
    if neutral is not None and 0 < neutral < 1 and _cut_at(cuts, neutral) in near:
        return float(neutral)
    lo, hi = int(near.min()), int(near.max())  # cuts descend with k: lo is the strictest near cut
    # cut k's operating point holds for thresholds in (cuts[k + 1], cuts[k]]: the near range spans
    # (cuts[hi + 1], cuts[lo]], down to 0 when the most lenient near cut calls everything positive
    middle = float((min(cuts[hi + 1], cuts[lo]) if hi + 1 < len(cuts) else 0.0) + cuts[lo]) / 2
    k = _cut_at(cuts, middle)
    if k in near:
        return middle
    # a dip below the band in the middle (scores of one class bunched there): the near cut closest to it
    return _between(cuts, int(near[np.argmin(np.abs(cuts[near] - middle))]))


def _cut_at(cuts: np.ndarray, threshold: float) -> int:
    """The ROC cut whose operating point `threshold` gives (p >= threshold is positive; cuts descend)."""
    return int(np.flatnonzero(cuts >= threshold)[-1])


def _between(cuts: np.ndarray, k: int) -> float:
    """A threshold giving the same validation predictions as cuts[k], halfway to the next lower score."""
    if k == 0:  # nothing positive: just above the highest validation score
        return float(np.nextafter(cuts[1], np.inf))
    if k == len(cuts) - 1:  # everything positive
        return float(cuts[k])
    mid = (cuts[k] + cuts[k + 1]) / 2
    return float(mid if cuts[k + 1] < mid <= cuts[k] else cuts[k])
