"""Reading a run folder (as training/run_folder.py writes it) for the report and run comparison: every piece
but one is optional."""
from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mobilemed import run_files as rf
from mobilemed.data.table import SPLITS
from mobilemed.errors import MobilemedError
from mobilemed.run_config import read_config
from mobilemed.run_files import SplitPredictions, read_split_predictions

log = logging.getLogger(__name__)


@dataclass
class RunData:
    path: Path
    config: dict | None = None       # config.yaml's "config" section (run_config.read_config)
    spec: dict | None = None         # spec.json
    metrics: dict = field(default_factory=dict)  # {"val": ..., "test": ...}
    history: list | None = None
    versions: dict | None = None
    split_rows: list[dict] | None = None
    predictions: dict[str, SplitPredictions] = field(default_factory=dict)
    gallery: list[dict] | None = None
    member_histories: dict[str, list] = field(default_factory=dict)  # --ensemble / --cv: "member0" -> history

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def eval_split(self) -> str | None:
        """The split the report shows: test when present, else validation."""
        return next((s for s in ("test", "val") if s in self.predictions or s in self.metrics), None)


def load_run(run_dir) -> RunData:
    """Everything the report can use; raises MobilemedError when there is nothing to report on."""
    path = Path(run_dir)
    if not path.is_dir():
        raise MobilemedError(f"run folder {path} does not exist; pass the folder a training run wrote")
    run = RunData(path=path, config=read_config(path), spec=rf.read_json(path / rf.SPEC),
                  metrics=_metrics(path / rf.METRICS), history=rf.read_json(path / rf.HISTORY),
                  versions=rf.read_json(path / rf.VERSIONS), split_rows=_split_rows(path / rf.SPLIT),
                  gallery=rf.read_json(path / rf.GALLERY / rf.GALLERY_INDEX))
    for folder in sorted([*path.glob("members/member*"), *path.glob("folds/fold*")], key=_numbered):
        history = rf.read_json(folder / rf.HISTORY)
        if history:
            run.member_histories[folder.name] = history
    for split in ("val", "test"):
        if (path / rf.predictions_file(split)).is_file():
            run.predictions[split] = read_split_predictions(path, split)
    if not run.predictions and not run.metrics:
        raise MobilemedError(f"{path} has neither metrics.json nor predictions_*.npz: is it a finished run "
                             f"folder? Train with `mobilemed train` or pass another folder")
    return run


def _numbered(folder: Path) -> tuple[str, int]:
    """member2 before member10."""
    stem = folder.name.rstrip("0123456789")
    return stem, int(folder.name[len(stem):] or 0)


def _metrics(path: Path) -> dict:
    data = rf.read_json(path) or {}
    if "task" in data and "per_class" in data:  # an evaluate output: one split's report at the top level
        return {"test": data}
    return data


def _split_rows(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def split_counts(rows: list[dict], class_names: list[str] | None) -> tuple[list[str], list[list]]:
    """A table of split.csv: rows are images, groups and one count per class; columns train/val/test/total.

    Single-label files have a `label` column; multi-label files have one 0/1 column per finding.
    """
    if not rows:
        return [], []
    fields = list(rows[0])
    multilabel = "label" not in fields
    names = [f for f in fields if f not in ("path", "split", "group")] if multilabel \
        else class_names or sorted({r["label"] for r in rows})
    images, groups, counts = Counter(), defaultdict(set), Counter()
    for row in rows:  # one pass: large label tables stay quick
        split = row.get("split") if row.get("split") in SPLITS else "unused"
        images[split] += 1
        if row.get("group"):
            groups[split].add(row["group"])
        for name in (n for n in names if _is_one(row[n])) if multilabel else [row["label"]]:
            counts[split, name] += 1
    splits = [s for s in (*SPLITS, "unused") if images[s]]
    table = [["images", *[images[s] for s in splits], len(rows)]]
    if groups:
        table.append(["patients / groups", *[len(groups[s]) for s in splits], len(set().union(*groups.values()))])
    for name in names:
        label = f"{name} (positive)" if multilabel else name
        table.append([label, *[counts[s, name] for s in splits], sum(counts[s, name] for s in splits)])
    return ["", *splits, "total"], table


def _is_one(value: str) -> bool:
    try:
        return float(value) >= 0.5
    except (TypeError, ValueError):
        return False
