"""Re-choose finished binary runs' thresholds with the current operating-point rule, from their saved validation
predictions and without retraining, and score their saved test predictions at the new threshold.

    python scripts/rescore_operating_point.py RUN [RUN ...]

It calls what training/finish.py calls at the end of a run (choose_operating_point) on the run's training
labels (split.csv: train, or train+val under --cv), its options (config.yaml) and its saved validation (or
pooled out-of-fold) logits at the run's temperature. The model is untouched, so this is what rerunning the run's command with the current code
ends with as long as training itself did not change (CPU training here is deterministic: same seed, same
weights). The test split is only scored, with the run's bootstrap settings; printed per run: the old and new
threshold, test accuracy at each (95% CI at the new one), test AUROC.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from mobilemed.evaluation.metrics import compute_metrics
from mobilemed.evaluation.thresholds import neutral_probabilities
from mobilemed.run_files import read_split_predictions
from mobilemed.spec import ModelSpec
from mobilemed.training.config import TrainConfig
from mobilemed.training.finish import choose_operating_point


def training_labels(run_dir: Path, class_names: list, cross_validated: bool) -> np.ndarray:
    """The 0/1 labels of the images the run's loss saw (split.csv; train+val pooled under --cv)."""
    kept = {"train", "val"} if cross_validated else {"train"}
    with open(run_dir / "split.csv", newline="") as handle:
        return np.array([class_names.index(row["label"]) for row in csv.DictReader(handle) if row["split"] in kept])


def rescore(run_dir: Path) -> dict:
    config = TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())["config"])
    spec = ModelSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
    if spec.task != "binary":
        raise SystemExit(f"{run_dir}: only binary runs have one threshold to re-choose (task {spec.task})")
    labels = training_labels(run_dir, list(spec.class_names), bool(config.operating_point.cv_folds))
    val, test = read_split_predictions(run_dir, "val"), read_split_predictions(run_dir, "test")
    (threshold,), neutral = choose_operating_point(spec, labels, val.y_true, val.logits, config)
    report = compute_metrics(test.y_true, test.y_prob, task="binary", class_names=spec.class_names,
                             thresholds=[threshold], n_bootstrap=config.run.n_bootstrap,
                             seed=config.optim.seed).to_dict()
    old = json.loads((run_dir / "metrics.json").read_text())["test"]
    return {"run": run_dir.name, "old threshold": spec.thresholds[0], "old acc": old["accuracy"]["value"],
            "neutral": neutral_probabilities(neutral, spec.temperature)[0], "threshold": threshold,
            "acc": report["accuracy"]["value"], "acc ci": report["accuracy"].get("ci"),
            "auroc": report["auroc_macro"]["value"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("| run | old threshold | test acc | neutral point | new threshold | test acc [95% CI] | test AUROC |")
    print("|---|---:|---:|---:|---:|---|---:|")
    rows = [rescore(run) for run in args.runs]
    for row in rows:
        low, high = row["acc ci"] or (float("nan"), float("nan"))
        print(f"| {row['run']} | {row['old threshold']:.3f} | {row['old acc']:.3f} | {row['neutral']:.3f} "
              f"| {row['threshold']:.3f} | {row['acc']:.3f} [{low:.3f}, {high:.3f}] | {row['auroc']:.3f} |")
    acc = [row["acc"] for row in rows]
    print(f"test acc at the new thresholds: mean {np.mean(acc):.3f}, range {min(acc):.3f}-{max(acc):.3f} "
          f"(spread {max(acc) - min(acc):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
