"""The pieces the training story is told with: losses, optimizers, one epoch, predictions."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mobilemed.data.transforms import Augmentation, to_model_input
from mobilemed.spec import ModelSpec
from mobilemed.training.distributed import batch_rows, rank_generator


def make_loss(task: str, train_labels: np.ndarray, weighting: str, *, smoothing: float = 0.0) -> nn.Module:
    """BCE-with-logits for binary and multi-label, cross-entropy for multi-class; "balanced"
    weighting scales positives by negatives/positives (per finding) or classes by inverse frequency.
    smoothing: label smoothing, the targets pulled from {0, 1} towards uniform by this fraction."""
    balanced = weighting == "balanced"
    if task == "multiclass":
        counts = np.bincount(train_labels.astype(np.int64), minlength=int(train_labels.max()) + 1)
        weight = counts.sum() / (len(counts) * np.maximum(counts, 1)) if balanced else None
        return nn.CrossEntropyLoss(weight=None if weight is None else torch.tensor(weight, dtype=torch.float32),
                                   label_smoothing=smoothing)
    pos_weight = _positive_weights(train_labels)
    return SmoothedBCE(smoothing, pos_weight=torch.tensor(pos_weight, dtype=torch.float32) if balanced else None)


def _positive_weights(train_labels: np.ndarray) -> np.ndarray:
    """negatives / positives per binary output, capped to [0.1, 50]."""
    positives = train_labels.reshape(len(train_labels), -1).sum(axis=0)
    pos_weight = (len(train_labels) - positives) / np.maximum(positives, 1)
    # Rare findings would get weights in the hundreds; capping keeps the gradients sane.
    return np.clip(pos_weight, 0.1, 50.0)


def neutral_logits(task: str, train_labels: np.ndarray, weighting: str, *, smoothing: float = 0.0) -> list[float]:
    """Per binary output, the logit make_loss's minimiser gives an image that looks equally like both classes
    (likelihood ratio 1): where the loss itself puts the threshold that maximises Youden's J (balanced
    accuracy) on data like the training split. [] for multi-class (argmax needs no threshold).

    BCE with positive weight w on targets y (1 - s) + s / 2 is minimised at odds w m / (1 - m), m the mean target,
    which is prevalence (1 - s) + s / 2 where the likelihood ratio is 1. Class-balanced weights (w = negatives /
    positives) put it at logit ~0 (p = 0.5; exactly 0 without smoothing or the cap); unweighted, at the
    training prevalence (evaluation/thresholds.py: the youden rule prefers it within its plateau)."""
    if task == "multiclass":
        return []
    labels = train_labels.reshape(len(train_labels), -1)
    prevalence = labels.mean(axis=0)
    weight = _positive_weights(train_labels) if weighting == "balanced" else np.ones(labels.shape[1])
    target = np.clip(prevalence * (1 - smoothing) + smoothing / 2, 1e-6, 1 - 1e-6)
    return [float(z) for z in np.log(weight * target / (1 - target))]


class SmoothedBCE(nn.BCEWithLogitsLoss):
    """BCE-with-logits on targets y (1 - s) + s / 2: each output is a two-class problem, smoothed as
    CrossEntropyLoss(label_smoothing=s) smooths two classes. s = 0 is plain BCEWithLogitsLoss."""

    def __init__(self, smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits, target * (1 - self.smoothing) + self.smoothing / 2)


def loss_targets(labels: np.ndarray, task: str) -> torch.Tensor:
    """Labels in the shape and dtype the loss expects: (B, 1) / (B,) long / (B, K) float."""
    if task == "binary":
        return torch.as_tensor(labels, dtype=torch.float32).view(-1, 1)
    if task == "multiclass":
        return torch.as_tensor(labels, dtype=torch.long)
    return torch.as_tensor(labels, dtype=torch.float32)


def build_optimizer(params, *, name: str, lr: float, weight_decay: float):
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay if name == "adamw" else 0.0)


def build_scheduler(optimizer, *, name: str, epochs: int, steps_per_epoch: int):
    """Stepped once per batch. cosine: linear warm-up over the first 3% of steps, then cosine to 0."""
    total = max(1, epochs * steps_per_epoch)
    if name == "onecycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total)
    if name == "cosine":
        warmup = max(1, int(0.03 * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def image_batches(images: np.ndarray, labels: np.ndarray, spec: ModelSpec, *, batch_size: int,
                  generator: torch.Generator, augment: bool, size: int | None = None,
                  shard: slice | None = None, augmentation: Augmentation = Augmentation()):
    """Shuffled (x (B, C, S, S), y) batches from cached uint8 pixels; no image is decoded again. size: a
    smaller S for progressive resizing (the early epochs of a fine-tune), else spec.image_size.
    shard: this process's rows of each global batch (training/distributed.py), None for all of them."""
    order = torch.randperm(len(images), generator=generator).numpy()
    generator = rank_generator(generator, shard)
    for rows in batch_rows(order, batch_size, shard):
        index = np.sort(rows)  # sorted reads are kinder to a memory map
        x = to_model_input(np.asarray(images[index]), spec)
        if size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if augment:
            x = augmentation(x, generator)
        yield x.contiguous(memory_format=torch.channels_last), loss_targets(labels[index], spec.task)


def feature_batches(features: torch.Tensor, labels: np.ndarray, task: str, *, batch_size: int,
                    generator: torch.Generator, shard: slice | None = None):
    order = torch.randperm(len(features), generator=generator)
    for index in batch_rows(order, batch_size, shard):
        yield features[index], loss_targets(labels[index.numpy()], task)


def train_one_epoch(module: nn.Module, batches, loss_fn, optimizer, scheduler, *, total: int,
                    ema=None, desc: str = "train", progress: bool = True, autocast=contextlib.nullcontext,
                    scaler=None) -> float:
    """One pass over `batches`; returns the mean training loss. autocast and scaler: CUDA mixed precision
    (training/distributed.py), PyTorch's documented autocast + GradScaler recipe."""
    module.train()
    running, seen = 0.0, 0
    bar = tqdm(batches, total=total, desc=desc, disable=not progress, leave=False, unit="batch")
    for x, y in bar:
        with autocast():
            loss = loss_fn(module(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(module)
        running += loss.item() * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{running / seen:.4f}")
    return running / max(seen, 1)
