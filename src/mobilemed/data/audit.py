"""Data audit: what is in each split, and what would make results look better than they are.

`audit_data` reads a source with the splits it comes with and audits it. `audit_table` decodes every image
once (threads; PIL and pydicom release the GIL) and reports counts and prevalence per split, image sizes /
modes / bit depths, unreadable files, exact and near duplicates within and across splits, patients in more
than one split and label conflicts.
`cross_split_checks` is the cheap part training runs every time: patients and identical files across
splits (only files whose byte size occurs in two splits are hashed).
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mobilemed.data.duplicates import (HASH_SIZE, HASH_WORDS, close_pairs, file_sha1, linked_groups,
                                       perceptual_hash, pixels_sha1, rows_by_value, same_value_groups,
                                       sha1_where_sizes_collide)
from mobilemed.data.audit_report import AuditReport, ImageGroup
from mobilemed.data.splits import groups_across_splits, split_summary
from mobilemed.data.table import ImageTable
from mobilemed.decision import label_text
from mobilemed.errors import MobilemedError
from mobilemed.io.images import image_info, read_image

log = logging.getLogger(__name__)
NEAR_DUPLICATE_DISTANCE = 20  # of 256 pHash bits; see data/duplicates.py for why


def audit_table(table: ImageTable, *, near_duplicate_distance: int | None = NEAR_DUPLICATE_DISTANCE,
                progress: bool = True, workers: int | None = None) -> AuditReport:
    """Every check on every image. near_duplicate_distance None skips the near-duplicate search."""
    start = time.perf_counter()
    scans = scan_images(table, progress=progress, workers=workers)
    readable = np.array([scan["error"] is None for scan in scans])
    sha1s = [scan["sha1"] for scan in scans]
    exact = [_image_group(table, rows) for rows in same_value_groups(sha1s)]
    report = _base_report(table, checks=["counts", "images", "exact_duplicates", "label_conflicts", "patients"])
    report.counts = split_summary(table)
    report.image_stats = summarise_image_info([scan["info"] for scan in scans if scan["error"] is None])
    report.unreadable = [{"path": str(table.paths[i]), "error": scans[i]["error"]}
                         for i in np.flatnonzero(~readable)]
    report.exact_duplicates = exact
    report.label_conflicts = [group for group in exact if group.labels_disagree]
    report.patients_across_splits = groups_across_splits(table)
    if near_duplicate_distance is not None:
        report.checks.append("near_duplicates")
        report.near_duplicate_distance = int(near_duplicate_distance)
        report.near_duplicates = _near_duplicate_groups(table, scans, int(near_duplicate_distance))
    report.seconds = round(time.perf_counter() - start, 2)
    log.info("audited %d images in %.1f s", len(table), report.seconds)
    return report


def audit_data(data: str, options=None, *, near_duplicate_distance: int | None = NEAR_DUPLICATE_DISTANCE,
               progress: bool = True) -> AuditReport:
    """Audit `data` (folder, CSV / NIH table or MedMNIST name, read with data.sources.DataOptions) with the
    splits it comes with: the audit looks at the data, it does not fill in splits. options.resplit audits a
    fresh patient-grouped, stratified split instead. Raises MobilemedError when nothing can be read."""
    from mobilemed.data.sources import DataOptions, read_source, without_splits
    from mobilemed.data.splits import assign_splits

    options = options or DataOptions()
    table = read_source(data, options)  # load_table would also complete the splits
    if len(table) == 0:
        raise MobilemedError(f"{data}: no images found")
    if options.resplit:
        table = assign_splits(without_splits(table), val_fraction=options.val_fraction,
                              test_fraction=options.test_fraction, seed=options.seed)
    return audit_table(table, near_duplicate_distance=near_duplicate_distance, progress=progress)


def cross_split_checks(table: ImageTable) -> AuditReport:
    """Patients in more than one split and byte-identical images across splits; cheap enough for every run."""
    start = time.perf_counter()
    report = _base_report(table, checks=["patients", "exact_duplicates"])
    report.patients_across_splits = groups_across_splits(table)
    groups = [_image_group(table, rows) for rows in same_value_groups(_cross_split_hashes(table))]
    report.exact_duplicates = [group for group in groups if group.crosses_splits]
    report.seconds = round(time.perf_counter() - start, 2)
    return report


def scan_images(table: ImageTable, *, progress: bool = True, workers: int | None = None) -> list[dict]:
    """Per row: {"sha1", "phash" (HASH_WORDS,) uint64, "info" (width, height, mode, bit_depth), "error"}.

    An unreadable row has sha1, phash and info None and its error message.
    """
    from tqdm.auto import tqdm

    scan = _scan_memory if table.images is not None else _scan_file
    items = table.images if table.images is not None else table.paths
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(scan, items), total=len(table), desc="audit images", unit="img",
                         disable=not progress))


def summarise_image_info(infos: list[dict], top: int = 10) -> dict:
    """{"sizes": {"WxH": n}, "modes": {mode: n}, "bit_depths": {bits: n}}; sizes beyond the top few pooled."""
    sizes = Counter(f"{info['width']}x{info['height']}" for info in infos)
    common = dict(sizes.most_common(top))
    if len(sizes) > top:
        common[f"other ({len(sizes) - top} sizes)"] = sum(sizes.values()) - sum(common.values())
    return {"sizes": common, "modes": dict(Counter(info["mode"] for info in infos).most_common()),
            "bit_depths": {str(k): v for k, v in Counter(info["bit_depth"] for info in infos).most_common()}}


def label_texts(table: ImageTable) -> list[str]:
    """Each row's label as text: the class name, or the findings joined by "|" ("none" when empty)."""
    labels = np.asarray(table.labels)
    return label_text(labels > 0.5 if table.is_multilabel else labels, table.class_names)


def _scan_file(path) -> dict:
    try:
        info = image_info(path)
        pixels = read_image(path)
        return {"sha1": file_sha1(path), "phash": perceptual_hash(pixels), "info": info, "error": None}
    except (MobilemedError, OSError) as err:
        return {"sha1": None, "phash": None, "info": None, "error": str(err)}


def _scan_memory(pixels: np.ndarray) -> dict:
    info = {"width": pixels.shape[1], "height": pixels.shape[0], "mode": "RGB" if pixels.ndim == 3 else "L",
            "bit_depth": 8 * pixels.dtype.itemsize}
    return {"sha1": pixels_sha1(pixels), "phash": perceptual_hash(pixels), "info": info, "error": None}


def _near_duplicate_groups(table: ImageTable, scans: list[dict], max_distance: int) -> list[ImageGroup]:
    """Groups of distinct contents whose pHashes link within max_distance (exact copies ride along)."""
    contents = rows_by_value([scan["sha1"] for scan in scans])  # one entry per distinct content
    if len(contents) < 2:
        return []
    first_rows = [rows[0] for rows in contents]
    hashes = np.stack([scans[r]["phash"] for r in first_rows]).reshape(len(first_rows), HASH_WORDS)
    i, j, distance = close_pairs(hashes, max_distance)
    groups = []
    for members in linked_groups(len(contents), i, j):
        inside = np.isin(i, members) & np.isin(j, members)
        rows = np.concatenate([contents[m] for m in members])
        groups.append(_image_group(table, rows, distance=int(distance[inside].max())))
    return groups


def _cross_split_hashes(table: ImageTable) -> list[str | None]:
    """SHA-1 per row where a duplicate across splits is possible, else None."""
    if table.images is not None:
        return [pixels_sha1(pixels) for pixels in table.images]
    return sha1_where_sizes_collide(table.paths, table.splits)


def _image_group(table: ImageTable, rows: np.ndarray, distance: int = 0) -> ImageGroup:
    texts = label_texts(table.subset(rows))
    return ImageGroup(paths=[str(p) for p in table.paths[rows]], splits=[str(s) for s in table.splits[rows]],
                      labels=texts, distance=distance)


def _base_report(table: ImageTable, checks: list[str]) -> AuditReport:
    return AuditReport(source=table.source, num_images=len(table), task=table.task,
                       class_names=list(table.class_names), groups_known=table.groups is not None,
                       checks=list(checks), hash_name=f"pHash {HASH_SIZE}x{HASH_SIZE} ({HASH_SIZE ** 2} bits)")
