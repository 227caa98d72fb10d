"""fit(config): the training story, top to bottom.

load data -> audit the split -> decode once -> build the model -> train (linear probe on cached
features, or the whole network) with early stopping on validation AUROC -> choose the operating
point and temperature on validation -> evaluate test once -> write the run folder and report.
"""
from __future__ import annotations

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
from mobilemed.evaluation.thresholds import _check_rule as check_threshold_rule
from mobilemed.models import build_model, get_backbone
from mobilemed.spec import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from mobilemed.training import run_folder, run_guard
from mobilemed.training.config import TrainConfig
from mobilemed.training.finish import finish_run
from mobilemed.training.leakage import check_leakage
from mobilemed.training.resume import check_resume_config, resume_state
from mobilemed.training.strategies import train_linear_probe, train_network

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """Cached pixels and labels of one split."""

    images: np.ndarray
    labels: np.ndarray
    files: np.ndarray
    features: np.ndarray | None = None  # a linear probe's frozen features, once computed


def fit(config: TrainConfig) -> Path:
    """Train, evaluate and report; returns the run folder. Everything is checked (output folder, resume
    compatibility, data, weights) before the run folder is touched; see training/run_guard.py."""
    seed_everything(config.seed)
    run_dir = Path(config.run_dir) if config.run_dir else run_folder.default_run_dir(config.data, config.mode)
    run_guard.check_out_dir(run_dir, resume=config.resume, overwrite=config.overwrite)
    if config.resume:
        check_resume_config(run_dir, config)
    get_backbone(config.arch)  # an unknown architecture fails now, not after decoding every image
    check_threshold_rule(config.threshold_rule, config.threshold_target)  # not only after training
    weights = backbone_state(config)
    table = load_table(config.data, config.data_options)
    check_leakage(table, strict=config.strict)
    image_size = config.image_size or default_image_size(table)
    images, keep = decoded_images(table, image_size, skip_bad=config.skip_bad, progress=config.progress,
                                  use_voi=config.data_options.use_voi)
    table = table.subset(keep)
    spec = make_spec(config, table, in_chans=1 if images.ndim == 3 else 3, image_size=image_size)
    pixels = take_splits(images, table.splits)  # in memory; the memory-mapped cache's pages are let go
    data = {s: SplitData(pixels[s], table.labels[table.splits == s], table.paths[table.splits == s])
            for s in ("train", "val", "test")}
    model = build_model(spec, weights)
    resume = resume_state(run_dir, spec, table) if config.resume else None
    with run_guard.guarded_run(run_dir, overwrite=config.overwrite):  # locked; "complete" only on success
        _write_run_start(run_dir, config, spec, table)
        _train_and_finish(run_dir, model, spec, data, config, resume)
    return run_dir


def _train_and_finish(run_dir: Path, model, spec: ModelSpec, data: dict, config: TrainConfig, resume) -> None:
    started = time.perf_counter()
    train = train_linear_probe if config.mode == "linear-probe" else train_network
    best_state, history = train(model, spec, data, config, run_dir, resume)
    model.load_state_dict(best_state)
    log.info("training took %.1f s", time.perf_counter() - started)
    logits = probe_logits(model, spec, data, config) if config.mode == "linear-probe" else None
    finish_run(run_dir, model, spec, data, config, history, seconds=time.perf_counter() - started, logits=logits)


def probe_logits(model, spec: ModelSpec, data: dict, config: TrainConfig) -> dict:
    """Val/test logits of a linear probe from the features it was trained with: no second pass."""
    with torch.inference_mode():
        return {s: model.head.eval()(torch.from_numpy(d.features)).numpy()
                for s, d in data.items() if s != "train" and len(d.images)}


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
    return ModelSpec(arch=config.arch, class_names=list(table.class_names), task=table.task,
                     image_size=image_size, in_chans=in_chans, mean=mean, std=std, dropout=config.dropout,
                     tta=config.tta, dicom_voi=config.data_options.use_voi)


def backbone_state(config: TrainConfig) -> dict | None:
    """ImageNet (or the user's) weights for the torchvision model, or None to train from scratch."""
    if config.mode == "scratch" or config.weights == "none":
        if config.mode == "linear-probe":
            raise MobilemedError("a linear probe of a random backbone learns nothing useful; "
                                 "use --weights imagenet or PATH, or --mode scratch")
        return None
    if config.weights == "imagenet":
        return load_imagenet_state(config.arch)
    return load_state_dict_file(config.weights)


def _write_run_start(run_dir: Path, config: TrainConfig, spec: ModelSpec, table: ImageTable) -> None:
    run_folder.write_config(run_dir, config.to_dict(), spec.to_dict())
    run_folder.write_split(run_dir, table)
    run_folder.write_versions(run_dir, config.seed)
    counts = {s: int((table.splits == s).sum()) for s in ("train", "val", "test")}
    log.info("run folder %s; %s; task %s; classes %s", run_dir, counts, spec.task, spec.class_names)
