"""Site recalibration: keep a model's weights, re-choose its operating point (and temperature, and the OOD
threshold) on a site's own labelled sample, and write a new checkpoint that says where each number came from.

A model trained on one population meets another at deployment: the same ranking (AUROC) can sit at a
different operating point. Recalibration fits only numbers that sit on top of the logits, so a small
labelled local sample is enough; the features, the head and the OOD detector's Gaussians are untouched.

The sample plays the role validation played at training time (thresholds.py: "callers pass validation
labels only"): evaluate the recalibrated model on OTHER images of the site, never on the sample itself.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mobilemed.errors import MobilemedError
from mobilemed.spec import ModelSpec

log = logging.getLogger(__name__)
SITE_SPLITS = ("all", "train", "val", "test")


@dataclass
class Recalibration:
    """What changed: the new spec (written to `path`) beside the old numbers, and the sample size."""

    path: Path
    n: int
    before: ModelSpec
    after: ModelSpec


def recalibrate_checkpoint(checkpoint, data: str, out, *, data_options=None, split: str = "all",
                           threshold_rule: str = "youden", target: float | None = None, calibrate: bool = True,
                           refit_ood: bool = False, ood_quantile: float | None = None, skip_bad: bool = False,
                           progress: bool = False) -> Recalibration:
    """Write `out`: `checkpoint`'s weights and OOD detector with thresholds (rule, target), temperature
    (when calibrate) and OOD threshold (when refit_ood, at ood_quantile, default the training quantile)
    chosen on the labelled images of `data` (split "all": every image, no split made).
    Every input is checked before anything is computed; `checkpoint` is never written."""
    from mobilemed.checkpoint import load_checkpoint, load_ood_detector, ood_payload, read_checkpoint, save_checkpoint
    from mobilemed.data.cache import decoded_images
    from mobilemed.evaluation.thresholds import _check_rule
    from mobilemed.inference import Predictor

    checkpoint, out = Path(checkpoint), Path(out)
    _check_paths(checkpoint, out)
    _check_rule(threshold_rule, target)
    if ood_quantile is not None and not 0 < ood_quantile <= 1:
        raise MobilemedError(f"--ood-quantile is a quantile in (0, 1], e.g. 0.99; got {ood_quantile}")
    payload = read_checkpoint(checkpoint)
    model, spec = load_checkpoint(checkpoint)
    detector = load_ood_detector(payload)
    if refit_ood and detector is None:
        raise MobilemedError(f"{checkpoint} has no OOD detector to refit; retrain it with this version of "
                             "mobilemed, or leave out --refit-ood")
    table = site_table(data, data_options, split)
    labels = site_labels(table, spec, data)
    images, keep = decoded_images(table, spec.image_size, skip_bad=skip_bad, progress=progress, use_voi=spec.dicom_voi)
    labels = labels[keep]
    result = Predictor(model, spec, detector).predict_images(np.asarray(images), list(table.paths[keep]))
    after = _refit(spec, labels, result, detector if refit_ood else None, ood_quantile,
                   threshold_rule=threshold_rule, target=target, calibrate=calibrate,
                   source={"data": str(data), "split": split, "n": int(len(labels)), "checkpoint": str(checkpoint),
                           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    extra = {"history": payload["history"]} if "history" in payload else {}
    save_checkpoint(out, model, after, **extra, **({"ood": ood_payload(detector)} if detector else {}))
    log.info("wrote %s: thresholds %s -> %s, temperature %.3f -> %.3f", out, spec.thresholds, after.thresholds,
             spec.temperature, after.temperature)
    return Recalibration(out, int(len(labels)), spec, after)


def _refit(spec: ModelSpec, labels, result, detector, ood_quantile, *, threshold_rule, target, calibrate,
           source: dict) -> ModelSpec:
    """A copy of spec with the site's temperature, thresholds and OOD threshold, and their provenance.
    `detector` (refit when given) gets its new threshold in place."""
    from mobilemed.evaluation.calibration import fit_temperature, probabilities_from_logits
    from mobilemed.evaluation.thresholds import choose_thresholds, neutral_probabilities, recorded_neutral_logits

    provenance = dict(spec.provenance)
    temperature = spec.temperature
    if calibrate:
        temperature = float(fit_temperature(result.logits, labels, task=spec.task))
        provenance["temperature"] = {**source, "previous": spec.temperature}
    prob = probabilities_from_logits(result.logits, spec.task, temperature)
    neutral = recorded_neutral_logits(spec.provenance)  # the training loss's J-optimal point
    thresholds = [float(t) for t in choose_thresholds(labels, prob, task=spec.task, rule=threshold_rule,
                                                      target=target, class_names=spec.class_names,
                                                      neutral=neutral_probabilities(neutral, temperature))]
    provenance["thresholds"] = {**source, "rule": threshold_rule, "target": target, "previous": spec.thresholds,
                                "neutral_logits": neutral}
    ood_threshold = spec.ood_threshold
    if detector is not None:
        quantile = ood_quantile or detector.quantile_
        detector.threshold_, detector.quantile_ = float(np.quantile(result.ood_score, quantile)), float(quantile)
        ood_threshold = detector.threshold_
        provenance["ood_threshold"] = {**source, "quantile": quantile, "previous": spec.ood_threshold}
    return replace(spec, thresholds=thresholds or spec.thresholds, threshold_rule=threshold_rule,
                   temperature=temperature, ood_threshold=ood_threshold, provenance=provenance)


def site_table(data: str, options, split: str):
    """The site's labelled images: split "all" reads every image of `data` and makes no split; a split
    name takes that split of the data's own (or mobilemed's seeded) split."""
    from mobilemed.data.sources import DataOptions, load_table, read_source

    if split not in SITE_SPLITS:
        raise MobilemedError(f"--split {split!r} is unknown; choose one of {', '.join(SITE_SPLITS)}")
    options = options or DataOptions()
    table = read_source(data, options) if split == "all" else load_table(data, options).split(split)
    if len(table) == 0:
        raise MobilemedError(f"{data} has no {split} images; choose another --split (all uses every image)")
    return table


def site_labels(table, spec: ModelSpec, data: str) -> np.ndarray:
    """The table's labels in the model's class order; class names match case-insensitively.
    Multilabel: (N, K) columns in the model's finding order; otherwise (N,) class indices."""
    if (table.task == "multilabel") != (spec.task == "multilabel"):
        raise MobilemedError(f"{data} is a {table.task} task but the model is {spec.task}; use a site sample "
                             "labelled the way the model was trained")
    model_names, site_names = [n.lower() for n in spec.class_names], [n.lower() for n in table.class_names]
    wanted = model_names if spec.task == "multilabel" else site_names  # every finding / every site class
    have = site_names if spec.task == "multilabel" else model_names
    if any(name not in have for name in wanted):
        raise MobilemedError(f"{data} has classes {', '.join(table.class_names)} but the model knows "
                             f"{', '.join(spec.class_names)}; rename the folders or columns to match")
    if spec.task == "multilabel":
        return table.labels[:, [site_names.index(n) for n in model_names]].astype(np.int64)
    mapping = np.array([model_names.index(n) for n in site_names])
    return mapping[table.labels.astype(np.int64)]


def _check_paths(checkpoint: Path, out: Path) -> None:
    if not checkpoint.is_file():
        raise MobilemedError(f"checkpoint {checkpoint} does not exist")
    if out.resolve() == checkpoint.resolve():
        raise MobilemedError(f"--out {out} is the input checkpoint; recalibration never overwrites it, "
                             "so name a new file (e.g. site.pt)")
    if out.suffix != ".pt":
        raise MobilemedError(f"--out {out} should be a .pt file (e.g. site.pt)")
    if not out.parent.is_dir():
        raise MobilemedError(f"the folder of --out {out} does not exist; create it first")
