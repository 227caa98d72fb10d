"""The two ways to train: a linear probe on cached frozen features, or the whole network.

Both run the same epoch loop (EpochLoop.run: train, validate, keep the best, save last.pt, stop when stale);
what differs between them is the Plan (ProbePlan, NetworkPlan): which module learns, where its batches come
from and how its validation logits are computed."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilemed import run_files
from mobilemed.batch_predict import predict_logits
from mobilemed.checkpoint import save_checkpoint
from mobilemed.data.transforms import Augmentation
from mobilemed.spec import ModelSpec
from mobilemed.training.config import OptimConfig
from mobilemed.training.distributed import Dist, sharded_logits, sharded_probe_features
from mobilemed.training.loop import (build_optimizer, build_scheduler, feature_batches, image_batches,
                                     loss_targets, make_loss, train_one_epoch)
from mobilemed.training.scoring import validation_metrics

log = logging.getLogger(__name__)


def _recorded_precision(run_dir: Path) -> str | None:
    """The precision auto chose in the run being resumed: auto's choice depends on timings of this machine,
    and a resumed run must train on the same features to end where the uninterrupted run would."""
    chosen = (run_files.read_json(Path(run_dir) / run_files.FEATURE_PASS) or {}).get("chosen")
    return chosen if chosen in ("fp32", "int8") else None


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


@dataclass
class Trained:
    """What training returns: the best full-model weights, one history row per epoch, and the val/test
    logits when they came for free (a linear probe has them from its cached features)."""

    best_state: dict
    history: list
    logits: dict | None = None


@dataclass
class Plan:
    """What one way of training gives the epoch loop: the module that learns, its training labels and
    batches (batches()), and its validation logits (val_logits())."""

    trained: nn.Module
    train_labels: np.ndarray
    batch_size: int
    epoch = 0  # not a field: the epoch loop sets it before asking for an epoch's batches

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return -(-len(self.train_labels) // self.batch_size)


@dataclass
class ProbePlan(Plan):
    """A linear probe: the head learns on frozen features computed once per split."""

    features: dict  # split -> (N, F) tensor
    task: str

    def batches(self, generator: torch.Generator, shard: slice | None = None):
        return feature_batches(self.features["train"], self.train_labels, self.task, batch_size=self.batch_size,
                               generator=generator, shard=shard)

    def val_logits(self, module: nn.Module, split: str = "val") -> np.ndarray:
        """Every rank holds every feature (gathered), so every rank computes the same logits."""
        device = next(module.parameters()).device
        with torch.inference_mode():
            return module.eval()(self.features[split].to(device)).float().cpu().numpy()


@dataclass
class NetworkPlan(Plan):
    """Fine-tuning or training from scratch: the whole network learns on (augmented) cached pixels."""

    train_images: np.ndarray
    val_images: np.ndarray
    spec: ModelSpec
    augment: bool
    low_res: tuple[int, int] | None = None  # progressive resizing: (size in px, epochs at it), then full size
    here: Dist = Dist()  # several processes: each predicts a slice of validation, gathered on all
    augmentation: Augmentation = Augmentation()  # what `augment` applies (data/transforms.py)

    def batches(self, generator: torch.Generator, shard: slice | None = None):
        size = self.low_res[0] if self.low_res and self.epoch < self.low_res[1] else None
        return image_batches(self.train_images, self.train_labels, self.spec, batch_size=self.batch_size,
                             generator=generator, augment=self.augment, size=size, shard=shard,
                             augmentation=self.augmentation)

    def val_logits(self, module: nn.Module) -> np.ndarray:
        return sharded_logits(self.here, lambda images: predict_logits(module, images, self.spec, tta=self.spec.tta),
                              self.val_images)


def train_linear_probe(model, spec: ModelSpec, data: dict, optim: OptimConfig, run_dir: Path, resume, *,
                       progress: bool = True, feature_precision: str = "fp32", here: Dist = Dist()) -> Trained:
    """The tutorial's method done right: frozen eval-mode backbone, features computed once, head trained
    on them; the val/test logits of the best head come from the same features. data: split -> SplitData
    (each gets .features, which the OOD detector reuses); resume: last.pt's payload or None.
    feature_precision: see training/feature_precision.py; here: this process's share (training/distributed.py).
    The model ends up holding the best weights (on the CPU)."""
    model.freeze_backbone()
    resumed_choice = _recorded_precision(run_dir) if resume is not None and feature_precision == "auto" else None
    arrays, record = sharded_probe_features(here, model.backbone, spec, data,
                                            precision=resumed_choice or feature_precision, seed=optim.seed,
                                            progress=progress, augmentation=optim.augmentation)
    if resumed_choice:
        record.update(requested="auto", reason=f"resumed: {resumed_choice}, as the interrupted run chose")
    if here.is_main:
        run_files.write_json(run_dir / run_files.FEATURE_PASS, record)
    for split, part in data.items():
        part.features = arrays.get(split)
    features = {s: torch.from_numpy(f) for s, f in arrays.items()}
    plan = ProbePlan(model.head.to(here.device), data["train"].labels, optim.batch_size, features, spec.task)
    optimizer = build_optimizer(model.head.parameters(), name=optim.optimizer, lr=optim.lr,
                                weight_decay=optim.weight_decay)
    loop = EpochLoop(model, plan, optimizer, spec, data["val"].labels, optim, run_dir, progress=progress, here=here)
    best_state, history = loop.run(resume)
    model.load_state_dict(best_state)
    logits = {s: plan.val_logits(model.head, s) for s in features if s != "train"}
    model.cpu()
    return Trained(best_state, history, logits)


def train_network(model, spec: ModelSpec, data: dict, optim: OptimConfig, run_dir: Path, resume, *,
                  finetune: bool, augment: bool, progress: bool = True, here: Dist = Dist()) -> Trained:
    """Fine-tune (backbone at a lower learning rate, optional head-only warm-up) or train from scratch
    (finetune False). The model ends up holding the best weights (on the CPU)."""
    model = model.to(here.device, memory_format=torch.channels_last)
    groups = [{"params": model.head.parameters(), "lr": optim.lr},
              {"params": model.backbone.parameters(), "lr": optim.lr * (optim.backbone_lr_scale if finetune else 1)}]
    optimizer = build_optimizer(groups, name=optim.optimizer, lr=optim.lr, weight_decay=optim.weight_decay)
    train, val = data["train"], data["val"]
    low_res = (optim.low_res_size, optim.low_res_epochs) if optim.low_res_size else None
    plan = NetworkPlan(model, train.labels, optim.batch_size, train.images, val.images, spec, augment, low_res,
                       here, optim.augmentation)
    loop = EpochLoop(model, plan, optimizer, spec, data["val"].labels, optim, run_dir, progress=progress,
                     finetune=finetune, here=here)
    best_state, history = loop.run(resume)
    model.load_state_dict(best_state)
    model.cpu()
    return Trained(best_state, history)


@dataclass
class EpochLoop:
    """The shared epoch loop: train, validate, keep the best, save last.pt, stop when stale."""

    model: nn.Module  # the full model, saved in best.pt / last.pt
    plan: Plan
    optimizer: torch.optim.Optimizer
    spec: ModelSpec
    val_labels: np.ndarray
    optim: OptimConfig
    run_dir: Path
    progress: bool = True
    finetune: bool = False  # head-only warm-up epochs protect the pretrained features from a random head
    here: Dist = Dist()  # this process's rank, device and precision (training/distributed.py)
    # set by run(): the loss, one row per epoch, early stopping and the best weights so far
    loss_fn: nn.Module | None = field(default=None, init=False)
    history: list = field(default_factory=list, init=False)
    stopper: EarlyStopping | None = field(default=None, init=False)
    best_state: dict | None = field(default=None, init=False)

    def run(self, resume: dict | None) -> tuple[dict, list]:
        """(best full-model state_dict, history); `resume` is last.pt's payload to continue from."""
        optim, trained = self.optim, self.plan.trained
        scheduler = build_scheduler(self.optimizer, name=optim.scheduler, epochs=optim.epochs,
                                    steps_per_epoch=self.plan.steps)
        ema = _make_ema(trained, optim.ema_decay)
        self.loss_fn = make_loss(self.spec.task, self.plan.train_labels, optim.class_weighting,
                                 smoothing=optim.label_smoothing)
        self.history, start, self.stopper, self.best_state, stopped = [], 0, EarlyStopping(optim.patience), None, False
        generator, scaler = torch.Generator(), self.here.grad_scaler()
        if resume is not None:
            start, self.history, self.stopper, self.best_state, stopped = _restore(
                resume, self.model, self.optimizer, scheduler, ema, optim, scaler)
        for epoch in range(start, start if stopped else optim.epochs):
            _seed_epoch(generator, optim.seed, epoch)
            self.here.seed_rank(generator)
            if self.finetune:
                self.model.freeze_backbone(epoch < optim.head_warmup_epochs)
            stopped = self._epoch(epoch, generator, scheduler, ema, scaler)
            if self.here.is_main:
                _save_last(self.run_dir, self.model, self.spec, self.optimizer, scheduler, ema, epoch, self.history,
                           self.stopper, self.best_state, stopped, scaler)
            if stopped:
                log.info("early stop: no validation AUROC gain for %d epochs", optim.patience)
                break
        return self.best_state, self.history

    def _epoch(self, epoch: int, generator, scheduler, ema, scaler=None) -> bool:
        """Train one epoch, validate, keep the best weights; True when early stopping says stop."""
        tic, trained, here = time.perf_counter(), self.plan.trained, self.here
        self.plan.epoch = epoch
        batches = here.to_device(self.plan.batches(generator, here.shard if here.active else None))
        train_loss = here.mean(train_one_epoch(
            here.wrap(trained), batches, here.moved(self.loss_fn), self.optimizer, scheduler, total=self.plan.steps,
            ema=ema, desc=f"epoch {epoch + 1}/{self.optim.epochs}", progress=self.progress, autocast=here.autocast,
            scaler=scaler))
        evaluated = ema.module if ema is not None else trained
        logits = self.plan.val_logits(evaluated)
        val_loss = float(self.loss_fn(torch.from_numpy(logits), loss_targets(self.val_labels, self.spec.task)))
        score = validation_metrics(self.val_labels, logits, self.spec.task)
        self.history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, **score,
                             "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tic})
        log.info("epoch %d: train loss %.4f, val loss %.4f, val AUROC %.4f", epoch + 1, train_loss, val_loss,
                 score["val_auroc"])
        if self.stopper.improved(score["val_auroc"], epoch) or self.best_state is None:
            self.best_state = _model_state(self.model, trained, evaluated)
            if here.is_main:
                save_checkpoint(self.run_dir / run_files.BEST, _with_state(self.model, self.best_state), self.spec,
                                epoch=epoch + 1, val_auroc=score["val_auroc"], complete=False)
        return self.stopper.stale(epoch)


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
    if hasattr(evaluated, "model_state"):  # a tail on cached frozen blocks holds the whole model (prefix_finetune)
        return evaluated.model_state()
    state = copy.deepcopy(model.state_dict())  # linear probe: the evaluated module is the head
    state.update({f"head.{k}": v.clone() for k, v in evaluated.state_dict().items()})
    return state


def _with_state(model: nn.Module, state: dict) -> nn.Module:
    shadow = copy.deepcopy(model)
    shadow.load_state_dict(state)
    return shadow


def _save_last(run_dir, model, spec, optimizer, scheduler, ema, epoch, history, stopper, best_state, stopped,
               scaler=None):
    """Everything a resume needs to continue exactly where this epoch ended, early stop included (and fp16's
    loss scale: a resume that started again from the initial scale would skip steps while it backs off)."""
    save_checkpoint(run_dir / run_files.LAST, model, spec, epoch=epoch + 1, optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), ema=None if ema is None else ema.state_dict(),
                    scaler=None if scaler is None else scaler.state_dict(),
                    history=history, best_score=stopper.best, best_epoch=stopper.best_epoch, best_state=best_state,
                    stopped=stopped, complete=False)


def _restore(payload: dict, model, optimizer, scheduler, ema, optim: OptimConfig, scaler=None):
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if ema is not None and payload.get("ema") is not None:
        ema.load_state_dict(payload["ema"])
    if scaler is not None and payload.get("scaler"):  # absent: saved without fp16 (or before it was kept)
        scaler.load_state_dict(payload["scaler"])
    stopper = EarlyStopping(optim.patience, payload["best_score"], payload["best_epoch"])
    stopped = bool(payload.get("stopped", False))
    log.info("resuming after epoch %d%s", payload["epoch"], " (it had stopped early)" if stopped else "")
    return payload["epoch"], list(payload["history"]), stopper, payload["best_state"], stopped
