"""Which labelled images an evaluation scores, their labels in the model's class order, and the record of
what was evaluated (metrics.json "evaluation").

Two kinds:
- a held-out split ("test", "val", "train") of the model's own data: the split the run saved in split.csv
  when it lists these images (so --resplit or another --split-seed cannot put training images in it), else
  the data's own split;
- "all": external validation. Every labelled image of the data is scored and no split is made. Images the
  run trained or tuned on (split.csv) are refused: they would make an external figure look better.
Class names match the model's exactly or ignoring case ("pneumonia" folder, "PNEUMONIA" model).
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from mobilemed.data.positive_class import class_index
from mobilemed.data.sources import DataOptions, load_table, read_source
from mobilemed.data.splits import apply_saved_split
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)
ALL = "all"


def rows_to_evaluate(data: str, options: DataOptions, split: str, saved_split: Path | None) -> ImageTable:
    """The rows of `data` that `split` names (ALL: every labelled image). saved_split: the run's split.csv."""
    saved_split = saved_split if saved_split and saved_split.is_file() else None
    if split == ALL:
        table = read_source(data, options)
        if len(table) == 0:
            raise MobilemedError(f"{data}: no images found")
        _refuse_seen_images(table, saved_split)
        return table
    table = load_table(data, options)
    if saved_split and not (options.split_column or options.resplit):
        restored = apply_saved_split(table, saved_split)
        log.info("using the split the run saved in %s" if restored is not None else
                 "%s does not list these images: using the data's own split", saved_split)
        table = table if restored is None else restored
    part = table.split(split)
    if len(part) == 0:
        raise MobilemedError(f"{data} has no {split} split; choose --split train/val/test, or all to score "
                             "every image")
    return part


def _refuse_seen_images(table: ImageTable, saved_split: Path | None) -> None:
    if saved_split is None:
        return
    with open(saved_split, newline="") as handle:
        seen = {os.path.abspath(row["path"]) for row in csv.DictReader(handle) if row["split"] in ("train", "val")}
    seen = [p for p in table.paths if os.path.abspath(str(p)) in seen]  # "data/x.png" and "/work/data/x.png" alike
    if seen:
        raise MobilemedError(f"{len(seen)} of these {len(table)} images trained or tuned the model (they are in "
                             f"{saved_split}, e.g. {seen[0]}): --split all is for external data; score the run's "
                             "held-out images with --split test")


def check_compatible(table: ImageTable, class_names: list[str], task: str, data: str) -> None:
    """The data must be the model's task, and every class of the data one the model knows."""
    if table.task != task and not (table.task == "binary" and task == "multiclass"):
        raise MobilemedError(f"{data} is a {table.task} task but the checkpoint is a {task} model for "
                             f"{class_names}; evaluate it on data with the same task")
    unknown = [n for n in table.class_names if class_index(class_names, n) is None]
    if unknown:
        raise MobilemedError(f"{data} has class(es) {', '.join(map(repr, unknown))}, which the model does not know "
                             f"(matched ignoring case); the data's classes: {', '.join(table.class_names)}; the "
                             f"model's: {', '.join(class_names)}")


def remap_labels(table: ImageTable, class_names: list[str]) -> np.ndarray:
    """The table's labels in the model's class order (folders may list or spell classes differently)."""
    if table.is_multilabel:
        order = [class_index(table.class_names, n) for n in class_names]
        missing = [class_names[i] for i, o in enumerate(order) if o is None]
        if missing:
            raise MobilemedError(f"the data has no column for the model's finding {missing[0]!r}; its columns: "
                                 f"{', '.join(table.class_names)}")
        return table.labels[:, order].astype(np.int64)
    mapping = np.array([class_index(class_names, n) for n in table.class_names])
    return mapping[table.labels.astype(np.int64)]


def as_positive(positive: str | None, class_names: list[str], thresholds: list[float], labels, y_prob):
    """A binary model's outputs re-expressed with `positive` as the positive class: (class_names, thresholds,
    labels, y_prob). The model gives P(class_names[1]); for the other class that is 1 - p at threshold 1 - t
    (the same decisions, except a probability exactly at the threshold)."""
    if not positive or class_index(class_names, positive) == 1:
        return class_names, thresholds, labels, y_prob
    if len(class_names) != 2 or class_index(class_names, positive) is None:
        raise MobilemedError(f"--positive-class {positive!r}: the model is not binary or has no such class; its "
                             f"classes are: {', '.join(class_names)}")
    return class_names[::-1], [1.0 - t for t in thresholds], 1 - np.asarray(labels), 1.0 - np.asarray(y_prob)


def describe(data: str, split: str, labels: np.ndarray, class_names: list[str]) -> dict:
    """What was scored (labels as remap_labels gives them), for metrics.json "evaluation" and the summary."""
    counts = labels.sum(axis=0) if labels.ndim == 2 else np.bincount(labels, minlength=len(class_names))
    return {"kind": "external" if split == ALL else "held-out split", "split": split,
            "data": str(Path(data).expanduser().resolve()) if Path(data).expanduser().exists() else data,
            "n_images": len(labels), "class_counts": dict(zip(class_names, map(int, counts)))}


def format_description(about: dict) -> str:
    counts = ", ".join(f"{name} {n}" for name, n in about["class_counts"].items())
    what = "external evaluation: every labelled image of" if about["kind"] == "external" \
        else f"the {about['split']} split of"
    return f"{what} {about['data']}: {about['n_images']} images ({counts})"
