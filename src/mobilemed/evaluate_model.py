"""evaluate_model: score a model (best.pt or exported .onnx) on labelled data, with CIs, plots and the OOD share.

The guarantees live here, so a Python user gets what `mobilemed evaluate` gives: the run's own saved split
(split.csv beside the model) decides what "test" means, `split="all"` scores every labelled image of external
data and refuses images the run trained or validated on, class names are matched to the model's, the binary
positive class can be chosen, and everything is written atomically to `out`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilemed.data.sources import DataOptions

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    metrics: dict              # what metrics.json holds: metrics with CIs, "evaluation" (what was scored), "ood"
    labels: np.ndarray         # (N,) or (N, K) in the model's class order (or the chosen positive class's)
    probabilities: np.ndarray  # as the metrics were computed on
    out: Path | None


def evaluate_model(model, data: str, *, split: str = "test", options: DataOptions | None = None,
                   positive_class: str | None = None, n_bootstrap: int = 1000, seed: int = 0,
                   ood_max_share: float = 0.10, skip_bad: bool = False, out=None, engine: str = "auto",
                   allow_incomplete: bool = False, progress: bool = False) -> Evaluation:
    """Evaluate MODEL (a path or an engines.load_predictor object) on `split` of DATA; write to `out` if given."""
    from mobilemed.data.cache import decoded_images
    from mobilemed.engines import load_predictor
    from mobilemed.evaluation import eval_data
    from mobilemed.evaluation.metrics import compute_metrics

    if out is not None:
        from mobilemed.fsutil import check_output_dir

        out = check_output_dir(Path(out))
    predictor = model if hasattr(model, "predict_images") else \
        load_predictor(model, engine=engine, allow_incomplete=allow_incomplete)
    spec, options = predictor.spec, options or DataOptions()
    saved_split = Path(predictor.path).parent / "split.csv" if getattr(predictor, "path", None) else None
    part = eval_data.rows_to_evaluate(data, options, split, saved_split)
    eval_data.check_compatible(part, spec.class_names, spec.task, data)
    images, keep = decoded_images(part, spec.image_size, skip_bad=skip_bad, progress=progress, use_voi=spec.dicom_voi)
    part = part.subset(keep)
    labels = eval_data.remap_labels(part, spec.class_names)
    about = eval_data.describe(data, split, labels, spec.class_names)
    result = predictor.predict_images(np.asarray(images), list(part.paths))
    class_names, thresholds, labels, probabilities = eval_data.as_positive(
        positive_class, spec.class_names, spec.thresholds, labels, result.probabilities)
    report = compute_metrics(labels, probabilities, task=spec.task, class_names=class_names,
                             thresholds=thresholds, n_bootstrap=n_bootstrap, seed=seed)
    ood = _ood_summary(labels, probabilities, result, spec, class_names, thresholds, ood_max_share)
    metrics = {**report.to_dict(), "evaluation": about, **({"ood": ood} if ood else {})}
    if out is not None:
        _write(out, metrics, report, labels, probabilities)
    return Evaluation(metrics, labels, probabilities, out)


def _ood_summary(labels, probabilities, result, spec, class_names, thresholds, max_share: float) -> dict | None:
    """Share flagged and AUROC on each side (None for a model without an OOD detector)."""
    from mobilemed.evaluation.ood_summary import summarize_ood

    if result.in_distribution is None:
        log.warning("this model has no OOD detector: retrain it to flag images unlike its training data")
        return None
    return summarize_ood(labels, probabilities, result.in_distribution, task=spec.task, class_names=class_names,
                         thresholds=thresholds, ood_threshold=spec.ood_threshold, max_share=max_share)


def _write(out: Path, metrics: dict, report, labels, probabilities) -> None:
    from mobilemed.evaluation.plots import plot_confusion, plot_roc, save_figure
    from mobilemed.run_files import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    save_figure(plot_roc(labels, probabilities, report.task, report.class_names).figure, out / "roc.png")
    if metrics.get("confusion_matrix") is not None:
        save_figure(plot_confusion(np.asarray(metrics["confusion_matrix"]), report.class_names).figure,
                    out / "confusion.png")
