"""Decode and resize every image once; later epochs and later runs read the cached uint8 array.

The cache key covers each file's path, size and modification time and the target size, so an
edited image is decoded again. Arrays live under MOBILEMED_HOME/decoded/ as .npy (memory-mapped).
"""
from __future__ import annotations

import hashlib
import logging
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
    digest = hashlib.sha1(f"v1:{image_size}".encode() + (b"" if use_voi else b":no-voi"))
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
            return read_image(path, size=image_size, use_voi=use_voi)
        except MobilemedError as err:
            if not skip_bad:
                raise
            log.warning("skipping unreadable image: %s", err)
            return None

    # PIL and pydicom release the GIL while decoding, so threads use both cores without pickling.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        arrays = list(tqdm(pool.map(decode, paths), total=len(paths), desc="decode images",
                           disable=not progress, unit="img"))
    mask = np.array([a is not None for a in arrays], dtype=bool)
    if not mask.any():
        raise MobilemedError("no image could be read; check the paths and files")
    if (~mask).any():
        log.warning("skipped %d unreadable image(s) of %d (--skip-bad)", int((~mask).sum()), len(mask))
    good = [a for a in arrays if a is not None]
    colour = any(a.ndim == 3 for a in good)
    if colour:  # a mixed folder becomes RGB: gray images are repeated into three channels
        good = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1) for a in good]
    return np.stack(good), mask


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as handle:
        np.save(handle, array)
