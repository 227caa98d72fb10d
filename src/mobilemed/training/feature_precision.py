"""The linear probe's feature pass: which precision computes the training split's features.

The training split is most of the images, so it is where an int8 backbone saves time. Validation and
test features are always fp32: they choose the epoch, the thresholds and the temperature and give the
reported metrics, and the model that is saved and deployed is the fp32 one.

`auto` (the default) uses int8 when it keeps validation AUROC within INT8_TOLERANCE of fp32 and runs at least
MIN_SPEEDUP times as fast as fp32 on this machine (images per second of the fp32 passes over validation and
test against the int8 one over validation: on a 2-core AVX-512 VNNI CPU under load the QDQ MobileNetV2 once
ran no faster than fp32, and then int8 only costs accuracy and the calibration). The choice depends on this
machine's timing, so feature_pass.json records it and --resume reuses it. It costs the calibration
(CALIBRATION_IMAGES training images, min-max ranges, ~1.6 s at 224 px) and the checks; on the README's Kermany
probe it halves the training split's pass (bench/profile_linear_probe.py) for 0.003 of test AUROC.
The accuracy check costs one int8 pass over the (small) validation split, whose fp32 features are needed
anyway: a linear probe (ridge regression) is cross-fitted on the validation features of each precision
with the same folds, and the two out-of-fold AUROCs are compared. Both probes see only validation images, so the check needs no fp32
pass over the training split, which is what int8 is there to avoid.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from mobilemed.data.transforms import Augmentation
from mobilemed.errors import MissingExtraError
from mobilemed.spec import ModelSpec
from mobilemed.training.features import FeaturePass
from mobilemed.training.scoring import validation_metrics

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "int8")
INT8_TOLERANCE = 0.005
MIN_SPEEDUP = 1.2
MAX_FOLDS = 5
RIDGE_ALPHA = 100.0  # on standardised features; strong, as ~500 validation images meet 1280 features


def probe_features(backbone, spec: ModelSpec, data: dict, *, precision: str = "auto", seed: int = 0,
                   progress: bool = True, augmentation: Augmentation = Augmentation()) -> tuple[dict, dict]:
    """Features of every non-empty split for a linear probe, and the record of how the training split's were
    computed: {"requested", "chosen", "reason", "val_auroc_fp32", "val_auroc_int8", "calibration_images",
    "seconds"}. `data` maps split names to objects with .images and .labels. An augmentation with crops,
    flips or exposure changes (--crop-scale, --hflip, --intensity): the training split's features are those
    of one augmented copy of each image, drawn from `seed`; validation and test stay whole."""
    extractor, record = FeaturePass(backbone, spec, progress=progress), {"requested": precision}
    tic = time.perf_counter()
    features = {s: extractor.features(d.images) for s, d in data.items() if s != "train" and len(d.images)}
    chosen = "fp32" if precision == "fp32" else _try_int8(extractor, data, features, spec, precision, seed, record)
    extractor.release("int8" if chosen == "fp32" else "fp32")  # one session's arena at a time: peak memory
    augmented = None if augmentation.is_plain else (augmentation, seed)
    features["train"] = extractor.features(data["train"].images, chosen, augmented=augmented)
    record.update(chosen=chosen, seconds=round(time.perf_counter() - tic, 1),
                  augmentation=dataclasses.asdict(augmentation))
    log.info("feature pass: training split in %s (%s)", chosen, record.get("reason", "requested"))
    return features, record


def _try_int8(extractor: FeaturePass, data: dict, features: dict, spec: ModelSpec, precision: str, seed: int,
              record: dict) -> str:
    """"int8" when requested or when auto's validation check passes, else "fp32"; fills `record`."""
    extractor.release("fp32")  # its arena and the calibrator's activations would otherwise add up
    try:
        record["calibration_images"] = extractor.calibrate_int8(data["train"].images, seed=seed)
    except MissingExtraError:
        if precision == "int8":
            raise
        record["reason"] = "onnxruntime not installed"
        return "fp32"
    if precision == "int8":
        record["reason"] = "requested"
        return "int8"
    if "val" not in features:
        record["reason"] = "no validation split to check int8 against"
        return "fp32"
    int8_val = extractor.features(data["val"].images, "int8")
    record.update(compare_precisions(features["val"], int8_val, data["val"].labels, spec.task, seed=seed))
    if "val_auroc_int8" not in record:
        return "fp32"
    record["int8_speedup"] = round(_speedup(extractor, data["val"].images), 2)
    gap = record["val_auroc_fp32"] - record["val_auroc_int8"]
    accurate, faster = abs(gap) <= INT8_TOLERANCE, record["int8_speedup"] >= MIN_SPEEDUP
    record["reason"] = (f"validation AUROC int8 {record['val_auroc_int8']:.4f} vs fp32 {record['val_auroc_fp32']:.4f}"
                        f" ({'within' if accurate else 'outside'} {INT8_TOLERANCE}); int8 "
                        f"{record['int8_speedup']:.2f}x as fast ({'at least' if faster else 'below'} {MIN_SPEEDUP}x)")
    return "int8" if accurate and faster else "fp32"


def _speedup(extractor: FeaturePass, val_images: np.ndarray) -> float:
    """int8 throughput over fp32's, from the passes just made over the validation and test splits (hundreds
    of images each, so no extra runs); timed on one validation chunk when a pass came from the cache."""
    rates = extractor.images_per_second
    if "fp32" in rates and "int8" in rates:
        return rates["int8"] / rates["fp32"]
    return extractor.speedup(val_images)


def compare_precisions(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray, task: str, *, seed: int = 0) -> dict:
    """{"val_auroc_fp32", "val_auroc_int8"}: out-of-fold AUROC of a ridge probe cross-fitted on
    each precision's validation features with the same folds; {"reason"} when the split is too small."""
    folds = _folds(labels, task, seed)
    if folds is None:
        return {"reason": "validation split too small to check int8 (needs >= 2 images of each class)"}
    return {"val_auroc_fp32": _cross_fitted_auroc(fp32, labels, task, folds),
            "val_auroc_int8": _cross_fitted_auroc(int8, labels, task, folds)}


def _folds(labels: np.ndarray, task: str, seed: int):
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "multilabel":
        positives = labels.sum(0)
        smallest = int(min(positives.min(), (len(labels) - positives).min()))
        splitter = KFold
    else:
        smallest = int(np.bincount(labels.astype(int))[np.unique(labels.astype(int))].min()) \
            if len(np.unique(labels)) > 1 else 0
        splitter = StratifiedKFold
    if smallest < 2:
        return None
    strata = labels if task != "multilabel" else np.zeros(len(labels))
    return list(splitter(min(MAX_FOLDS, smallest), shuffle=True, random_state=seed).split(labels, strata))


def _cross_fitted_auroc(features: np.ndarray, labels: np.ndarray, task: str, folds) -> float:
    """Out-of-fold decision values of a ridge probe on ±1 targets (one column per output), scored like
    the epoch loop scores the head. Ridge has a closed form: the check costs well under a second."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "binary":
        targets = labels.reshape(-1, 1).astype(np.float64)
    elif task == "multiclass":
        targets = np.eye(int(labels.max()) + 1)[labels.astype(int)]
    else:
        targets = labels.astype(np.float64)
    logits = np.zeros(targets.shape)
    for fit_rows, score_rows in folds:
        probe = make_pipeline(StandardScaler(), Ridge(alpha=RIDGE_ALPHA))
        probe.fit(features[fit_rows], 2 * targets[fit_rows] - 1)
        logits[score_rows] = probe.predict(features[score_rows]).reshape(len(score_rows), -1)
    return validation_metrics(labels, logits, task)["val_auroc"]
