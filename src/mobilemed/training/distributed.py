"""One run on many processes: torchrun and DistributedDataParallel around the single epoch loop.

`torchrun --nproc_per_node N -m mobilemed train ...` (or `mobilemed train ... --nproc N`) starts N copies of
the same command; each reads RANK / WORLD_SIZE / LOCAL_RANK from the environment and joins one process
group (gloo on CPU, NCCL on CUDA) with --dist-timeout. A single process (no torchrun) runs exactly as before.

How the work is split:
- Pixels: rank 0 of each machine (LOCAL_RANK 0) decodes the images into the memory-mapped cache while the
  others wait at a barrier, then every rank reads the cache. Why not let each rank decode only its shard:
  every epoch reshuffles the whole training split and deals each rank different images, so every rank needs
  every image; one decode per machine gives them all for the price of one. MedMNIST arrives decoded.
  Decode workers (DataLoader processes) would not help: images are decoded once per run into the cache,
  never per epoch, and an epoch's per-batch work (resize, normalise, augment a uint8 batch) is small next
  to the network's forward and backward passes.
- Training batches: every rank draws the same (seed, epoch) permutation, so --resume stays bit-exact, and
  each global batch of --batch-size rows is dealt round-robin (rows rank, rank + world, ...): the world
  computes the batches a single process would, and DDP averages the gradients. --batch-size is the global
  batch, so the learning rate needs no change with the world size.
- Validation: each rank predicts a contiguous slice, and the logits are gathered on every rank in order,
  so metrics, thresholds and early stopping are computed from the same numbers everywhere.
- Linear probe: each rank computes the frozen features of a contiguous slice of every split; they are
  gathered on every rank and the head trains under DDP.
- Writes: rank 0 alone takes the run lock and writes the run folder; checkpoints hold the unwrapped module
  (the single-process format). Other ranks log warnings only and show no progress bars.
- Errors: validation runs on every rank and the outcome is agreed (`agree`), so a refusal on one rank
  ends every rank with the same message naming it; a rank that dies or stops answering ends the others
  after at most --dist-timeout seconds (torchrun names the failed rank at once when it is on the same machine).

BatchNorm keeps per-rank batch statistics (DDP's default, as in torchvision's and timm's recipes):
SyncBatchNorm refuses CPU tensors in torch 2.14, and a CPU-only and a GPU run should compute the same thing.
With B rows per global batch and N ranks, each BN layer normalises over B/N rows, which is why a fine-tuned
network is close to, not equal to, the single-process one; a linear probe (no BatchNorm learns) matches.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mobilemed.data.transforms import Augmentation
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank of world_size, the device it computes on and its AMP dtype."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    amp: str = "off"
    backend: str | None = None   # None: a single process, no process group
    timeout: float = 1800.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> slice:
        """This rank's rows of a global batch: rank, rank + world, ..."""
        return slice(self.rank, None, self.world_size)

    def record(self) -> dict:
        """What the run folder records: world size, backend, device, mixed precision."""
        return {"world_size": self.world_size, "backend": self.backend or "none", "device": self.device,
                "amp": self.amp}

    def agree(self, fn, *args, main_only: bool = False, **kwargs):
        """fn(*args, **kwargs) on every rank (or on rank 0 only, whose result every rank then receives),
        then every rank learns whether any failed: a MobilemedError on one rank is raised on all of them,
        naming the rank, instead of leaving the others waiting at the next collective."""
        if not self.active:
            return fn(*args, **kwargs)
        result, error, message = None, None, None
        if self.is_main or not main_only:
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # every failure, so that no rank is left waiting for this one
                error, message = err, str(err) if isinstance(err, MobilemedError) else f"{type(err).__name__}: {err}"
        messages = [None] * self.world_size
        dist.all_gather_object(messages, message)
        if error is not None:
            raise error
        failed = [(rank, text) for rank, text in enumerate(messages) if text is not None]
        if failed:
            raise MobilemedError(f"process {failed[0][0]} of {self.world_size}: {failed[0][1]}")
        return self.broadcast(result) if main_only else result

    def local_first(self, fn, *args, **kwargs):
        """fn on the first rank of each machine, then on the others (e.g. decode into the machine's cache
        once, then read it); errors are agreed as in `agree`."""
        first = self.agree(fn if self.local_rank == 0 else _nothing, *args, **kwargs)
        later = self.agree(_nothing if self.local_rank == 0 else fn, *args, **kwargs)
        return first if self.local_rank == 0 else later

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a number over the ranks (e.g. the training loss each saw)."""
        if not self.active:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)  # NCCL reduces CUDA tensors only
        dist.all_reduce(total)
        return float(total) / self.world_size

    def gather_rows(self, array: np.ndarray | None) -> np.ndarray | None:
        """Concatenate every rank's rows in rank order (each rank holds a contiguous slice); empty or
        missing slices are skipped."""
        if not self.active:
            return array
        parts = [None] * self.world_size
        dist.all_gather_object(parts, array)
        parts = [p for p in parts if p is not None and len(p)]
        return np.concatenate(parts) if parts else array

    def rows(self, n: int) -> slice:
        """This rank's contiguous slice of n rows (sizes differ by at most one)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` under DDP (gradients averaged over the ranks), or itself for one process. Called once per
        epoch, after freezing or unfreezing, because DDP registers only the parameters that need a gradient."""
        if not self.active or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def seed_rank(self, generator: torch.Generator) -> None:
        """Each rank's own dropout draws, from the epoch's seed and the rank (see rank_generator)."""
        if self.active:
            torch.manual_seed(rank_generator(generator, self.shard).initial_seed())

    def moved(self, module: nn.Module) -> nn.Module:
        """A copy of `module` on this rank's device (itself on CPU), e.g. the loss with its class weights."""
        return module if self.device == "cpu" else copy.deepcopy(module).to(self.device)

    def to_device(self, batches):
        """(x, y) batches moved to this rank's device (a no-op on CPU)."""
        if self.device == "cpu":
            yield from batches
            return
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def autocast(self):
        """CUDA mixed precision around a forward pass (PyTorch's documented torch.autocast pattern); nothing on CPU."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=TORCH_DTYPES[self.amp])

    def grad_scaler(self):
        """fp16 needs loss scaling against underflowing gradients; bf16 and fp32 do not."""
        return torch.amp.GradScaler("cuda") if self.amp == "fp16" else None


def resolve_device(device: str, amp: str) -> str:
    """"cpu" or "cuda" from --device (auto: CUDA when present); --amp is refused off CUDA."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise MobilemedError("--device cuda: torch sees no CUDA device here; use --device cpu (or auto)")
    chosen = "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"
    if amp != "off" and chosen != "cuda":
        raise MobilemedError(f"--amp {amp} needs a CUDA device and this run is on the CPU; drop --amp")
    return chosen


def start(compute) -> Dist:
    """This process's Dist: a single process without torchrun, else a member of the process group (gloo on
    CPU, NCCL on CUDA) with `compute.dist_timeout` on every collective."""
    device = resolve_device(compute.device, compute.amp)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=device, amp=compute.amp, timeout=compute.dist_timeout)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":  # one GPU per process, as in PyTorch's DDP tutorial
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=compute.dist_timeout))
    if rank != 0:  # one voice: rank 0 logs; the others keep their warnings and errors
        logging.getLogger("mobilemed").setLevel(logging.WARNING)
    log.info("process group: %d processes, backend %s, device %s", world, backend, device)
    return Dist(rank, world, local_rank, device, compute.amp, backend, compute.dist_timeout)


@contextlib.contextmanager
def session(compute):
    """start() for the duration of the block; the process group is torn down however it ends, and a broken
    collective (a rank died or stopped answering) becomes one clear error naming this rank."""
    here = start(compute)
    try:
        yield here
    except RuntimeError as err:  # gloo reports a dead or silent peer as a RuntimeError, NCCL as a DistError
        if not here.active or isinstance(err, MobilemedError) or not _broken_group(err):
            raise
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
        raise MobilemedError(
            f"process {here.rank} of {here.world_size}: lost the other processes ({first_line}); one of them "
            f"died or did not answer within --dist-timeout {here.timeout:g} s; the first error printed (or "
            "torchrun's 'Root Cause' summary) names it. Continue the run with --resume") from err
    finally:
        if here.active and dist.is_initialized():
            dist.destroy_process_group()


def _nothing(*args, **kwargs):
    return None


def _broken_group(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, dist.DistError) or any(w in text for w in ("gloo", "nccl", "connection", "timed out"))


def check_distributed(config, here: Dist):
    """Options that cannot work on several processes, refused before anything is read or written; returns
    the config to train with: the default --feature-precision auto resolves to fp32 on several processes."""
    if not here.active:
        return config
    if config.model.mode == "linear-probe" and config.model.feature_precision == "int8":
        raise MobilemedError("--feature-precision int8 calibrates int8 on one process's images; on several "
                             "processes use --feature-precision fp32")
    if config.operating_point.cv_folds:
        raise MobilemedError("--cv trains its folds one after the other on one process; drop --cv or run without "
                             "--nproc/torchrun")
    if config.model.ensemble > 1:
        raise MobilemedError("--ensemble trains its networks one after the other on one process; drop --ensemble or "
                             "run without --nproc/torchrun")
    if config.model.mode != "linear-probe" and config.model.freeze_blocks:
        raise MobilemedError("--freeze-blocks caches the frozen prefix on one process; drop --freeze-blocks or run "
                             "without --nproc/torchrun")
    if config.model.feature_precision == "auto":
        log.info("feature pass in fp32: int8 would be calibrated on one process's images")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, feature_precision="fp32"))
    return config


def rank_generator(generator: torch.Generator, shard: slice | None) -> torch.Generator:
    """After the shared permutation, each rank's own random stream for augmentation (a function of the epoch's
    seed and the rank, so --resume stays exact): otherwise row i of every rank would get the same draws."""
    if shard is None or shard.step == 1:
        return generator
    return torch.Generator().manual_seed(generator.initial_seed() * shard.step + shard.start + 1)


def batch_rows(order, batch_size: int, shard: slice | None):
    """Global batches of `order` (batch_size rows each), each cut to this rank's `shard`. A last global batch
    with fewer rows than ranks is dropped so that every rank takes every step (DDP needs all of them);
    that is at most world - 1 of the epoch's rows, different ones each epoch."""
    world = 1 if shard is None else shard.step
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        if len(rows) < world:
            return
        yield rows if shard is None else rows[shard]


def sharded_probe_features(here: Dist, backbone, spec, data: dict, *, precision: str, seed: int,
                           progress: bool, augmentation: Augmentation = Augmentation()):
    """probe_features (training/feature_precision.py) with each rank computing a contiguous slice of every
    split, gathered on every rank in order: the same (N, D) arrays a single process computes."""
    from types import SimpleNamespace

    from mobilemed.training.feature_precision import probe_features

    if not here.active:
        return probe_features(backbone, spec, data, precision=precision, seed=seed, progress=progress,
                              augmentation=augmentation)
    slices = {s: SimpleNamespace(images=d.images[here.rows(len(d.images))], labels=d.labels[here.rows(len(d.labels))])
              for s, d in data.items()}
    # With crops, flips or exposure changes each rank draws them for its own slice: 1 and N processes differ.
    arrays, record = probe_features(backbone, spec, slices, precision=precision, seed=seed, progress=progress,
                                    augmentation=augmentation)
    gathered = {s: here.gather_rows(arrays.get(s)) for s in data}
    return {s: a for s, a in gathered.items() if a is not None}, {**record, "processes": here.world_size}


def sharded_logits(here: Dist, predict, images: np.ndarray) -> np.ndarray:
    """predict(images) computed slice by slice over the ranks and gathered in order on every rank."""
    if not here.active:
        return predict(images)
    part = images[here.rows(len(images))]
    return here.gather_rows(predict(part) if len(part) else None)


def launch_local(nproc: int, argv: list[str], config) -> None:
    """`torchrun --standalone --nproc_per_node nproc -m mobilemed ARGV` (ARGV without --nproc) through
    torch.distributed.run, PyTorch's own launcher (a free local port; one machine), after refusing what cannot
    run on several processes. A failed process becomes one error naming it; torchrun stops the others at once."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if "WORLD_SIZE" in os.environ:
        raise MobilemedError("--nproc starts the processes itself; under torchrun (WORLD_SIZE is set) drop --nproc")
    check_distributed(config, Dist(world_size=nproc))
    launcher = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "mobilemed",
                                             *without_nproc(argv)])
    try:
        run(launcher)
    except ChildFailedError as err:
        raise MobilemedError(f"{describe_failures(err.failures, nproc)}; each process's own error is printed "
                             "above. Continue the run with --resume") from None


def describe_failures(failures: dict, world_size: int) -> str:
    """'process 1 of 2 (pid 123) was killed by SIGKILL; then process 0 ... exit code 2', most likely cause
    first. torchrun stamps failures to the second, so the order is by kind: a process killed by a signal other
    than the SIGTERM torchrun sends the survivors, then one that exited with an error (often a survivor
    reporting the lost peer), then the terminated ones."""
    def kind(item):
        rank, failure = item
        signalled = failure.exitcode < 0
        return (2 if signalled and failure.signal_name() == "SIGTERM" else 0 if signalled else 1, failure.timestamp,
                rank)

    parts = []
    for rank, failure in sorted(failures.items(), key=kind):
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else \
            f"exited with code {failure.exitcode}"
        parts.append(f"process {rank} of {world_size} (pid {failure.pid}) {how}")
    return "; then ".join(parts)


def without_nproc(argv: list[str]) -> list[str]:
    """argv minus `--nproc N` / `--nproc=N`: what each launched process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
