"""The output of a frozen prefix of the backbone (its first k feature blocks), computed once and cached in fp16.

A fine-tune with `--freeze-blocks k` never changes those blocks (they stay in eval mode, so not even their
BatchNorm statistics move), so their output for an image is the same in every epoch. It is computed once,
by the same ONNX Runtime pass the linear probe uses (training/features.py: FeaturePass), and stored as
float16: (V, N, C, h, w) for the training split, V views per image, and (1, N, C, h, w) for validation.
fp16 halves the memory of fp32 and costs ~1e-3 relative error on the maps (the parity test bounds
its effect on the logits). When the cache would take more than MEMORY_SHARE of the memory available, it is
written to a memory-mapped file under MOBILEMED_HOME/prefix_cache/ instead, unlinked as soon as it is opened,
so nothing is left behind even when the run is killed.

What augmentation is possible on cached prefixes, honestly:
- pixel-level augmentation in every epoch: none. The prefix saw each image once (per view); an epoch cannot
  draw a new crop, rotation or intensity change without running the prefix again, which is the cost the
  cache exists to avoid.
- a fixed set of augmented views: `--prefix-views V` caches the plain image plus V - 1 randomly augmented
  copies (the same small affine as the network's augmentation: shift, rotation, scale; no flips, chest
  X-rays are not mirror-symmetric), drawn once from the run's seed; each epoch picks one view per image.
  With `--crop-scale S` below 1 all V views are random zoomed crops (data/transforms.py: augment_batch):
  the plain, fully framed image is the shortcut the crops exist to hide. `--intensity` likewise gives every
  view its own random exposure (gamma, contrast, brightness).
  It costs V prefix passes and V times the memory, and V views are far less variety than fresh draws.
- flips of the feature map would only be valid where anatomy allows them (not for chest X-rays), and
  shifting a 14x14 map by one cell is a 16-px jump at 224 px: neither is offered.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mobilemed.assets import home
from mobilemed.data.transforms import Augmentation
from mobilemed.spec import ModelSpec
from mobilemed.training.features import (CHUNK, PREFETCH, FeaturePass, augmented_chunks, input_chunks, prefetched,
                                         release_freed_memory)

log = logging.getLogger(__name__)
MEMORY_SHARE = 0.5  # a cache above this share of the available memory goes to a memory-mapped file


def count_blocks(arch: str) -> int:
    """How many feature blocks `arch` has (backbone.features); --freeze-blocks must stay below it."""
    from mobilemed.models.registry import get_backbone

    with torch.device("meta"):  # the module tree only: no memory, no initialisation
        return len(get_backbone(arch).build().features)


def prefix_maps(prefix: nn.Module, images: np.ndarray, spec: ModelSpec, *, views: int = 1, seed: int = 0,
                progress: bool = True, max_memory_bytes: int | None = None,
                augmentation: Augmentation = Augmentation()) -> np.ndarray:
    """(views, N, C, h, w) float16 output of the eval-mode `prefix` on uint8 `images` (N, H, W[, C]).
    View 0 is the plain image; views 1.. are augmented copies drawn from `seed` (see the module docstring).
    With crops, flips or exposure changes every view, view 0 too, is augmented (a plain view would teach the
    framing back).
    max_memory_bytes: above it the array is a memory map on disk (default: MEMORY_SHARE of MemAvailable)."""
    extractor = FeaturePass(prefix, spec, progress=False)  # the probe's ONNX Runtime pass (torch without it)
    runner = extractor._runner("fp32")
    shape = _map_shape(prefix, spec)
    out = allocate((views, len(images), *shape), max_memory_bytes=max_memory_bytes)
    tic = time.perf_counter()
    for view in range(views):
        plain = view == 0 and augmentation.is_plain
        chunks = input_chunks(images, spec) if plain else augmented_chunks(images, spec, seed, view, augmentation)
        start = 0
        for x in tqdm(prefetched(chunks, PREFETCH), total=-(-len(images) // CHUNK), unit="batch",
                      desc=f"frozen prefix (view {view + 1}/{views})", disable=not progress):
            out[view, start:start + len(x)] = runner(x)
            start += len(x)
    release_freed_memory()
    log.info("frozen prefix: %d image(s) x %d view(s) -> %s fp16 maps in %.1f s", len(images), views, shape,
             time.perf_counter() - tic)
    return out


def take_rows(maps: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """maps[:, rows] as a new array (allocate's choice of memory or memory map), copied CHUNK rows at a time
    so a memory-mapped source is never read whole into memory. All rows in order (the --cv refit) is `maps`
    itself: readers never write to it, and a second copy of every view would double the memory."""
    if len(rows) == maps.shape[1] and np.array_equal(rows, np.arange(len(rows))):
        return maps
    out = allocate((maps.shape[0], len(rows), *maps.shape[2:]))
    for start in range(0, len(rows), CHUNK):
        part = rows[start:start + CHUNK]
        out[:, start:start + len(part)] = maps[:, part]
    return out


def _map_shape(prefix: nn.Module, spec: ModelSpec) -> tuple[int, ...]:
    """(C, h, w) of the prefix's output at spec.image_size."""
    with torch.inference_mode():
        return tuple(prefix.eval()(torch.zeros(1, spec.in_chans, spec.image_size, spec.image_size)).shape[1:])


def allocate(shape: tuple[int, ...], *, max_memory_bytes: int | None = None) -> np.ndarray:
    """An uninitialised float16 array: in memory when it fits under max_memory_bytes, else a memory map
    backed by a file under MOBILEMED_HOME/prefix_cache/ that is unlinked at once (the mapping keeps it)."""
    nbytes = int(np.prod(shape)) * 2
    budget = available_memory() * MEMORY_SHARE if max_memory_bytes is None else max_memory_bytes
    if nbytes <= budget:
        return np.empty(shape, np.float16)
    folder = home() / "prefix_cache"
    folder.mkdir(parents=True, exist_ok=True)
    log.info("frozen prefix cache of %.0f MB goes to a memory map under %s", nbytes / 2**20, folder)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".f16") as handle:
        handle.truncate(nbytes)
        mapped = np.memmap(handle.name, dtype=np.float16, mode="r+", shape=shape)
    return mapped  # the file is gone from the folder; its pages live as long as the mapping


def available_memory() -> int:
    """MemAvailable in bytes (Linux), or the physical memory elsewhere."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
