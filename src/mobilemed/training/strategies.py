"""The two ways to train: a linear probe on cached frozen features, or the whole network."""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilemed.batch_predict import predict_logits
from mobilemed.checkpoint import save_checkpoint
from mobilemed.spec import ModelSpec
from mobilemed.training import run_folder
from mobilemed.training.config import TrainConfig
from mobilemed.training.feature_precision import probe_features
from mobilemed.training.loop import (build_optimizer, build_scheduler, feature_batches, image_batches,
                                     loss_targets, make_loss, train_one_epoch)
from mobilemed.training.scoring import validation_metrics

log = logging.getLogger(__name__)


class EarlyStopping:
    """Tracks the best validation AUROC; stale after `patience` epochs without improvement."""

    def __init__(self, patience: int, best: float = -np.inf, best_epoch: int = -1):
        self.patience, self.best, self.best_epoch = patience, best, best_epoch

    def improved(self, score: float, epoch: int) -> bool:
        if score > self.best + 1e-6:
            self.best, self.best_epoch = score, epoch
            return True
        return False

    def stale(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.best_epoch >= self.patience


def train_linear_probe(model, spec: ModelSpec, data: dict, config: TrainConfig, run_dir: Path, resume):
    """The tutorial's method done right: frozen eval-mode backbone, features computed once, head trained
    on them. Returns (best full-model state_dict, history)."""
    model.freeze_backbone()
    arrays, record = probe_features(model.backbone, spec, data, precision=config.feature_precision,
                                    seed=config.seed, progress=config.progress)
    run_folder.write_json(run_dir / "feature_pass.json", record)
    for split, part in data.items():  # the head's evaluation and the OOD detector reuse them
        part.features = arrays.get(split)
    features = {s: torch.from_numpy(f) for s, f in arrays.items()}
    head = model.head
    optimizer = build_optimizer(head.parameters(), name=config.optimizer, lr=config.lr,
                                weight_decay=config.weight_decay)
    steps = -(-len(features["train"]) // config.batch_size)

    def batches(generator):
        return feature_batches(features["train"], data["train"].labels, spec.task,
                               batch_size=config.batch_size, generator=generator)

    def val_logits(module):
        with torch.inference_mode():
            return module.eval()(features["val"]).numpy()

    return _epochs(model, head, spec, data, config, run_dir, resume, optimizer, steps, batches, val_logits)


def train_network(model, spec: ModelSpec, data: dict, config: TrainConfig, run_dir: Path, resume):
    """Fine-tune (backbone at a lower learning rate, optional head-only warm-up) or train from scratch."""
    model = model.to(memory_format=torch.channels_last)
    backbone_lr = config.lr * (config.backbone_lr_scale if config.mode == "finetune" else 1.0)
    groups = [{"params": model.head.parameters(), "lr": config.lr},
              {"params": model.backbone.parameters(), "lr": backbone_lr}]
    optimizer = build_optimizer(groups, name=config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
    steps = -(-len(data["train"].images) // config.batch_size)

    def batches(generator):
        return image_batches(data["train"].images, data["train"].labels, spec, batch_size=config.batch_size,
                             generator=generator, augment=config.uses_augmentation)

    def val_logits(module):
        return predict_logits(module, data["val"].images, spec, tta=spec.tta)

    return _epochs(model, model, spec, data, config, run_dir, resume, optimizer, steps, batches, val_logits)


def _epochs(model, trained: nn.Module, spec, data, config, run_dir, resume, optimizer, steps, batches, val_logits):
    """The shared epoch loop: train, validate, keep the best, stop when stale."""
    scheduler = build_scheduler(optimizer, name=config.scheduler, epochs=config.epochs, steps_per_epoch=steps)
    ema = _make_ema(trained, config.ema_decay)
    loss_fn = make_loss(spec.task, data["train"].labels, config.class_weighting)
    history, start, stopper, best_state, stopped = [], 0, EarlyStopping(config.patience), None, False
    if resume is not None:
        start, history, stopper, best_state, stopped = _restore(resume, model, optimizer, scheduler, ema, config)
    generator = torch.Generator()
    for epoch in range(start, start if stopped else config.epochs):
        tic = time.perf_counter()
        _seed_epoch(generator, config.seed, epoch)
        if config.mode == "finetune":  # head-only warm-up protects the pretrained features from a random head
            model.freeze_backbone(epoch < config.head_warmup_epochs)
        train_loss = train_one_epoch(trained, batches(generator), loss_fn, optimizer, scheduler, total=steps,
                                     ema=ema, desc=f"epoch {epoch + 1}/{config.epochs}", progress=config.progress)
        evaluated = ema.module if ema is not None else trained
        logits = val_logits(evaluated)
        val_loss = float(loss_fn(torch.from_numpy(logits), loss_targets(data["val"].labels, spec.task)))
        score = validation_metrics(data["val"].labels, logits, spec.task)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, **score,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tic})
        log.info("epoch %d: train loss %.4f, val loss %.4f, val AUROC %.4f", epoch + 1, train_loss, val_loss,
                 score["val_auroc"])
        if stopper.improved(score["val_auroc"], epoch) or best_state is None:
            best_state = _model_state(model, trained, evaluated)
            save_checkpoint(run_dir / "best.pt", _with_state(model, best_state), spec, epoch=epoch + 1,
                            val_auroc=score["val_auroc"], complete=False)
        stopped = stopper.stale(epoch)
        _save_last(run_dir, model, spec, optimizer, scheduler, ema, epoch, history, stopper, best_state, stopped)
        if stopped:
            log.info("early stop: no validation AUROC gain for %d epochs", config.patience)
            break
    return best_state, history


def _seed_epoch(generator: torch.Generator, seed: int, epoch: int) -> None:
    """Each epoch's randomness (data order, augmentation, dropout) is a function of (seed, epoch) alone,
    so a run resumed after epoch k draws exactly what the uninterrupted run drew in epoch k + 1. The prime
    stride keeps (seed, epoch) pairs apart: seed 1's first epoch is not seed 0's second."""
    generator.manual_seed(seed * 100_003 + epoch)
    torch.manual_seed(seed * 100_003 + epoch)


def _make_ema(module: nn.Module, decay: float):
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _model_state(model: nn.Module, trained: nn.Module, evaluated: nn.Module) -> dict:
    """The full model's state_dict with the evaluated weights (EMA copy or the live ones)."""
    if evaluated is model:
        return copy.deepcopy(model.state_dict())
    if trained is model:  # EMA of the whole network
        return copy.deepcopy(evaluated.state_dict())
    state = copy.deepcopy(model.state_dict())  # linear probe: the evaluated module is the head
    state.update({f"head.{k}": v.clone() for k, v in evaluated.state_dict().items()})
    return state


def _with_state(model: nn.Module, state: dict) -> nn.Module:
    shadow = copy.deepcopy(model)
    shadow.load_state_dict(state)
    return shadow


def _save_last(run_dir, model, spec, optimizer, scheduler, ema, epoch, history, stopper, best_state, stopped):
    """Everything a resume needs to continue exactly where this epoch ended, early stop included."""
    save_checkpoint(run_dir / "last.pt", model, spec, epoch=epoch + 1, optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), ema=None if ema is None else ema.state_dict(),
                    history=history, best_score=stopper.best, best_epoch=stopper.best_epoch, best_state=best_state,
                    stopped=stopped, complete=False)


def _restore(payload: dict, model, optimizer, scheduler, ema, config):
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if ema is not None and payload.get("ema") is not None:
        ema.load_state_dict(payload["ema"])
    stopper = EarlyStopping(config.patience, payload["best_score"], payload["best_epoch"])
    stopped = bool(payload.get("stopped", False))
    log.info("resuming after epoch %d%s", payload["epoch"], " (it had stopped early)" if stopped else "")
    return payload["epoch"], list(payload["history"]), stopper, payload["best_state"], stopped
