"""--ensemble N: N networks trained on the same split, each from its own seed, deployed as their mean probability.

Why: two runs of one command that differ only in the seed (the head's initial weights, the batches' order and
augmentation) land on models that agree on validation but differ on images from another population: on
Kermany's test folder three seeds of the README recipe scored 0.915-0.944 at one and the same threshold. That
spread is the models' own variance; averaging the probabilities of N independently seeded members divides it
(a deep ensemble, Lakshminarayanan et al. 2017) where no threshold rule can.

The story: train member 0, 1, ... N-1 one after the other on the run's train split, each keeping its best epoch
by validation AUROC as any run does -> load their best weights into one EnsembleClassifier (models/ensemble.py),
whose logits are those of the mean probability -> choose temperature and thresholds on the ensemble's
validation logits (and, with --threshold-views, on its logits of the views) -> score the test split once.
With --freeze-blocks the frozen prefix is the same pretrained blocks in every member, so its maps are computed
once for all of them (members.shared_prefix), as the folds of --cv share them.

Run folder: RUN/members/member<m>/ (last.pt, best.pt never marked complete, history.json and
predictions_val.npz, written last: the member is done), then the usual files of RUN for the ensemble;
metrics.json["ensemble"] gives each member's seed, best epoch and validation AUROC.
--resume: a member with predictions_val.npz is read back, one with last.pt continues from it; each member is
seeded by (seed, member) alone, so a resumed run trains what the uninterrupted one would have.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from mobilemed import run_files
from mobilemed.run_files import SplitPredictions
from mobilemed.spec import ModelSpec
from mobilemed.training.cross_validation import fold_seed
from mobilemed.training.members import (best_epoch, load_ensemble, predict, probabilities, shared_prefix,
                                         start_folder, train_and_val, validation_auroc)

log = logging.getLogger(__name__)
MEMBERS_DIR = "members"


def member_seed(seed: int, m: int) -> int:
    """Member m's seed (its initial head, its batches and augmentation): the formula of a fold's seed, since
    --ensemble and --cv never meet in one run."""
    return fold_seed(seed, m)


def member_dir(run_dir: Path, m: int) -> Path:
    return Path(run_dir) / MEMBERS_DIR / f"member{m}"


def train_ensemble(run_dir: Path, spec: ModelSpec, data: dict, table, config, weights, train_fn):
    """Train the config.model.ensemble members (or pick up the finished ones), then finish the run with their
    ensemble. train_fn(model, spec, data, config, run_dir, resume) -> Trained is fit()'s training strategy;
    table: the run's ImageTable (each member folder's split.csv). Returns finish_run's TrainResult."""
    from mobilemed.training.finish import finish_run

    started = time.perf_counter()
    count = config.model.ensemble
    shared = shared_prefix(train_and_val(data), spec, config)
    members = [_run_member(run_dir, m, spec, data, table, config, weights, train_fn, shared) for m in range(count)]
    log.info("ensemble: %d members, validation AUROC per member %s", count,
             [round(m["val_auroc"], 4) for m in members])
    model, spec = load_ensemble([member_dir(run_dir, m) for m in range(count)], spec)
    logits = {s: predict(model, data[s].images, spec, config) for s in ("val", "test") if len(data[s].images)}
    section = {"ensemble": {
        "members": count, "seeds": [m["seed"] for m in members], "best_epoch_per_member": [m["best_epoch"]
                                                                                            for m in members],
        "val_auroc_per_member": [m["val_auroc"] for m in members],
        "shared_prefix_seconds": None if shared is None else round(shared.seconds, 1),  # 0: read back on --resume
        "deployed": f"the mean probability of {count} networks trained on the train split, each from its own seed"}}
    return finish_run(run_dir, model, spec, data, config, [], seconds=time.perf_counter() - started, logits=logits,
                      sections=lambda _spec, _predictions: section)


def _run_member(run_dir: Path, m: int, spec: ModelSpec, data: dict, table, config, weights, train_fn,
                shared) -> dict:
    """Train member m (or read it back when it finished before); its seed, best epoch and validation AUROC."""
    folder, seed = member_dir(run_dir, m), member_seed(config.optim.seed, m)
    done = folder / run_files.predictions_file("val")
    if config.run.resume and done.is_file():
        log.info("member %d: finished before, reading %s", m, done)
        logits = run_files.read_split_predictions(folder, "val").logits
    else:
        logits = _train_member(folder, m, seed, spec, data, table, config, weights, train_fn, shared)
    return {"seed": seed, "best_epoch": best_epoch(run_files.read_json(folder / run_files.HISTORY)),
            "val_auroc": validation_auroc(data["val"].labels, logits, spec)}


def _train_member(folder: Path, m: int, seed: int, spec: ModelSpec, data: dict, table, config, weights, train_fn,
                  shared) -> np.ndarray:
    """Member m's training in its folder from its own seed; its validation logits, written last (done)."""
    from mobilemed.models import build_model
    from mobilemed.training.fit import seed_everything

    payload = start_folder(folder, spec, table, resume=config.run.resume)
    seed_everything(seed)  # the member's initial head depends on (seed, member) alone
    model = build_model(spec, weights)
    part = dict(data)
    if shared is not None:  # the train rows, then the val rows, of the shared pass over train + val
        n_train = len(data["train"].labels)
        train_maps, val_maps = shared.rows(model, np.arange(n_train), n_train + np.arange(len(data["val"].labels)))
        part["train"] = dataclasses.replace(data["train"], prefix_maps=train_maps)
        part["val"] = dataclasses.replace(data["val"], prefix_maps=val_maps)
    log.info("member %d of %d (seed %d): training on %d images", m + 1, config.model.ensemble, seed,
             len(part["train"].labels))
    member_config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, seed=seed))
    trained = train_fn(model, spec, part, member_config, folder, payload)
    logits = trained.logits["val"] if trained.logits else predict(model, part["val"].images, spec, config)
    run_files.write_json(folder / run_files.HISTORY, trained.history)
    val = data["val"]
    run_files.write_split_predictions(folder, "val", SplitPredictions(
        val.files, val.labels, probabilities(logits, spec), list(spec.class_names), spec.task, logits))
    return logits
