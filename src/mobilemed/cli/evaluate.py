"""mobilemed evaluate CHECKPOINT DATA: metrics with CIs, JSON and plots for one split."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mobilemed.cli.argtypes import NON_NEGATIVE_INT, PROBABILITY_TARGET
from mobilemed.cli.common import add_data_arguments, data_options
from mobilemed.fsutil import check_output_dir

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt from a run folder")
    add_data_arguments(parser)
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="the split to score (default test: the run's held-out images); all: every labelled "
                             "image of DATA, no split made (external validation)")
    parser.add_argument("--out", help="folder for metrics.json and plots (default: <checkpoint folder>/eval-<split>)")
    parser.add_argument("--n-bootstrap", type=NON_NEGATIVE_INT, default=1000,
                        help="bootstrap resamples for the CIs (0: no intervals)")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--allow-incomplete", action="store_true", help="use a checkpoint of an unfinished run (warns)")
    parser.add_argument("--ood-max-share", type=PROBABILITY_TARGET, default=0.10,
                        help="warn when more than this share of the images is out of distribution, in (0, 1)")


def run(args) -> int:
    from mobilemed.data.cache import decoded_images
    from mobilemed.evaluation import eval_data
    from mobilemed.evaluation.metrics import compute_metrics, format_summary
    from mobilemed.evaluation.ood_summary import format_ood
    from mobilemed.inference import Predictor

    out = check_output_dir(Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}")
    predictor = Predictor.from_checkpoint(args.checkpoint, allow_incomplete=args.allow_incomplete)
    spec = predictor.spec
    part = eval_data.rows_to_evaluate(args.data, data_options(args), args.split,
                                      Path(args.checkpoint).parent / "split.csv")
    eval_data.check_compatible(part, spec.class_names, spec.task, args.data)
    images, keep = decoded_images(part, spec.image_size, skip_bad=args.skip_bad, progress=not args.quiet,
                                  use_voi=spec.dicom_voi)
    part = part.subset(keep)
    labels = eval_data.remap_labels(part, spec.class_names)
    about = eval_data.describe(args.data, args.split, labels, spec.class_names)
    result = predictor.predict_images(np.asarray(images), list(part.paths))
    predictor.check_modalities(result)
    class_names, thresholds, labels, probabilities = eval_data.as_positive(
        args.positive_class, spec.class_names, spec.thresholds, labels, result.probabilities)
    report = compute_metrics(labels, probabilities, task=spec.task, class_names=class_names,
                             thresholds=thresholds, n_bootstrap=args.n_bootstrap, seed=args.seed)
    ood = ood_summary(labels, probabilities, result, spec, class_names, thresholds, args.ood_max_share)
    write_evaluation(out, report, labels, probabilities, about, ood=ood)
    print(format_summary(report.to_dict()))
    if ood:
        print(format_ood(ood))
    print(f"\n{eval_data.format_description(about)}")
    print(f"wrote {out / 'metrics.json'} and plots")
    return 0


def ood_summary(labels, probabilities, result, spec, class_names, thresholds, max_share: float) -> dict | None:
    """Share flagged and AUROC on each side (None for a checkpoint without an OOD detector)."""
    from mobilemed.evaluation.ood_summary import summarize_ood

    if result.in_distribution is None:
        log.warning("this checkpoint has no OOD detector: retrain it to flag images unlike its training data")
        return None
    return summarize_ood(labels, probabilities, result.in_distribution, task=spec.task, class_names=class_names,
                         thresholds=thresholds, ood_threshold=spec.ood_threshold, max_share=max_share)


def write_evaluation(out: Path, report, labels, probabilities, about: dict, *, ood: dict | None = None) -> None:
    from mobilemed.evaluation.plots import plot_confusion, plot_roc, save_figure
    from mobilemed.training.run_folder import write_json

    out.mkdir(parents=True, exist_ok=True)
    data = {**report.to_dict(), "evaluation": about, **({"ood": ood} if ood else {})}
    write_json(out / "metrics.json", data)
    save_figure(plot_roc(labels, probabilities, report.task, report.class_names).figure, out / "roc.png")
    if data.get("confusion_matrix") is not None:
        save_figure(plot_confusion(np.asarray(data["confusion_matrix"]), report.class_names).figure,
                    out / "confusion.png")
