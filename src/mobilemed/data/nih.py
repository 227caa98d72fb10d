"""NIH ChestX-ray14 label tables (Data_Entry_2017*.csv[.gz]) read directly into a 14-finding multi-label table.

A row: Image Index (file name), Finding Labels ("Effusion|Mass" or "No Finding"), Patient ID, ...
Images are looked up by file name anywhere under the image root. An image inside a folder named
train / valid / val / test keeps that folder as its split, so a course's own split can be audited.
"""
from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np

from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)

FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
SPLIT_FOLDERS = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}


def is_nih_table(csv_path) -> bool:
    """True when the CSV's header holds the NIH columns Image Index, Finding Labels and Patient ID."""
    try:
        header = _read_header(Path(csv_path))
    except (OSError, UnicodeDecodeError, EOFError):
        return False
    return all(column in header for column in REQUIRED_COLUMNS)


def read_nih_table(csv_path, image_root, *, require_images: bool = True) -> ImageTable:
    """The NIH table as a multilabel ImageTable over the 14 findings (official order, "No Finding" = all 0).

    image_root: searched recursively for each Image Index. A file name found in several places gives
        one row per copy (the audit then reports the copies).
    require_images: drop rows whose image is not under image_root (logged); False keeps them with a
        path that does not exist.
    Returns: groups = Patient ID; splits from train/valid/val/test folders, "" elsewhere.
    """
    csv_path, image_root = Path(csv_path), Path(image_root)
    frame = _read_frame(csv_path)
    labels = findings_to_multihot(frame["Finding Labels"].to_numpy(object), csv_path)
    found = find_images(image_root, set(frame["Image Index"]))
    rows, paths = _match_rows(frame["Image Index"].to_numpy(object), found, image_root, require_images)
    if not rows.size:
        raise MobilemedError(f"none of the {len(frame)} images in {csv_path} is under {image_root}; "
                             "point --image-root at the folder that holds the PNG files")
    if require_images and len(set(rows)) < len(frame):
        log.info("%s: %d of %d rows have no image under %s and were left out",
                 csv_path.name, len(frame) - len(set(rows)), len(frame), image_root)
    splits = np.array([split_from_folders(Path(p), image_root) for p in paths], dtype=object)
    return ImageTable(paths=np.array(paths, dtype=object), labels=labels[rows], class_names=list(FINDINGS),
                      task="multilabel", splits=splits, groups=frame["Patient ID"].to_numpy(object)[rows],
                      source=str(csv_path))


def findings_to_multihot(finding_labels, csv_path="NIH table") -> np.ndarray:
    """("Effusion|Mass", "No Finding", ...) -> (N, 14) float32 multi-hot; an unknown finding is an error."""
    column = {name: k for k, name in enumerate(FINDINGS)}
    labels = np.zeros((len(finding_labels), len(FINDINGS)), np.float32)
    for i, text in enumerate(finding_labels):
        for name in text.split("|"):
            name = name.strip()
            if name in column:
                labels[i, column[name]] = 1.0
            elif name not in (NO_FINDING, ""):
                raise MobilemedError(f"{csv_path}: row {i + 2} has finding {name!r}, not one of the 14 "
                                     f"ChestX-ray14 findings or {NO_FINDING!r}")
    return labels


def find_images(image_root: Path, names: set[str]) -> dict[str, list[str]]:
    """File name -> every path under image_root with that name, for the names asked for (one walk)."""
    found: dict[str, list[str]] = {}
    for folder, _, files in os.walk(image_root):
        for name in files:
            if name in names:
                found.setdefault(name, []).append(os.path.join(folder, name))
    return {name: sorted(paths) for name, paths in found.items()}


def split_from_folders(path: Path, image_root: Path) -> str:
    """"train" / "val" / "test" when a folder between image_root and the file is named so, else ""."""
    try:
        parts = path.parent.relative_to(image_root).parts
    except ValueError:
        return ""
    for part in reversed(parts):  # the innermost split folder wins
        if part.lower() in SPLIT_FOLDERS:
            return SPLIT_FOLDERS[part.lower()]
    return ""


def _match_rows(names: np.ndarray, found: dict[str, list[str]], image_root: Path, require_images: bool):
    """(row index per output row, path per output row): one output row per file found."""
    rows, paths = [], []
    for i, name in enumerate(names):
        copies = found.get(name) or ([] if require_images else [str(image_root / name)])
        if len(copies) > 1:
            log.warning("%s is under %s %d times; every copy is kept", name, image_root, len(copies))
        rows += [i] * len(copies)
        paths += copies
    return np.array(rows, dtype=np.int64), paths


def _read_frame(csv_path: Path):
    import pandas as pd

    if not csv_path.is_file():
        raise MobilemedError(f"NIH label table {csv_path} does not exist")
    missing = [c for c in REQUIRED_COLUMNS if c not in _read_header(csv_path)]
    if missing:
        raise MobilemedError(f"{csv_path} is not an NIH ChestX-ray14 table: it has no {', '.join(missing)} column")
    frame = pd.read_csv(csv_path, usecols=list(REQUIRED_COLUMNS), dtype=str, keep_default_na=False)
    repeated = frame["Image Index"].duplicated()
    if repeated.any():
        raise MobilemedError(f"{csv_path}: Image Index {frame['Image Index'][repeated].iloc[0]!r} appears "
                             "twice; keep one row per image")
    return frame


def _read_header(csv_path: Path) -> list[str]:
    import csv

    opener = gzip.open if csv_path.suffix.lower() == ".gz" else open
    with opener(csv_path, "rt", newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])
