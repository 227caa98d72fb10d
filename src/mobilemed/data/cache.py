"""Decode and resize every image once; later epochs and later runs read the cached uint8 array.

The cache key covers each file's path, size and modification time and the target size, so an
edited image is decoded again. Arrays live under MOBILEMED_HOME/decoded/ as .npy (memory-mapped).

An RGB file whose three channels are equal (Kermany's JPEGs are RGB files of gray X-rays) is a gray
source: it is stored as one channel, a third of the bytes, and trains a 1-channel model exactly as the
same picture saved as a gray PNG would. Images are written into one preallocated array as they
decode, so decoding never holds a list of per-image arrays and their stacked copy at once.
"""
from __future__ import annotations

import hashlib
import logging
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mobilemed.assets.home import home
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write
from mobilemed.io.images import read_image

log = logging.getLogger(__name__)
GATHER_ROWS = 256  # rows per step of take_splits: a few MB at 224 px


def decoded_images(table: ImageTable, image_size: int, *, skip_bad: bool = False, progress: bool = True,
                   use_voi: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of every row at image_size x image_size.

    Returns: images (N_ok, S, S) uint8 for gray sources or (N_ok, S, S, 3) for colour ones, and the
    boolean mask (N,) of rows that decoded (all True unless skip_bad dropped unreadable files).
    """
    if table.images is not None:  # MedMNIST: already decoded; resizing happens on the batch tensor
        return table.images, np.ones(len(table), bool)
    key = _cache_key(table.paths, image_size, use_voi)
    folder = home() / "decoded"
    cached, mask_file = folder / f"{key}.npy", folder / f"{key}.mask.npy"
    if cached.exists() and mask_file.exists():
        mask = np.load(mask_file)
        if mask.all() or skip_bad:
            return np.load(cached, mmap_mode="r"), mask
    images, mask = _decode_all(table.paths, image_size, skip_bad=skip_bad, progress=progress, use_voi=use_voi)
    _save_npy(mask_file, mask)
    _save_npy(cached, images)
    return np.load(cached, mmap_mode="r"), mask


def _cache_key(paths, image_size: int, use_voi: bool = True) -> str:
    digest = hashlib.sha1(f"v2:{image_size}".encode() + (b"" if use_voi else b":no-voi"))
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def _decode_all(paths, image_size: int, *, skip_bad: bool, progress: bool, use_voi: bool = True):
    def decode(path):
        try:
            return as_gray_if_equal(read_image(path, size=image_size, use_voi=use_voi))
        except MobilemedError as err:
            if not skip_bad:
                raise
            log.warning("skipping unreadable image: %s", err)
            return None

    images = np.zeros((len(paths), image_size, image_size), np.uint8)  # gray until a colour image comes
    mask = np.zeros(len(paths), bool)
    # PIL and pydicom release the GIL while decoding, so threads use both cores without pickling.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, pixels in enumerate(tqdm(pool.map(decode, paths), total=len(paths), desc="decode images",
                                        disable=not progress, unit="img")):
            if pixels is None:
                continue
            if pixels.ndim == 3 and images.ndim == 3:  # a mixed folder becomes RGB: gray is repeated
                images = np.repeat(images[..., None], 3, axis=-1)
            images[i], mask[i] = pixels if pixels.ndim == images.ndim - 1 else pixels[..., None], True
    if not mask.any():
        raise MobilemedError("no image could be read; check the paths and files")
    if (~mask).any():
        log.warning("skipped %d unreadable image(s) of %d (--skip-bad)", int((~mask).sum()), len(mask))
        images = images[mask]
    return images, mask


def as_gray_if_equal(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) with R == G == B everywhere -> (H, W); anything else unchanged."""
    if pixels.ndim == 3 and np.array_equal(pixels[..., 0], pixels[..., 1]) \
            and np.array_equal(pixels[..., 1], pixels[..., 2]):
        return np.ascontiguousarray(pixels[..., 0])
    return pixels


def take_splits(images: np.ndarray, splits: np.ndarray, names=("train", "val", "test")) -> dict[str, np.ndarray]:
    """{name: images[splits == name]} as in-memory arrays, gathered in one pass GATHER_ROWS rows at a time.

    For the memory-mapped cache each step's pages are handed back to the kernel once copied: otherwise the
    mapping stays resident next to the copies and a run holds the decoded set twice."""
    out = {name: np.empty((int((splits == name).sum()), *images.shape[1:]), images.dtype) for name in names}
    filled = dict.fromkeys(names, 0)
    for start in range(0, len(images), GATHER_ROWS):
        block, where = np.asarray(images[start:start + GATHER_ROWS]), splits[start:start + GATHER_ROWS]
        for name in names:
            rows = block[where == name]
            out[name][filled[name]:filled[name] + len(rows)] = rows
            filled[name] += len(rows)
        _release_rows(images, start, start + len(block))
    return out


def _release_rows(images: np.ndarray, start: int, stop: int) -> None:
    """Drop rows [start, stop) of a read-only np.memmap from this process's resident pages (they stay in
    the page cache; reading them again faults them back in). Anything else is left alone."""
    mapping = getattr(images, "_mmap", None)
    if not isinstance(images, np.memmap) or mapping is None or not hasattr(mapping, "madvise"):
        return
    row = images.strides[0]
    base = images.offset % mmap.ALLOCATIONGRANULARITY  # np.memmap maps from an aligned offset
    first = (base + start * row) // mmap.PAGESIZE * mmap.PAGESIZE
    last = min(base + stop * row, len(mapping))
    if last > first:
        mapping.madvise(mmap.MADV_DONTNEED, first, last - first)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as handle:
        np.save(handle, array)
