"""At the end of training: fit the OOD detector and record what kinds of files the model was trained on.

The detector (mobilemed.ood) is fitted on the penultimate features of the TRAINING split and thresholded on
VALIDATION, never on test. Features come from the final model's backbone: for a linear probe they are the
frozen features the head was trained on (the training split's may be int8, see training/feature_precision.py;
validation's are fp32, so the threshold fits the deployed fp32 model); for finetune / scratch one extra pass
over train + val (not cached: the weights are new, a cache entry would never be read again).
"""
from __future__ import annotations

import logging
from pathlib import Path

from mobilemed.errors import MobilemedError
from mobilemed.io.dicom import dicom_modality, is_dicom
from mobilemed.ood import MahalanobisDetector
from mobilemed.spec import ModelSpec
from mobilemed.training.features import frozen_features, release_freed_memory

log = logging.getLogger(__name__)
# Source formats by suffix; MedMNIST rows are ids ("pneumoniamnist:train:17"), not files.
FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp"}


def fit_detector(model, spec: ModelSpec, data: dict, *, quantile: float, cached: bool,
                 progress: bool = False) -> tuple[MahalanobisDetector, dict]:
    """A MahalanobisDetector on the train split's features, its threshold the `quantile` of validation scores.
    Class-conditional for binary / multiclass, one class-agnostic Gaussian for multilabel (see mobilemed.ood).
    Also sets the spec's OOD fields. Returns (detector, {"val": scores, "test": scores})."""
    features = {name: part.features if getattr(part, "features", None) is not None else
                frozen_features(model.feature_network, part.images, spec, progress=progress, use_cache=cached)
                for name, part in data.items() if len(part.images)}
    labels = None if spec.task == "multilabel" else data["train"].labels
    detector = MahalanobisDetector().fit(features["train"], labels).set_threshold(features["val"], quantile)
    spec.ood_method, spec.ood_threshold = detector.method, float(detector.threshold_)
    log.info("OOD detector: %s on %d training images, threshold %.1f (%.0f%% of validation)",
             detector.method, len(features["train"]), detector.threshold_, 100 * quantile)
    release_freed_memory()  # the covariance fit's temporaries; the gallery comes next and needs room
    return detector, {s: detector.score(f) for s, f in features.items() if s != "train"}


def record_sources(spec: ModelSpec, files) -> None:
    """spec.source_formats, and for DICOM training files spec.modalities / spec.body_parts (cheap header reads).

    An image-only model keeps modalities [] and source_formats e.g. ["jpeg"]: the modality of a JPEG is
    unknown, so no modality rule is applied to it and a DICOM given to it is judged by the feature score."""
    formats, modalities, parts = set(), set(), set()
    for file in map(str, files):
        if ":" in file and not Path(file).exists():  # a MedMNIST id
            formats.add(file.split(":", 1)[0])
            continue
        if is_dicom(file):
            formats.add("dicom")
            try:
                modality, part = dicom_modality(file)
            except MobilemedError as err:  # it decoded for training, so this is rare: say so and go on
                log.warning("no DICOM header for the modality check: %s", err)
                continue
            modalities.update({modality} - {""})
            parts.update({part} - {""})
        else:
            formats.add(FORMATS.get(Path(file).suffix.lower(), Path(file).suffix.lower().lstrip(".")))
    spec.source_formats, spec.modalities, spec.body_parts = sorted(formats), sorted(modalities), sorted(parts)


def record_provenance(spec: ModelSpec, config, n_val: int) -> None:
    """spec.provenance at training time: thresholds, temperature and OOD threshold all come from validation
    (`mobilemed recalibrate` replaces an entry when a site sample re-chooses that number)."""
    rule = config.operating_point
    split = f"out-of-fold predictions of {rule.cv_folds} folds of train+val" if rule.cv_folds else "val"
    source = {"data": str(config.data), "split": split, "n": int(n_val)}
    views = {"views": rule.threshold_views, "views_from": "the training augmentation"} if rule.threshold_views else {}
    spec.provenance = {"thresholds": {**source, "rule": rule.threshold_rule, "target": rule.threshold_target,
                                      **views},
                       "temperature": {**source} if rule.calibrate else "not calibrated (1.0)",
                       "ood_threshold": {**source, "quantile": rule.ood_quantile, "fitted_on": "train"}}
