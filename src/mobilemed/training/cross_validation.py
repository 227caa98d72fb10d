"""--cv K: the operating point chosen on K patient-grouped, stratified folds of train+val, not one small split.

The story: pool train and val -> deal the pooled images into K folds (whole patients, or identical images,
in one fold; every class spread evenly: data/splits.py assign_folds) -> for each fold, train on the other
K-1 folds and predict the held-out one (out-of-fold, OOF) -> fit the temperature and choose the thresholds
on the pooled OOF predictions, so every train+val image takes part once -> cross-validated metrics with
bootstrap CIs on the same pooled predictions -> the deployed model: a refit on all of train+val for the
median of the folds' best epochs (default), or the fold ensemble (--cv-ensemble: the average of the fold
models' probabilities) -> the test split is scored once, as in every run. The test split never enters a fold.

Run folder: RUN/folds.csv (path, fold), RUN/folds/fold<k>/ (split.csv with the fold's train/val, last.pt,
best.pt, history.json, predictions_oof.npz; its best.pt is never marked complete, so no consumer takes a fold
model for the deployed one), then the usual files of RUN for the deployed model; predictions_val.npz and
metrics.json["val"] hold the pooled OOF predictions, metrics.json["cv"] the cross-validated summary.
--resume: RUN's lock covers the folds; a fold with predictions_oof.npz is done, one with last.pt continues
from it, and the refit continues from RUN/last.pt. Each fold model is seeded by (seed, fold) alone, so a
resumed run trains what the uninterrupted one would have.

Caveats, said in metrics.json["cv"]: each fold keeps its best epoch by the held-out fold's AUROC (as every
run does on val), and the thresholds are chosen on the OOF predictions the CV metrics are computed on, so the
CV figures at the operating point lean optimistic; the test split is the unbiased figure.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from mobilemed import run_files
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError
from mobilemed.run_files import SplitPredictions
from mobilemed.spec import ModelSpec
from mobilemed.training.members import (best_epoch, load_ensemble, predict, probabilities, shared_prefix,
                                         start_folder, train_and_val, validation_auroc)

log = logging.getLogger(__name__)
FOLDS_CSV = "folds.csv"
FOLDS_DIR = "folds"
OOF = "oof"  # predictions_oof.npz in a fold folder: the fold is done


def pooled_table(table: ImageTable) -> ImageTable:
    """train rows then val rows: the images cross-validation deals into folds (test is never among them)."""
    return table.subset(np.r_[np.flatnonzero(table.splits == "train"), np.flatnonzero(table.splits == "val")])


def assign_cv_folds(table: ImageTable, folds: int, seed: int) -> np.ndarray:
    """(N_pooled,) fold per pooled row, checked: no patient in two folds, every class in every fold.
    Called before the run folder is touched, so a bad --cv is refused with nothing written."""
    from mobilemed.data.splits import assign_folds, groups_across_splits

    pooled = pooled_table(table)
    if len(pooled) < 2 * folds:
        raise MobilemedError(f"--cv {folds} needs at least {2 * folds} train+val images; {table.source} has "
                             f"{len(pooled)}: use a smaller --cv")
    fold = assign_folds(pooled, folds, seed)
    names = np.array([f"fold{k}" for k in fold], dtype=object)
    crossing = groups_across_splits(dataclasses.replace(pooled, splits=names))
    if crossing:  # assign_folds keeps patients whole; this holds the line should that ever change
        raise MobilemedError(f"--cv: patients {sorted(crossing)[:3]} fall into two folds")
    for k in range(folds):
        counts = pooled.subset(fold == k).class_counts()
        if counts.min() == 0 and pooled.task != "multilabel":
            missing = pooled.class_names[int(np.argmin(counts))]
            raise MobilemedError(f"--cv {folds}: fold {k} has no {missing!r} image (too few images or patients of "
                                 f"that class for {folds} folds); use a smaller --cv")
    return fold


def fold_table(pooled: ImageTable, fold: np.ndarray, k: int) -> ImageTable:
    """The pooled table with fold k as "val" and the other folds as "train"."""
    return dataclasses.replace(pooled, splits=np.where(fold == k, "val", "train").astype(object))


def write_folds_csv(run_dir: Path, pooled: ImageTable, fold: np.ndarray) -> None:
    """RUN/folds.csv; on --resume the folds must be the ones the run started with."""
    text = "path,fold\n" + "".join(f"{p},{k}\n" for p, k in zip(pooled.paths, fold))
    path = Path(run_dir) / FOLDS_CSV
    if path.is_file() and path.read_text() != text:
        raise MobilemedError(f"--resume: the folds differ from {path}; resume with the run's own data and options, "
                             "or use --overwrite")
    from mobilemed.fsutil import atomic_write

    with atomic_write(path) as handle:
        handle.write(text)


def cross_validate(run_dir: Path, model, spec: ModelSpec, data: dict, table: ImageTable, fold: np.ndarray,
                   config, weights, resume: dict | None, train_fn):
    """Train the K folds (or pick up the finished ones), then the deployed model, then finish the run with
    the pooled OOF predictions in the place of validation. `resume`: RUN/last.pt's payload (the refit's) or
    None; train_fn(model, spec, data, config, run_dir, resume) -> Trained is fit()'s training strategy.
    Returns the TrainResult of finish_run."""
    from mobilemed.training.finish import finish_run
    from mobilemed.training.fit import SplitData

    started = time.perf_counter()
    pooled = pooled_table(table)
    write_folds_csv(run_dir, pooled, fold)
    pool = train_and_val(data)
    folds = int(fold.max()) + 1
    shared = shared_prefix(pool, spec, config)
    oof_logits, oof_views, best_epochs, per_fold = None, None, [], []
    for k in range(folds):
        logits, views, kept_epoch = _run_fold(run_dir, k, spec, pool, pooled, fold, config, weights, train_fn,
                                              shared)
        oof_logits = np.zeros((len(pool.labels), *logits.shape[1:]), logits.dtype) if oof_logits is None else oof_logits
        oof_logits[fold == k] = logits
        if views is not None:  # --threshold-views: each fold model's views of its own held-out images
            oof_views = np.zeros((len(views), *oof_logits.shape), np.float32) if oof_views is None else oof_views
            oof_views[:, fold == k] = views
        best_epochs.append(kept_epoch)
        per_fold.append(validation_auroc(pool.labels[fold == k], logits, spec))
    log.info("cross-validation: %d folds, AUROC per fold %s", folds, [round(a, 4) for a in per_fold])
    if config.operating_point.cv_ensemble:
        model, spec = load_ensemble([Path(run_dir) / FOLDS_DIR / f"fold{k}" for k in range(folds)], spec)
        history = []
        deployed = f"the ensemble of the {folds} fold models (mean probability)"
    else:
        epochs = int(np.median(best_epochs))
        refit = dataclasses.replace(config, optim=dataclasses.replace(config.optim, epochs=epochs, patience=0))
        # no image is held out of a refit: the loop's "validation" is fold 0, which it trains on (history only)
        monitor = SplitData(pool.images[fold == 0], pool.labels[fold == 0], pool.files[fold == 0])
        refit_data = {"train": pool, "val": monitor}
        if shared is not None:
            train_maps, monitor_maps = shared.rows(model, np.arange(len(pool.labels)), np.flatnonzero(fold == 0))
            refit_data = {"train": dataclasses.replace(pool, prefix_maps=train_maps),
                          "val": dataclasses.replace(monitor, prefix_maps=monitor_maps)}
        history = train_fn(model, spec, refit_data, refit, run_dir, resume).history
        deployed = f"refit on all of train+val for {epochs} epochs (the folds' median best epoch)"
    logits = {"val": oof_logits, **({"val_views": oof_views} if oof_views is not None else {})}
    if len(data["test"].images):
        logits["test"] = predict(model, data["test"].images, spec, config)
    return finish_run(run_dir, model, spec, {"train": pool, "val": pool, "test": data["test"]}, config, history,
                      seconds=time.perf_counter() - started, logits=logits,
                      sections=lambda final_spec, predictions: _cv_metrics(final_spec, predictions["val"], config,
                                                                          per_fold, best_epochs, deployed))


def _run_fold(run_dir: Path, k: int, spec: ModelSpec, pool, pooled: ImageTable, fold: np.ndarray, config, weights,
              train_fn, shared=None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(the held-out fold's logits, their --threshold-views logits or None, the fold's best epoch): read back
    when the fold finished before."""
    from mobilemed.models import build_model
    from mobilemed.training.fit import SplitData, seed_everything
    from mobilemed.training.threshold_views import read_views, save_views, view_logits

    fold_dir = Path(run_dir) / FOLDS_DIR / f"fold{k}"
    done = fold_dir / run_files.predictions_file(OOF)
    wants_views = bool(config.operating_point.threshold_views)
    if config.run.resume and done.is_file():
        log.info("fold %d: finished before, reading %s", k, done)
        views = read_views(fold_dir) if wants_views else None
        if wants_views and views is None:
            raise MobilemedError(f"--resume: {fold_dir} finished without its threshold views; start again with "
                                 "--overwrite")
        return run_files.read_split_predictions(fold_dir, OOF).logits, None if views is None else views[0], \
            best_epoch(run_files.read_json(fold_dir / run_files.HISTORY))
    payload = start_folder(fold_dir, spec, fold_table(pooled, fold, k), resume=config.run.resume)
    seed_everything(fold_seed(config.optim.seed, k))  # the fold's initial head depends on (seed, fold) alone
    model = build_model(spec, weights)
    held_out = fold == k
    train_maps, val_maps = (shared.rows(model, np.flatnonzero(~held_out), np.flatnonzero(held_out))
                            if shared is not None else (None, None))
    part = {"train": SplitData(pool.images[~held_out], pool.labels[~held_out], pool.files[~held_out],
                               prefix_maps=train_maps),
            "val": SplitData(pool.images[held_out], pool.labels[held_out], pool.files[held_out], prefix_maps=val_maps)}
    log.info("fold %d of %d: training on %d images, holding out %d", k + 1, int(fold.max()) + 1,
             int((~held_out).sum()), int(held_out.sum()))
    trained = train_fn(model, spec, part, config, fold_dir, payload)
    logits = trained.logits["val"] if trained.logits else predict(model, part["val"].images, spec, config)
    views = None
    if wants_views:  # fit() refused it for multi-class data before anything ran
        views = view_logits(model, part["val"].images, spec, config.optim.augmentation,
                            views=config.operating_point.threshold_views, seed=fold_seed(config.optim.seed, k),
                            progress=config.run.progress)
        save_views(fold_dir, views, part["val"].labels)
    run_files.write_json(fold_dir / run_files.HISTORY, trained.history)
    run_files.write_split_predictions(fold_dir, OOF, SplitPredictions(
        part["val"].files, part["val"].labels, probabilities(logits, spec), list(spec.class_names), spec.task,
        logits))  # written last: its presence marks the fold done
    return logits, views, best_epoch(trained.history)


def fold_seed(seed: int, k: int) -> int:
    """Fold k's own seed (its initial head, its --threshold-views draws): a function of (seed, fold) alone."""
    return seed * 1_009 + k


def _cv_metrics(spec: ModelSpec, oof: SplitPredictions, config, per_fold: list, best_epochs: list,
                deployed: str) -> dict:
    """{"cv": the pooled OOF metrics at the deployed operating point (spec's), with bootstrap CIs}."""
    from mobilemed.evaluation.metrics import compute_metrics

    report = compute_metrics(oof.y_true, oof.y_prob, task=spec.task, class_names=spec.class_names,
                             thresholds=spec.thresholds, n_bootstrap=config.run.n_bootstrap, seed=config.optim.seed)
    return {"cv": {
        "folds": len(per_fold), "n": int(len(oof.y_true)), "auroc_per_fold": per_fold,
        "best_epoch_per_fold": best_epochs, "deployed": deployed,
        "pooled_out_of_fold": report.to_dict(),
        "note": "Temperature and thresholds were chosen on these pooled out-of-fold predictions, and each fold "
                "kept its best epoch by its held-out AUROC: figures at the operating point lean optimistic; "
                "the test split is the unbiased one"}}
