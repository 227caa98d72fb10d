"""Out-of-distribution score on a model's penultimate features. numpy only.

The detector answers "is this image like the ones the model was trained on?", not "is the prediction
right". It lives below torch so that a torch-free path (ONNX Runtime + numpy) can use it too.

Method (Lee et al., NeurIPS 2018, "A simple unified framework for detecting out-of-distribution samples"):
fit one Gaussian per class on the TRAINING features, all sharing one covariance; the score of a feature
vector f is its smallest squared Mahalanobis distance to a class mean,

    score(f) = min_k (f - mu_k)^T P (f - mu_k),     P = Sigma^-1.

Sigma is the pooled within-class covariance shrunk towards a multiple of the identity by the
Ledoit-Wolf formula (Ledoit & Wolf 2004): with 1280 features and a few thousand images the raw covariance
is close to singular, and shrinkage gives a well-conditioned P without a tuning knob.

Multilabel tasks fit a single class-agnostic Gaussian (labels=None): a chest X-ray with three findings
belongs to three "classes" at once and most images have none, so per-finding Gaussians would be fitted on
overlapping, lopsided sets; one Gaussian of all training images asks the question the flag is about.

Features are L2-normalised first (normalize=True, the default), as Mueller & Hein (2025, "Mahalanobis++")
recommend: the norm of penultimate features varies a lot between images, which breaks the Gaussian
assumption, and an unusual image often shows up in the direction of its features rather than their size.
Measured by bench/bench_ood.py: a PneumoniaMNIST model flags about 52% of BreastMNIST (ultrasound) images
with raw features and about 89% with normalised ones, with ~1-2% of its own test split flagged either way.

The threshold is set on VALIDATION scores (a quantile, default 0.99, so about 1% of in-distribution images
are flagged by construction); an image is out of distribution when its score is above the threshold.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)
METHODS = {True: "mahalanobis_l2", False: "mahalanobis"}  # normalize -> method name
DEFAULT_QUANTILE = 0.99


class MahalanobisDetector:
    """Class-conditional Gaussians with a shared Ledoit-Wolf covariance.

    normalize: L2-normalise every feature vector before fitting and scoring.
    Fitted attributes: means_ (K, D), precision_ (D, D), shrinkage_ (float), and after set_threshold
    threshold_ (float) and quantile_ (float). K = 1 when fitted without labels.
    """

    def __init__(self, normalize: bool = True):
        self.normalize = normalize

    @property
    def method(self) -> str:
        return METHODS[self.normalize]

    def fit(self, features, labels=None) -> "MahalanobisDetector":
        """features (N, D) float from the training split; labels (N,) int class index or None."""
        x = self._prepare(features)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"features must be (N, D) with N >= 2, got shape {x.shape}")
        groups = np.zeros(len(x), int) if labels is None else np.asarray(labels).astype(int).reshape(-1)
        classes = np.unique(groups)
        self.means_ = np.stack([x[groups == k].mean(axis=0) for k in classes])  # (K, D)
        centred = x - self.means_[np.searchsorted(classes, groups)]
        covariance, self.shrinkage_ = ledoit_wolf(centred)
        self.precision_ = _inverse(covariance)
        return self

    def score(self, features) -> np.ndarray:
        """(N, D) -> (N,) smallest squared Mahalanobis distance to a class mean (higher = more unusual)."""
        x = self._prepare(features)
        distances = [np.sum(((x - mu) @ self.precision_) * (x - mu), axis=1) for mu in self.means_]
        return np.min(distances, axis=0)

    def _prepare(self, features) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if self.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return x

    def set_threshold(self, val_features, quantile: float = DEFAULT_QUANTILE) -> "MahalanobisDetector":
        """threshold_ = the `quantile` of the validation scores (callers pass validation features only)."""
        if not 0 < quantile <= 1:
            raise ValueError(f"the OOD quantile is in (0, 1], got {quantile}")
        self.threshold_ = float(np.quantile(self.score(val_features), quantile))
        self.quantile_ = float(quantile)
        return self

    def in_distribution(self, scores) -> np.ndarray:
        """(N,) bool: score <= threshold_."""
        return np.asarray(scores) <= self.threshold_

    def to_state(self) -> dict:
        """Plain arrays and floats (the checkpoint stores the arrays as tensors)."""
        return {"method": self.method, "means": self.means_.astype(np.float32),
                "precision": self.precision_.astype(np.float32), "threshold": float(self.threshold_),
                "quantile": float(self.quantile_), "shrinkage": float(self.shrinkage_)}

    @classmethod
    def from_state(cls, state: dict) -> "MahalanobisDetector":
        normalize = {name: flag for flag, name in METHODS.items()}.get(state.get("method"))
        if normalize is None:
            raise ValueError(f"unknown OOD method {state.get('method')!r}; this version reads "
                             f"{', '.join(METHODS.values())}")
        detector = cls(normalize)
        detector.means_ = np.asarray(state["means"], dtype=np.float64)
        detector.precision_ = np.asarray(state["precision"], dtype=np.float64)
        detector.threshold_, detector.quantile_ = float(state["threshold"]), float(state["quantile"])
        detector.shrinkage_ = float(state.get("shrinkage", 0.0))
        return detector


def ledoit_wolf(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of already-centred rows (N, D): (covariance (D, D), shrinkage in [0, 1]).

    Sigma = (1 - s) S + s mu I with S = X^T X / N, mu = tr(S) / D and s the estimate of the optimal
    shrinkage (the same formula as sklearn.covariance.ledoit_wolf with assume_centered=True).
    """
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    sample = x.T @ x / n
    mu = np.trace(sample) / d
    delta = np.sum((sample - mu * np.eye(d)) ** 2) / d          # distance of S from the target
    squares = x ** 2
    beta = (np.sum(squares.T @ squares) / n - np.sum(sample ** 2)) / (n * d)  # variance of S's entries
    shrinkage = 0.0 if delta == 0 else float(min(beta, delta) / delta)
    return (1 - shrinkage) * sample + shrinkage * mu * np.eye(d), shrinkage


def _inverse(covariance: np.ndarray) -> np.ndarray:
    """The precision matrix. A model that maps every training image onto one direction (seen after a short
    fine-tune on a few dozen images) leaves a singular covariance that Ledoit-Wolf cannot shrink (its mean
    variance is 0): a tiny ridge keeps it invertible, so the run finishes and anything off that direction
    scores as unusual, and the log says the features were degenerate."""
    try:
        return np.linalg.inv(covariance)
    except np.linalg.LinAlgError:
        ridge = max(1e-6 * float(np.trace(covariance)) / len(covariance), 1e-12)
        log.warning(
            "OOD detector: the training images' features are degenerate (singular covariance, e.g. every image "
            "mapped to one direction); a ridge of %.1e keeps the detector usable, but the model itself may have "
            "collapsed: check its validation metrics", ridge)
        return np.linalg.inv(covariance + ridge * np.eye(len(covariance)))
