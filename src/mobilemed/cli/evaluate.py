"""mobilemed evaluate CHECKPOINT DATA: metrics with CIs, JSON and plots for one split."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mobilemed.cli.common import add_data_arguments, data_options
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt from a run folder")
    add_data_arguments(parser)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", help="folder for metrics.json and plots (default: <checkpoint folder>/eval-<split>)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ood-max-share", type=float, default=0.10,
                        help="warn when more than this share of the images is out of distribution")


def run(args) -> int:
    from mobilemed.data.cache import decoded_images
    from mobilemed.data.sources import load_table
    from mobilemed.evaluation.metrics import compute_metrics, format_summary
    from mobilemed.evaluation.ood_summary import format_ood
    from mobilemed.inference import Predictor

    if not 0 <= args.ood_max_share <= 1:
        raise MobilemedError(f"--ood-max-share is a share in [0, 1], e.g. 0.1; got {args.ood_max_share}")
    predictor = Predictor.from_checkpoint(args.checkpoint)
    spec = predictor.spec
    table = with_training_split(load_table(args.data, data_options(args)), args)
    check_compatible(table, spec, args.data)
    part = table.split(args.split)
    if len(part) == 0:
        raise MobilemedError(f"{args.data} has no {args.split} split; choose --split train/val/test")
    images, keep = decoded_images(part, spec.image_size, skip_bad=args.skip_bad, progress=not args.quiet,
                                  use_voi=spec.dicom_voi)
    part = part.subset(keep)
    labels = remap_labels(part, spec)
    result = predictor.predict_images(np.asarray(images), list(part.paths))
    predictor.check_modalities(result)
    report = compute_metrics(labels, result.probabilities, task=spec.task, class_names=spec.class_names,
                             thresholds=spec.thresholds, n_bootstrap=args.n_bootstrap, seed=args.seed)
    ood = ood_summary(labels, result, spec, args.ood_max_share)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}"
    write_evaluation(out, report, labels, result, spec, ood=ood)
    print(format_summary(report.to_dict()))
    if ood:
        print(format_ood(ood))
    print(f"\nwrote {out / 'metrics.json'} and plots")
    return 0


def with_training_split(table, args):
    """Evaluate on the split the run saved (split.csv beside the checkpoint) when it covers this data, so
    a --resplit or a different --split-seed cannot put training images into the evaluated split."""
    from mobilemed.data.splits import apply_saved_split

    saved = Path(args.checkpoint).parent / "split.csv"
    if args.split_column or args.resplit or not saved.exists():
        return table
    restored = apply_saved_split(table, saved)
    if restored is None:
        log.info("%s does not list these images: using the data's own split", saved)
        return table
    log.info("using the split the run saved in %s", saved)
    return restored


def check_compatible(table, spec, data: str) -> None:
    """The data must be the model's task, and every label must be one the model knows."""
    if table.task != spec.task and not (table.task == "binary" and spec.task == "multiclass"):
        raise MobilemedError(f"{data} is a {table.task} task but the checkpoint is a {spec.task} model for "
                             f"{spec.class_names}; evaluate it on data with the same task")
    unknown = [n for n in table.class_names if n not in spec.class_names]
    if unknown:
        raise MobilemedError(f"{data} has label {unknown[0]!r}, which the model does not know; "
                             f"the model's classes are: {', '.join(spec.class_names)}")


def remap_labels(table, spec) -> np.ndarray:
    """The table's labels in the checkpoint's class order (folders may list classes differently)."""
    if table.is_multilabel:
        order = [table.class_names.index(n) if n in table.class_names else None for n in spec.class_names]
        missing = [spec.class_names[i] for i, o in enumerate(order) if o is None]
        if missing:
            raise MobilemedError(f"the data has no column for the model's finding {missing[0]!r}")
        return table.labels[:, order].astype(np.int64)
    mapping = np.array([spec.class_names.index(n) for n in table.class_names])
    return mapping[table.labels.astype(np.int64)]


def ood_summary(labels, result, spec, max_share: float) -> dict | None:
    """Share flagged and AUROC on each side (None for a checkpoint without an OOD detector)."""
    from mobilemed.evaluation.ood_summary import summarize_ood

    if result.in_distribution is None:
        log.warning("this checkpoint has no OOD detector: retrain it to flag images unlike its training data")
        return None
    return summarize_ood(labels, result.probabilities, result.in_distribution, task=spec.task,
                         class_names=spec.class_names, thresholds=spec.thresholds,
                         ood_threshold=spec.ood_threshold, max_share=max_share)


def write_evaluation(out: Path, report, labels, result, spec, *, ood: dict | None = None) -> None:
    from mobilemed.evaluation.plots import plot_confusion, plot_roc, save_figure
    from mobilemed.training.run_folder import write_json

    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict() | ({"ood": ood} if ood else {})
    write_json(out / "metrics.json", data)
    save_figure(plot_roc(labels, result.probabilities, spec.task, spec.class_names).figure, out / "roc.png")
    if data.get("confusion_matrix") is not None:
        save_figure(plot_confusion(np.asarray(data["confusion_matrix"]), spec.class_names).figure, out / "confusion.png")
