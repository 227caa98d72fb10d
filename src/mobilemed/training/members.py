"""What the K fold models of --cv and the N members of --ensemble share: several networks of one spec trained
one after the other in sub-folders of the run, maybe on one shared frozen prefix, then read back as one
ensemble (models/ensemble.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mobilemed import run_files
from mobilemed.spec import ModelSpec
from mobilemed.training import run_folder


def train_and_val(data: dict):
    """One SplitData of the train rows, then the val rows: what --cv deals into folds and what the shared
    frozen-prefix pass covers."""
    from mobilemed.training.fit import SplitData

    train, val = data["train"], data["val"]
    return SplitData(np.concatenate([train.images, val.images]), np.concatenate([train.labels, val.labels]),
                     np.concatenate([train.files, val.files]))


def start_folder(folder: Path, spec: ModelSpec, table, *, resume: bool) -> dict | None:
    """Make a network's sub-folder ready to train in: created, a killed write's leftovers removed, its split.csv
    written (table: the rows it trains and validates on). On --resume returns its last.pt payload, checked
    against the split before that split.csv is written; None: it starts from epoch 1."""
    from mobilemed.training.resume import resume_state

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # a killed write's leftovers; never read
        stale.unlink()
    payload = resume_state(folder, spec, table) if resume and (folder / run_files.LAST).is_file() else None
    run_folder.write_split(folder, table)
    return payload


def load_ensemble(folders: list[Path], spec: ModelSpec):
    """(EnsembleClassifier of the best.pt weights in `folders`, its spec)."""
    from mobilemed.checkpoint import read_checkpoint
    from mobilemed.models import build_model

    spec = dataclasses.replace(spec, ensemble_size=len(folders))
    model = build_model(spec)
    for member, folder in zip(model.members, folders):
        member.load_state_dict(read_checkpoint(Path(folder) / run_files.BEST)["model"])
    return model.eval(), spec


def shared_prefix(pool, spec: ModelSpec, config):
    """The frozen-prefix maps the networks share (training/prefix_finetune.py: SharedPrefixMaps) of `pool`'s
    images, or None when the run does not fine-tune on cached frozen blocks."""
    if config.model.mode != "finetune" or not config.model.freeze_blocks:
        return None
    from mobilemed.training.prefix_finetune import SharedPrefixMaps

    return SharedPrefixMaps(pool.images, spec, config.optim, freeze_blocks=config.model.freeze_blocks,
                            progress=config.run.progress)


def predict(model, images, spec: ModelSpec, config) -> np.ndarray:
    from mobilemed.batch_predict import predict_logits

    return predict_logits(model, images, spec, tta=spec.tta, progress=config.run.progress)


def probabilities(logits: np.ndarray, spec: ModelSpec) -> np.ndarray:
    from mobilemed.decision import probabilities as to_probabilities

    return to_probabilities(logits, spec.task, 1.0)


def best_epoch(history: list | None) -> int:
    """The epoch (1-based) whose validation AUROC was the best: the one the network was kept from."""
    rows = [r for r in history or [] if r.get("val_auroc") is not None and np.isfinite(r["val_auroc"])]
    if not rows:
        return max(1, len(history or []))
    return int(max(rows, key=lambda r: r["val_auroc"])["epoch"])


def validation_auroc(labels: np.ndarray, logits: np.ndarray, spec: ModelSpec) -> float:
    from mobilemed.training.scoring import validation_metrics

    return float(validation_metrics(labels, logits, spec.task)["val_auroc"])
