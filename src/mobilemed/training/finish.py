"""After training: operating point and temperature from validation, one test evaluation, the outputs."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilemed import run_files
from mobilemed.batch_predict import predict_logits
from mobilemed.checkpoint import ood_payload, save_checkpoint
from mobilemed.run_files import SplitPredictions, write_split_predictions
from mobilemed.spec import ModelSpec
from mobilemed.training.detector import fit_detector, record_provenance, record_sources
from mobilemed.training.loop import neutral_logits

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished training run returns (all of it is also in the run folder)."""

    run_dir: Path
    spec: ModelSpec          # best.pt's spec: thresholds, temperature and OOD threshold chosen on validation
    metrics: dict            # metrics.json: {"train_seconds", "val": report, "test": report}
    history: list            # history.json: one row per epoch
    predictions: dict        # split -> SplitPredictions (predictions_<split>.npz)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / run_files.BEST

    @property
    def report(self) -> Path:
        return self.run_dir / run_files.REPORT


def finish_run(run_dir: Path, model, spec: ModelSpec, data: dict, config, history: list, *, seconds: float,
               logits: dict | None = None, sections=None) -> TrainResult:
    """Choose temperature and thresholds on validation only, store them in best.pt's spec, then
    evaluate the test split once. `logits` may carry the val/test logits already computed (the linear
    probe has them from cached features). `spec` is left as it was: the result carries the new one.
    sections(spec, predictions) -> {key: section}: more metrics.json keys (--cv's, --ensemble's), computed
    from the final spec and predictions before metrics.json and the report are written, once."""
    from mobilemed.evaluation.calibration import fit_temperature

    progress, rule = config.run.progress, config.operating_point
    logits = logits or {s: predict_logits(model, d.images, spec, tta=spec.tta, progress=progress)
                        for s, d in data.items() if s != "train" and len(d.images)}
    val = data["val"]
    temperature = float(fit_temperature(logits["val"], val.labels, task=spec.task)) if rule.calibrate \
        else spec.temperature
    spec = dataclasses.replace(spec, temperature=temperature)
    views = _threshold_views(run_dir, model, spec, val, config, logits.get("val_views"))
    thresholds, neutral = choose_operating_point(spec, data["train"].labels, val.labels, logits["val"], config, views)
    spec = dataclasses.replace(spec, threshold_rule=rule.threshold_rule, thresholds=thresholds or spec.thresholds)
    record_sources(spec, data["train"].files)  # these three fill in the new spec, never the caller's
    record_provenance(spec, config, len(val.labels))
    spec.provenance["thresholds"]["neutral_logits"] = neutral  # recalibrate and int8 export reuse the loss's point
    detector, ood_scores = fit_detector(model, spec, data, quantile=rule.ood_quantile, progress=progress,
                                        cached=config.model.mode == "linear-probe")
    save_checkpoint(run_dir / run_files.BEST, model, spec, history=history, complete=True,
                    ood=ood_payload(detector) if detector else None)
    run_files.write_json(run_dir / run_files.SPEC, spec.to_dict())
    metrics, predictions = {"train_seconds": seconds}, {}
    for split in ("val", "test"):
        if split in logits:
            predictions[split] = _split_predictions(data[split], logits[split], spec)
            write_split_predictions(run_dir, split, predictions[split])
            metrics[split] = _evaluate_split(predictions[split], spec, config, split, in_distribution=np.ones(
                len(logits[split]), bool) if detector is None else detector.in_distribution(ood_scores[split]))
    if sections is not None:
        metrics |= sections(spec, predictions)
    run_files.write_json(run_dir / run_files.HISTORY, history)
    run_files.write_json(run_dir / run_files.METRICS, metrics)
    shown = "test" if "test" in predictions else "val"
    write_outputs(run_dir, model, spec, data[shown], predictions[shown], config)
    return TrainResult(run_dir, spec, metrics, history, predictions)


def choose_operating_point(spec: ModelSpec, train_labels: np.ndarray, val_labels: np.ndarray,
                           val_logits: np.ndarray, config, val_view_logits: np.ndarray | None = None
                           ) -> tuple[list[float], list[float]]:
    """(thresholds, the loss's neutral logits): the run's threshold rule on the validation (or pooled
    out-of-fold) logits at spec.temperature, told where the training loss puts the J-optimal point (from the
    labels it trained on and config.optim's class weighting and smoothing). With --threshold-views the rule
    runs on val_view_logits, (V, N, outputs) logits of V augmented views of the same images, pooled
    (training/threshold_views.py). scripts/rescore_operating_point.py calls it on finished runs."""
    from mobilemed.evaluation.calibration import probabilities_from_logits
    from mobilemed.evaluation.thresholds import choose_thresholds, neutral_probabilities
    from mobilemed.training.threshold_views import pooled

    rule, views = config.operating_point, 1
    neutral = neutral_logits(spec.task, train_labels, config.optim.class_weighting,
                             smoothing=config.optim.label_smoothing)
    if val_view_logits is not None:
        views = len(val_view_logits)
        val_labels, val_logits = pooled(val_labels, val_view_logits)
    val_prob = probabilities_from_logits(val_logits, spec.task, spec.temperature)
    thresholds = choose_thresholds(val_labels, val_prob, task=spec.task, rule=rule.threshold_rule,
                                   target=rule.threshold_target,
                                   neutral=neutral_probabilities(neutral, spec.temperature), views=views)
    return [float(t) for t in thresholds], neutral


def _threshold_views(run_dir: Path, model, spec: ModelSpec, val, config, computed: np.ndarray | None):
    """--threshold-views: the (V, N, outputs) logits of V augmented views of every validation image (`computed`
    by the folds under --cv, else here by the deployed model), saved in the run folder; None without it."""
    from mobilemed.training.threshold_views import save_views, view_logits

    views = config.operating_point.threshold_views
    if not views:  # fit() refused it for multi-class data, whose argmax has no threshold
        return None
    if computed is None:
        computed = view_logits(model, val.images, spec, config.optim.augmentation, views=views,
                               seed=config.optim.seed, progress=config.run.progress)
    save_views(run_dir, computed, val.labels)
    return computed


def _split_predictions(part, logits: np.ndarray, spec: ModelSpec) -> SplitPredictions:
    from mobilemed.evaluation.calibration import probabilities_from_logits

    prob = probabilities_from_logits(logits, spec.task, spec.temperature)
    return SplitPredictions(np.asarray(part.files, dtype=str), part.labels, prob, list(spec.class_names),
                            spec.task, logits)


def _evaluate_split(pred: SplitPredictions, spec: ModelSpec, config, split: str, *,
                    in_distribution: np.ndarray) -> dict:
    from mobilemed.evaluation.metrics import compute_metrics
    from mobilemed.evaluation.ood_summary import summarize_ood

    n_bootstrap = config.run.n_bootstrap if split == "test" else 0
    report = compute_metrics(pred.y_true, pred.y_prob, task=spec.task, class_names=spec.class_names,
                             thresholds=spec.thresholds, n_bootstrap=n_bootstrap, seed=config.optim.seed)
    ood = summarize_ood(pred.y_true, pred.y_prob, in_distribution, task=spec.task, class_names=spec.class_names,
                        thresholds=spec.thresholds, ood_threshold=spec.ood_threshold)
    return {**report.to_dict(), "ood": ood}


def write_outputs(run_dir: Path, model, spec: ModelSpec, part, pred: SplitPredictions, config) -> None:
    """Plots, the Grad-CAM gallery (of `pred`, the split the report shows) and report.html; a failure here
    never loses the trained model."""
    from mobilemed.evaluation.report import write_report

    if config.run.gallery:
        try:
            from mobilemed.explain.gallery import write_gallery

            write_gallery(model, spec, np.asarray(part.images), part.files, part.labels, pred.y_prob,
                          run_dir / run_files.GALLERY)
        except ImportError as err:
            log.warning("no Grad-CAM gallery: %s (pip install 'mobilemed[explain]')", err)
    path = write_report(run_dir)
    log.info("report: %s", path)
