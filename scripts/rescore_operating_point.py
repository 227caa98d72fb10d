"""Re-choose finished binary runs' thresholds with the current operating-point rule, from their saved validation
predictions and without retraining, and score their saved test predictions at the new threshold.

    python scripts/rescore_operating_point.py RUN [RUN ...]
    python scripts/rescore_operating_point.py --views 4 RUN [RUN ...]   # as if trained with --threshold-views 4

It calls what training/finish.py calls at the end of a run (choose_operating_point) on the run's training
labels (split.csv: train, or train+val under --cv), its options (config.yaml) and its saved validation (or
pooled out-of-fold) logits at the run's temperature. The model is untouched, so this is what rerunning the run's command with the current code
ends with as long as training itself did not change (CPU training here is deterministic: same seed, same
weights). The test split is only scored, with the run's bootstrap settings; printed per run: the old and new
threshold, test accuracy at each (95% CI at the new one), test AUROC.
--views V re-chooses as `--threshold-views V` would have: the run's best.pt scores V views of its validation
images drawn by its own augmentation and seed (training/threshold_views.py), as finish_run does; under --cv
each fold's best.pt scores its own held-out images' views with the fold's seed, as cross_validation.py does
(after checking that the fold model reproduces the saved out-of-fold logits).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from mobilemed.evaluation.metrics import compute_metrics
from mobilemed.evaluation.thresholds import neutral_probabilities
from mobilemed.run_config import read_config
from mobilemed.run_files import read_split_predictions
from mobilemed.training.threshold_views import VIEWS_FILE, read_views
from mobilemed.spec import ModelSpec
from mobilemed.training.config import TrainConfig
from mobilemed.training.finish import choose_operating_point


def training_labels(run_dir: Path, class_names: list, cross_validated: bool) -> np.ndarray:
    """The 0/1 labels of the images the run's loss saw (split.csv; train+val pooled under --cv)."""
    kept = {"train", "val"} if cross_validated else {"train"}
    with open(run_dir / "split.csv", newline="") as handle:
        return np.array([class_names.index(row["label"]) for row in csv.DictReader(handle) if row["split"] in kept])


def rescore(run_dir: Path, as_views: int | None = None) -> dict:
    config = TrainConfig.from_dict(read_config(run_dir))
    spec = ModelSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
    if spec.task != "binary":
        raise SystemExit(f"{run_dir}: only binary runs have one threshold to re-choose (task {spec.task})")
    labels = training_labels(run_dir, list(spec.class_names), bool(config.operating_point.cv_folds))
    val, test = read_split_predictions(run_dir, "val"), read_split_predictions(run_dir, "test")
    if as_views is not None:
        config = dataclasses.replace(config, operating_point=dataclasses.replace(config.operating_point,
                                                                                 threshold_views=as_views))
    views = None
    if config.operating_point.threshold_views:  # chosen on views (training/threshold_views.py)
        saved = read_views(run_dir)
        views = saved[0] if saved is not None and len(saved[0]) == config.operating_point.threshold_views \
            else drawn_views(run_dir, spec, config)
    (threshold,), neutral = choose_operating_point(spec, labels, val.y_true, val.logits, config, views)
    report = compute_metrics(test.y_true, test.y_prob, task="binary", class_names=spec.class_names,
                             thresholds=[threshold], n_bootstrap=config.run.n_bootstrap,
                             seed=config.optim.seed).to_dict()
    old = json.loads((run_dir / "metrics.json").read_text())["test"]
    return {"run": run_dir.name, "old threshold": spec.thresholds[0], "old acc": old["accuracy"]["value"],
            "neutral": neutral_probabilities(neutral, spec.temperature)[0], "threshold": threshold,
            "acc": report["accuracy"]["value"], "acc ci": report["accuracy"].get("ci"),
            "auroc": report["auroc_macro"]["value"], "best plain": best_j_at(spec, val.y_true, val.logits),
            "best views": float("nan") if views is None else best_j_at(spec, val.y_true, val.logits, views)}


def best_j_at(spec: ModelSpec, labels: np.ndarray, logits: np.ndarray, views: np.ndarray | None = None) -> float:
    """Where validation's own J peaks (the youden_max threshold): on the plain images, or on the pooled views."""
    from mobilemed.evaluation.calibration import probabilities_from_logits
    from mobilemed.evaluation.thresholds import choose_thresholds
    from mobilemed.training.threshold_views import pooled

    if views is not None:
        labels, logits = pooled(labels, views)
    prob = probabilities_from_logits(logits, "binary", spec.temperature)
    return choose_thresholds(labels, prob, task="binary", rule="youden_max")[0]


def drawn_views(run_dir: Path, spec: ModelSpec, config: TrainConfig) -> np.ndarray:
    """What finish_run computes under --threshold-views: the deployed model's views of the validation images."""
    from mobilemed.checkpoint import load_checkpoint
    from mobilemed.export.run_images import run_split_images
    from mobilemed.training.threshold_views import view_logits

    val = read_split_predictions(run_dir, "val")
    views, seed = config.operating_point.threshold_views, config.optim.seed
    if not config.operating_point.cv_folds:
        model, _ = load_checkpoint(run_dir / "best.pt")
        images, labels = run_split_images(run_dir, "val", spec)
        if not np.array_equal(labels, val.y_true):
            raise SystemExit(f"{run_dir}: its validation images no longer match predictions_val.npz")
        return view_logits(model, images, spec, config.optim.augmentation, views=views, seed=seed)
    from mobilemed.batch_predict import predict_logits  # --cv: the pooled train+val images, fold by fold
    from mobilemed.training.cross_validation import fold_seed

    pool = np.concatenate([run_split_images(run_dir, s, spec)[0] for s in ("train", "val")])
    with open(run_dir / "folds.csv", newline="") as handle:
        fold = np.array([int(row["fold"]) for row in csv.DictReader(handle)])
    out = np.zeros((views, *val.logits.shape), np.float32)
    for k in range(int(fold.max()) + 1):
        model, _ = load_checkpoint(run_dir / "folds" / f"fold{k}" / "best.pt", allow_incomplete=True)
        held_out = pool[fold == k]
        if not np.allclose(predict_logits(model, held_out, spec), val.logits[fold == k], atol=1e-4):
            raise SystemExit(f"{run_dir}: fold {k}'s model does not reproduce its saved out-of-fold logits")
        out[:, fold == k] = view_logits(model, held_out, spec, config.optim.augmentation, views=views,
                                        seed=fold_seed(seed, k))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--views", type=int, default=None, metavar="V",
                        help="re-choose as --threshold-views V would have (0: on the plain images)")
    args = parser.parse_args(argv)
    print("| run | old threshold | test acc | val best J at: plain / views | neutral point | new threshold "
          "| test acc [95% CI] | test AUROC |")
    print("|---|---:|---:|---|---:|---:|---|---:|")
    rows = [rescore(run, args.views) for run in args.runs]
    for row in rows:
        low, high = row["acc ci"] or (float("nan"), float("nan"))
        print(f"| {row['run']} | {row['old threshold']:.3f} | {row['old acc']:.3f} "
              f"| {row['best plain']:.3f} / {row['best views']:.3f} | {row['neutral']:.3f} "
              f"| {row['threshold']:.3f} | {row['acc']:.3f} [{low:.3f}, {high:.3f}] | {row['auroc']:.3f} |")
    acc = [row["acc"] for row in rows]
    print(f"test acc at the new thresholds: mean {np.mean(acc):.3f}, range {min(acc):.3f}-{max(acc):.3f} "
          f"(spread {max(acc) - min(acc):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
