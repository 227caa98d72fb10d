"""The run folder's file names, and the saved val/test predictions written and read side by side.

One owner for the layout: training/run_folder.py writes a run with these names, evaluation/run_data.py,
checkpoint.py, export/ and the CLI read it with them. It sits on a low floor (numpy only) so that every
reader can import it; the writers that need yaml or the image table stay in training/run_folder.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write

CONFIG = "config.yaml"        # {"config": TrainConfig.to_dict(), "spec": ModelSpec.to_dict()}
SPEC = "spec.json"
SPLIT = "split.csv"           # path, split, group, label(s): one row per image
VERSIONS = "versions.json"
HISTORY = "history.json"      # one dict per epoch
METRICS = "metrics.json"      # {"train_seconds", "val": report, "test": report}
BEST = "best.pt"
LAST = "last.pt"              # everything --resume needs
RUN_STATE = "run_state.json"  # {"state": "running" | "interrupted" | "failed" | "complete", ...}
REPORT = "report.html"
FEATURE_PASS = "feature_pass.json"  # a linear probe's feature pass: precision requested and chosen, and why
PLOTS = "plots"
GALLERY = "gallery"
GALLERY_INDEX = "gallery.json"


def write_json(path, data) -> None:
    """A run's JSON file (spec, history, metrics, versions, run state), written atomically."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, default=_json_default)
        handle.write("\n")


def read_json(path):
    """The JSON file at `path`, or None when it does not exist; a clear error when it is not JSON."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise MobilemedError(f"{path} is not valid JSON ({err}); delete or rewrite it") from err


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def config_value(config: dict, part: str, name: str, default=None):
    """A field of config.yaml's "config" section: grouped by part since version 2 (config["model"]["mode"]),
    flat before (config["mode"]), so a reader understands runs of either age."""
    section = config.get(part)
    return section.get(name, default) if isinstance(section, dict) else config.get(name, default)


def predictions_file(split: str) -> str:
    return f"predictions_{split}.npz"


@dataclass
class SplitPredictions:
    """One split's saved predictions (predictions_<split>.npz): what the model said about the val or
    test images of its run. Not inference.Predictions, which is what a Predictor says about new images."""

    files: np.ndarray     # (N,) str
    y_true: np.ndarray    # (N,) int or (N, K) int
    y_prob: np.ndarray    # (N,) or (N, K)
    class_names: list[str]
    task: str
    logits: np.ndarray | None = None


def write_split_predictions(run_dir, split: str, pred: SplitPredictions) -> Path:
    path = Path(run_dir) / predictions_file(split)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, files=np.asarray(pred.files, dtype=str), y_true=pred.y_true, y_prob=pred.y_prob,
                 logits=pred.logits if pred.logits is not None else np.zeros(0),
                 class_names=np.asarray(pred.class_names, dtype=str), task=np.asarray(pred.task))
    return path


def read_split_predictions(run_dir, split: str = "test") -> SplitPredictions:
    """predictions_<split>.npz of a run; a clear error naming the file when it is missing or unreadable."""
    path = Path(run_dir) / predictions_file(split)
    if not path.is_file():
        raise MobilemedError(f"{path} does not exist: is {run_dir} a finished run folder? "
                             f"(training writes {predictions_file(split)} at the end of a run)")
    try:
        with np.load(path, allow_pickle=False) as data:
            logits = np.asarray(data["logits"]) if "logits" in data.files else None
            return SplitPredictions(np.asarray(data["files"]).astype(str), np.asarray(data["y_true"]),
                                    np.asarray(data["y_prob"], dtype=float),
                                    [str(c) for c in np.asarray(data["class_names"])], str(data["task"]),
                                    logits if logits is not None and logits.size else None)
    except (KeyError, ValueError, OSError) as err:
        raise MobilemedError(f"{path} is not a readable predictions file ({err}); re-run training or "
                             f"evaluation to rewrite it") from err
