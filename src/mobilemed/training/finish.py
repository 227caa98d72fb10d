"""After training: operating point and temperature from validation, one test evaluation, the outputs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mobilemed.checkpoint import ood_payload, save_checkpoint
from mobilemed.spec import ModelSpec
from mobilemed.training import run_folder
from mobilemed.training.detector import fit_detector, record_provenance, record_sources
from mobilemed.batch_predict import predict_logits

log = logging.getLogger(__name__)


def finish_run(run_dir: Path, model, spec: ModelSpec, data: dict, config, history: list, *, seconds: float,
               logits: dict | None = None) -> dict:
    """Choose temperature and thresholds on validation only, store them in best.pt's spec, then
    evaluate the test split once. `logits` may carry the val/test logits already computed (the linear
    probe has them from cached features). Returns the metrics dict written to metrics.json."""
    from mobilemed.evaluation.calibration import fit_temperature, probabilities_from_logits
    from mobilemed.evaluation.thresholds import choose_thresholds

    logits = logits or {s: predict_logits(model, d.images, spec, tta=spec.tta, progress=config.progress)
                        for s, d in data.items() if s != "train" and len(d.images)}
    val = data["val"]
    if config.calibrate:
        spec.temperature = float(fit_temperature(logits["val"], val.labels, task=spec.task))
    val_prob = probabilities_from_logits(logits["val"], spec.task, spec.temperature)
    spec.thresholds = [float(t) for t in choose_thresholds(
        val.labels, val_prob, task=spec.task, rule=config.threshold_rule, target=config.threshold_target)] \
        or spec.thresholds
    spec.threshold_rule = config.threshold_rule
    record_sources(spec, data["train"].files)
    record_provenance(spec, config, len(val.labels))
    detector, ood_scores = fit_detector(model, spec, data, quantile=config.ood_quantile, progress=config.progress,
                                        cached=config.mode == "linear-probe")
    save_checkpoint(run_dir / "best.pt", model, spec, history=history, ood=ood_payload(detector),
                    complete=True)
    run_folder.write_json(run_dir / "spec.json", spec.to_dict())
    metrics = {"train_seconds": seconds}
    for split in ("val", "test"):
        if split in logits:
            metrics[split] = _evaluate_split(run_dir, split, data[split], logits[split], spec, config,
                                             in_distribution=detector.in_distribution(ood_scores[split]))
    run_folder.write_json(run_dir / "history.json", history)
    run_folder.write_json(run_dir / "metrics.json", metrics)
    write_outputs(run_dir, model, spec, data.get("test") or val, history, config)
    return metrics


def _evaluate_split(run_dir: Path, split: str, part, logits: np.ndarray, spec: ModelSpec, config, *,
                    in_distribution: np.ndarray) -> dict:
    from mobilemed.evaluation.calibration import probabilities_from_logits
    from mobilemed.evaluation.metrics import compute_metrics
    from mobilemed.evaluation.ood_summary import summarize_ood

    prob = probabilities_from_logits(logits, spec.task, spec.temperature)
    run_folder.write_predictions(run_dir, split, part.files, part.labels, prob, logits, spec)
    report = compute_metrics(part.labels, prob, task=spec.task, class_names=spec.class_names,
                             thresholds=spec.thresholds, n_bootstrap=config.n_bootstrap if split == "test" else 0,
                             seed=config.seed)
    ood = summarize_ood(part.labels, prob, in_distribution, task=spec.task, class_names=spec.class_names,
                        thresholds=spec.thresholds, ood_threshold=spec.ood_threshold)
    return {**report.to_dict(), "ood": ood}


def write_outputs(run_dir: Path, model, spec: ModelSpec, part, history: list, config) -> None:
    """Plots, the Grad-CAM gallery and report.html; a failure here never loses the trained model."""
    from mobilemed.evaluation.report import write_report

    if config.gallery:
        try:
            from mobilemed.explain.gallery import write_gallery

            pred = np.load(run_dir / "predictions_test.npz") if (run_dir / "predictions_test.npz").exists() \
                else np.load(run_dir / "predictions_val.npz")
            write_gallery(model, spec, np.asarray(part.images), part.files, part.labels, pred["y_prob"],
                          run_dir / "gallery")
        except ImportError as err:
            log.warning("no Grad-CAM gallery: %s (pip install 'mobilemed[explain]')", err)
    path = write_report(run_dir)
    log.info("report: %s", path)
