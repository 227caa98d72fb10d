"""Content hashes and perceptual hashes, and the groups of rows that share an image.

Exact duplicates share the SHA-1 of their file bytes (or of their pixels for in-memory images).
Near duplicates have 256-bit perceptual hashes (pHash, 16 x 16 DCT signs) within a Hamming distance:
on chest X-rays re-encoding, brightness, contrast and gamma changes stay under ~14 bits while
different radiographs are 34+ bits apart (measured on Kermany and NIH ChestX-ray14); the shorter
64-bit pHash cannot tell different radiographs apart. Pairs are found with numpy XOR + popcount
over all pairs, in blocks, which takes about a second for 6,000 images.
"""
from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HASH_SIZE = 16  # pHash side: 16 x 16 = 256 bits
HASH_WORDS = HASH_SIZE * HASH_SIZE // 64  # uint64 words per hash
_POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def file_sha1(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha1_where_sizes_collide(paths, owners) -> list[str | None]:
    """SHA-1 of each file whose byte size it shares with a file of another owner (a split, a row), else None.

    Identical files have equal sizes, so only these can be identical across owners: the other files
    are never read. Missing files get None.
    """
    sizes = [_file_size(path) for path in paths]
    owners_of_size: dict[int, set] = {}
    for size, owner in zip(sizes, owners):
        if size >= 0:
            owners_of_size.setdefault(size, set()).add(owner)
    todo = [i for i, size in enumerate(sizes) if len(owners_of_size.get(size, ())) > 1]
    hashes: list[str | None] = [None] * len(sizes)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, digest in zip(todo, pool.map(lambda k: _safe_sha1(paths[k]), todo)):
            hashes[i] = digest
    return hashes


@functools.lru_cache(maxsize=1 << 17)
def _cached_sha1(path: str, size: int, mtime_ns: int) -> str:
    """file_sha1, once per file per process: the leakage check, the split and the audit each ask for the
    same files (a second of a Kermany run). Size and modification time are in the key, so a file
    rewritten in between is read again."""
    return file_sha1(path)


def _file_size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _safe_sha1(path) -> str | None:
    try:
        stat = os.stat(path)
        return _cached_sha1(os.fspath(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return None


def pixels_sha1(pixels: np.ndarray) -> str:
    """SHA-1 of an in-memory image: its shape and bytes."""
    digest = hashlib.sha1(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def perceptual_hash(pixels: np.ndarray) -> np.ndarray:
    """(HASH_WORDS,) uint64 pHash of a uint8 (H, W) or (H, W, 3) image."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(pixels), hash_size=HASH_SIZE).hash  # (16, 16) bool
    return np.packbits(bits.ravel()).view(">u8").astype(np.uint64)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words)
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(*words.shape, 8)
    return _POPCOUNT8[as_bytes].sum(axis=-1, dtype=np.uint8)


def close_pairs(hashes: np.ndarray, max_distance: int, *, block: int = 256) -> tuple[np.ndarray, ...]:
    """All pairs i < j with Hamming distance <= max_distance.

    hashes: (M, W) uint64. Returns: (i, j, distance) int arrays. Works on blocks of rows against all
    rows so memory stays at block x M counters.
    """
    found_i, found_j, found_d = [], [], []
    for start in range(0, len(hashes), block):
        rows = hashes[start:start + block]
        distance = np.zeros((len(rows), len(hashes)), np.uint16)
        for w in range(hashes.shape[1]):
            distance += popcount(rows[:, w, None] ^ hashes[None, :, w])
        i, j = np.nonzero(distance <= max_distance)
        keep = j > i + start
        found_i.append(i[keep] + start)
        found_j.append(j[keep])
        found_d.append(distance[i[keep], j[keep]].astype(np.int64))
    if not found_i:
        return (np.zeros(0, np.int64),) * 3
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def rows_by_value(values) -> list[np.ndarray]:
    """Row indices per distinct value (None ignored), in first-seen order."""
    rows_of: dict = {}
    for i, value in enumerate(values):
        if value is not None:
            rows_of.setdefault(value, []).append(i)
    return [np.array(rows) for rows in rows_of.values()]


def same_value_groups(values) -> list[np.ndarray]:
    """Row indices of every value held by two or more rows (None ignored), in first-seen order."""
    return [rows for rows in rows_by_value(values) if len(rows) > 1]


def linked_groups(num_items: int, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Connected components of the pairs (i, j) with two or more members."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(i) == 0:
        return []
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(num_items, num_items))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    return [np.flatnonzero(component == c) for c in np.flatnonzero(sizes > 1)]
