"""Fine-tuning on cached frozen blocks (`--mode finetune --freeze-blocks k`): fast 224-px fine-tuning on a CPU.

The first k blocks of backbone.features stay frozen in eval mode; their output for every training and
validation image is computed once (training/prefix_cache.py) and only the later blocks and the head train on
it, through the same epoch loop as every other way of training (strategies.EpochLoop) with a CachedPrefixPlan.
For MobileNetV2 at 224 px most of the compute sits in the early, high-resolution blocks, so an epoch costs a
fraction of a full fine-tune's (bench/bench_finetune.py measures it).

PrefixTail shares the model's modules, it does not copy them: training the tail trains the model, and what
is saved (best.pt, last.pt) is the ordinary full model, frozen prefix included, which predict, evaluate and
export use unchanged. With --head-warmup-epochs N the first N epochs train the head alone on the frozen
network (LP-FT, Kumar et al. 2022: fit the head first, so the random head's gradients do not distort the
pretrained features; then fine-tune gently, the backbone at lr x --backbone-lr-scale).

Validation during training (which picks the best epoch) is scored on the cached maps without test-time
augmentation; thresholds and temperature are chosen afterwards on the full model's validation logits (tta
as configured), exactly as for any other run.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilemed import run_files
from mobilemed.spec import ModelSpec
from mobilemed.training.config import OptimConfig
from mobilemed.training.loop import build_optimizer, loss_targets
from mobilemed.training.prefix_cache import prefix_maps, take_rows
from mobilemed.training.strategies import EpochLoop, Plan, Trained

log = logging.getLogger(__name__)
VAL_BATCH = 256


class PrefixTail(nn.Module):
    """The model above its first `block` feature blocks: (B, C_k, h, w) cached maps -> (B, num_outputs)
    logits. It holds the model itself (shared, not copied), so its state_dict keys are "model.<model key>"."""

    def __init__(self, model: nn.Module, block: int):
        super().__init__()
        self.model, self.block = model, block
        for p in self.prefix.parameters():
            p.requires_grad_(False)

    @property
    def prefix(self) -> nn.Module:
        return self.model.backbone.features[:self.block]

    def trainable_backbone_parameters(self) -> list:
        """The backbone's parameters after the prefix: the optimiser never sees the frozen blocks."""
        frozen = {id(p) for p in self.prefix.parameters()}
        return [p for p in self.model.backbone.parameters() if id(p) not in frozen]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.backbone.forward_from(z, self.block))

    def train(self, mode: bool = True) -> "PrefixTail":
        super().train(mode)
        self.prefix.eval()  # never run in training, but a frozen block is in eval mode by contract
        for p in self.prefix.parameters():  # the head warm-up's unfreeze must not unfreeze the prefix
            p.requires_grad_(False)
        return self

    def model_state(self) -> dict:
        """The full model's state_dict (strategies._model_state asks for it; this tail may be an EMA copy)."""
        return copy.deepcopy(self.model.state_dict())


@dataclass
class CachedPrefixPlan(Plan):
    """The tail learns on cached prefix maps: one of the V cached views per image and epoch."""

    train_maps: np.ndarray  # (V, N, C, h, w) float16, maybe memory-mapped
    val_maps: np.ndarray    # (1, M, C, h, w) float16
    task: str

    def batches(self, generator: torch.Generator, shard: slice | None = None):
        if shard is not None:  # training/distributed.check_distributed refuses --freeze-blocks on several processes
            raise RuntimeError("the cached-prefix fine-tune runs on one process")
        views, n = self.train_maps.shape[:2]
        order = torch.randperm(n, generator=generator).numpy()
        view = torch.randint(views, (n,), generator=generator).numpy()
        for start in range(0, n, self.batch_size):
            index = np.sort(order[start:start + self.batch_size])  # sorted reads are kinder to a memory map
            yield _float_maps(self.train_maps[view[index], index]), loss_targets(self.train_labels[index], self.task)

    @torch.inference_mode()
    def val_logits(self, module: nn.Module) -> np.ndarray:
        module.eval()
        maps = self.val_maps[0]
        return np.concatenate([module(_float_maps(maps[s:s + VAL_BATCH])).numpy()
                               for s in range(0, len(maps), VAL_BATCH)]).astype(np.float32)


def _float_maps(maps: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(maps, dtype=np.float32)).contiguous(memory_format=torch.channels_last)


def train_cached_prefix(model, spec: ModelSpec, data: dict, optim: OptimConfig, run_dir: Path, resume, *,
                        freeze_blocks: int, views: int, progress: bool = True) -> Trained:
    """Fine-tune every block after the first `freeze_blocks` and the head on cached prefix maps (`views` per
    training image). The model ends up holding the best weights; run_dir gets prefix_cache.json."""
    model = model.to(memory_format=torch.channels_last)
    tail = PrefixTail(model, freeze_blocks)
    train, val = data["train"], data["val"]
    tic = time.perf_counter()
    train_maps, val_maps = train.prefix_maps, val.prefix_maps  # shared by the folds of --cv or members of --ensemble
    shared = train_maps is not None  # then the prefix pass happened before, once for all networks
    if train_maps is None:
        train_maps = prefix_maps(tail.prefix, train.images, spec, views=views, seed=optim.seed, progress=progress,
                                 augmentation=optim.augmentation)
    if val_maps is None:
        val_maps = prefix_maps(tail.prefix, val.images, spec, progress=progress)
    run_files.write_json(run_dir / "prefix_cache.json", {
        "freeze_blocks": freeze_blocks, "views": views, "map_shape": list(train_maps.shape[2:]),
        "dtype": "float16", "megabytes": round((train_maps.nbytes + val_maps.nbytes) / 2**20, 1),
        "memory_mapped": isinstance(train_maps, np.memmap), "shared_prefix_pass": shared,
        "seconds": round(time.perf_counter() - tic, 1)})
    groups = [{"params": model.head.parameters(), "lr": optim.lr},
              {"params": tail.trainable_backbone_parameters(), "lr": optim.lr * optim.backbone_lr_scale}]
    optimizer = build_optimizer(groups, name=optim.optimizer, lr=optim.lr, weight_decay=optim.weight_decay)
    plan = CachedPrefixPlan(tail, train.labels, optim.batch_size, train_maps, val_maps, spec.task)
    loop = EpochLoop(model, plan, optimizer, spec, val.labels, optim, run_dir, progress=progress, finetune=True)
    best_state, history = loop.run(resume)
    model.load_state_dict(best_state)
    return Trained(best_state, history)


class SharedPrefixMaps:
    """--cv or --ensemble with --freeze-blocks: the frozen prefix's maps of every train+val image, computed once
    for all K folds (and the refit) or N members instead of once per network, which cost K (N) prefix passes.

    The frozen blocks hold the pretrained weights in every fold, so their output does not depend on the fold:
    a fold's training maps are rows of the pooled --prefix-views augmented views (drawn from the run's seed over the
    pooled images, so a resumed fold gets the very same views), its held-out maps rows of the pooled plain view.
    A fold whose frozen blocks differ from the first fold's (randomly initialised ones: nothing pretrained to
    share) computes its own maps as before."""

    def __init__(self, images: np.ndarray, spec: ModelSpec, optim: OptimConfig, *, freeze_blocks: int,
                 progress: bool = True):
        self.images, self.spec, self.optim, self.progress = images, spec, optim, progress
        self.freeze_blocks = freeze_blocks
        self.state, self.train, self.plain = None, None, None
        self.seconds = 0.0  # the one shared pass's time (prefix_cache.json of each network says 0: not its own)

    def rows(self, model: nn.Module, train_rows: np.ndarray, val_rows: np.ndarray):
        """(training maps, validation maps) of these pooled rows for `model`, or (None, None) when its frozen
        blocks are not the ones the pooled maps came from."""
        prefix = model.backbone.features[:self.freeze_blocks]
        state = prefix.state_dict()
        if self.state is None:
            self._compute(prefix, state)
        elif state.keys() != self.state.keys() or not all(torch.equal(state[k], self.state[k]) for k in state):
            log.info("these frozen blocks differ from the first fold's: computing their own prefix maps")
            return None, None
        return take_rows(self.train, train_rows), take_rows(self.plain, val_rows)

    def _compute(self, prefix: nn.Module, state: dict) -> None:
        tic = time.perf_counter()
        self.state = {k: v.detach().clone() for k, v in state.items()}
        self.train = prefix_maps(prefix.eval(), self.images, self.spec, views=self.optim.prefix_views,
                                 seed=self.optim.seed, progress=self.progress, augmentation=self.optim.augmentation)
        self.plain = prefix_maps(prefix, self.images, self.spec, progress=self.progress)
        self.seconds = time.perf_counter() - tic
