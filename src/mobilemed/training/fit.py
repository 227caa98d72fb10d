"""fit(config): the training story, top to bottom.

load data -> audit the split -> decode once -> build the model -> train (linear probe on cached
features, or the whole network) with early stopping on validation AUROC -> choose the operating
point and temperature on validation -> evaluate test once -> write the run folder and report.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mobilemed.assets import load_imagenet_state
from mobilemed.checkpoint import load_state_dict_file
from mobilemed.data.cache import decoded_images, take_splits
from mobilemed.data.sources import load_table
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError
from mobilemed.models import build_model
from mobilemed.spec import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from mobilemed.training import run_folder, run_guard
from mobilemed.training.config import ModelChoice, TrainConfig
from mobilemed.training.cross_validation import assign_cv_folds, cross_validate
from mobilemed.training.distributed import Dist, check_distributed, session
from mobilemed.training.finish import TrainResult, finish_run
from mobilemed.training.leakage import check_leakage
from mobilemed.training.resume import check_resume_config, check_resume_split, resume_state
from mobilemed.training.seed_ensemble import train_ensemble
from mobilemed.training.strategies import train_linear_probe, train_network

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """Cached pixels and labels of one split."""

    images: np.ndarray
    labels: np.ndarray
    files: np.ndarray
    features: np.ndarray | None = None  # a linear probe's frozen features, once computed
    prefix_maps: np.ndarray | None = None  # --freeze-blocks: these rows' cached prefix maps, when a caller shares them


def fit(config: TrainConfig) -> TrainResult | None:
    """Train, evaluate and report: the run folder gets config, split, checkpoints, predictions, metrics,
    plots and report.html, and the same numbers come back as a TrainResult (run_dir, spec, metrics, history,
    predictions). Everything is checked (options when the config was built; output folder, resume
    compatibility, data, weights here) before the run folder is touched; see training/run_guard.py.
    A failed or interrupted run leaves the folder marked so, and --resume continues it from last.pt.
    Under torchrun every process trains its share and rank 0 alone writes the run folder and returns the
    result; the others return None (training/distributed.py)."""
    with session(config.compute) as here:
        return _fit(config, here)


def _fit(config: TrainConfig, here: Dist) -> TrainResult | None:
    seed_everything(config.optim.seed)
    if not here.is_main:  # one voice: rank 0 shows the progress bars
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, progress=False))
    run = config.run
    run_dir = Path(run.run_dir) if run.run_dir else run_folder.default_run_dir(config.data, config.model.mode)
    config = check_distributed(config, here)
    here.agree(_check_run_dir, run_dir, config, main_only=True)  # rank 0 writes the folder: its view counts
    weights = here.agree(backbone_state, config.model)
    table = here.agree(load_table, config.data, config.data_options)
    if config.operating_point.threshold_views and table.task == "multiclass":
        raise MobilemedError("--threshold-views moves decision thresholds, but a multi-class model decides by the "
                             "largest probability and has none: drop --threshold-views")
    here.agree(check_leakage, table, strict=run.strict, main_only=True)
    image_size = config.model.image_size or default_image_size(table)
    images, keep = here.local_first(decoded_images, table, image_size, skip_bad=run.skip_bad, progress=run.progress,
                                    use_voi=config.data_options.use_voi)
    table = table.subset(keep)
    spec = make_spec(config, table, in_chans=1 if images.ndim == 3 else 3, image_size=image_size)
    pixels = take_splits(images, table.splits)  # in memory; the memory-mapped cache's pages are let go
    data = {s: SplitData(pixels[s], table.labels[table.splits == s], table.paths[table.splits == s])
            for s in ("train", "val", "test")}
    folds = assign_cv_folds(table, config.operating_point.cv_folds, config.data_options.seed) \
        if config.operating_point.cv_folds else None  # refused here, before anything is written
    model = build_model(spec, weights)
    one_network = config.model.ensemble == 1  # an ensemble's members resume from their own folders
    resume = here.agree(resume_state, run_dir, spec, table, main_only=True) if run.resume and one_network else None
    if run.resume and not one_network:
        check_resume_split(run_dir, table)
    if not here.is_main:
        return _train_and_finish(run_dir, model, spec, data, config, resume, here)
    with run_guard.guarded_run(run_dir, overwrite=run.overwrite):  # locked; "complete" only on success
        _write_run_start(run_dir, config, spec, table, here)
        if folds is not None:
            return cross_validate(run_dir, model, spec, data, table, folds, config, weights, resume, train_model)
        if not one_network:
            return train_ensemble(run_dir, spec, data, table, config, weights, train_model)
        return _train_and_finish(run_dir, model, spec, data, config, resume, here)


def _check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    run_guard.check_out_dir(run_dir, resume=config.run.resume, overwrite=config.run.overwrite)
    if config.run.resume:
        check_resume_config(run_dir, config)


def _train_and_finish(run_dir: Path, model, spec: ModelSpec, data: dict, config: TrainConfig,
                      resume, here: Dist = Dist()) -> TrainResult | None:
    started = time.perf_counter()
    trained = train_model(model, spec, data, config, run_dir, resume, here)
    log.info("training took %.1f s", time.perf_counter() - started)
    if not here.is_main:  # the evaluation, outputs and report are rank 0's
        return None
    return finish_run(run_dir, model, spec, data, config, trained.history, seconds=time.perf_counter() - started,
                      logits=trained.logits)


def train_model(model, spec: ModelSpec, data: dict, config: TrainConfig, run_dir: Path, resume,
                here: Dist = Dist()):
    """The training strategy of config.model.mode on data's train split, early stopping on its val split;
    also the training of every cross-validation fold (training/cross_validation.py). here: this process
    under torchrun (training/distributed.py); --cv and --freeze-blocks run on one process only."""
    progress = config.run.progress
    if config.model.mode == "linear-probe":
        return train_linear_probe(model, spec, data, config.optim, run_dir, resume, progress=progress,
                                  feature_precision=config.model.feature_precision, here=here)
    if config.model.freeze_blocks:
        from mobilemed.training.prefix_finetune import train_cached_prefix

        return train_cached_prefix(model, spec, data, config.optim, run_dir, resume, progress=progress,
                                   freeze_blocks=config.model.freeze_blocks, views=config.optim.prefix_views)
    return train_network(model, spec, data, config.optim, run_dir, resume, progress=progress,
                         finetune=config.model.mode == "finetune", augment=config.uses_augmentation, here=here)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_image_size(table: ImageTable) -> int:
    """224 px for image files; MedMNIST's 28 px images are upsampled to 64, where MobileNet's 32x
    downsampling still leaves a 2x2 map (at 28 px it would be 1x1)."""
    if table.images is not None:
        return max(64, table.images.shape[1])
    return 224


def make_spec(config: TrainConfig, table: ImageTable, *, in_chans: int, image_size: int) -> ModelSpec:
    mean, std = (GRAY_MEAN, GRAY_STD) if in_chans == 1 else (IMAGENET_MEAN, IMAGENET_STD)
    return ModelSpec(arch=config.model.arch, class_names=list(table.class_names), task=table.task,
                     image_size=image_size, in_chans=in_chans, mean=mean, std=std, dropout=config.model.dropout,
                     tta=config.model.tta, dicom_voi=config.data_options.use_voi)


def backbone_state(config: ModelChoice) -> dict | None:
    """ImageNet (or the user's) weights for the torchvision model, or None to train from scratch."""
    if config.mode == "scratch" or config.weights == "none":
        if config.mode == "linear-probe":
            raise MobilemedError("a linear probe of a random backbone learns nothing useful; "
                                 "use --weights imagenet or PATH, or --mode scratch")
        return None
    if config.weights == "imagenet":
        return load_imagenet_state(config.arch)
    return load_state_dict_file(config.weights)


def _write_run_start(run_dir: Path, config: TrainConfig, spec: ModelSpec, table: ImageTable,
                     here: Dist = Dist()) -> None:
    run_folder.write_config(run_dir, config.to_dict(), spec.to_dict())
    run_folder.write_split(run_dir, table)
    run_folder.write_versions(run_dir, config.optim.seed, distributed=here.record())
    counts = {s: int((table.splits == s).sum()) for s in ("train", "val", "test")}
    log.info("run folder %s; %s; task %s; classes %s", run_dir, counts, spec.task, spec.class_names)
