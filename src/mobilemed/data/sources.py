"""Read any supported data source into an ImageTable: ImageFolder trees, CSV manifests, NIH tables,
MedMNIST by name. Then make sure train/val/test exist (patient-grouped when groups are known)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mobilemed.data.medmnist_source import is_medmnist_name, load_medmnist
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError
from mobilemed.io.images import is_image_file

log = logging.getLogger(__name__)
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class DataOptions:
    """How to read a source and split it. Paths in a CSV are relative to image_root (default: the CSV's folder)."""

    labels_csv: str | None = None
    image_root: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    label_columns: list[str] | None = None
    label_sep: str | None = None
    group_column: str | None = None
    split_column: str | None = None
    medmnist_size: int = 28
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    use_voi: bool = True  # DICOM: apply the VOI LUT / Window Center-Width when present
    resplit: bool = False  # drop the source's own splits (folders, split column) and split afresh
    allow_outside_root: bool = False  # CSV paths may lead outside image_root (../, absolute paths)


def load_table(data: str, options: DataOptions | None = None) -> ImageTable:
    """Read `data` (folder, CSV file, or MedMNIST name) and give every row a split."""
    options = options or DataOptions()
    table = read_source(data, options)
    if len(table) == 0:
        raise MobilemedError(f"{data}: no images found")
    if options.resplit:
        table = without_splits(table)
    return complete_splits(table, options)


def without_splits(table: ImageTable) -> ImageTable:
    """The same rows with no split assigned, so complete_splits makes a fresh grouped, stratified split."""
    return replace(table, splits=np.full(len(table), "", dtype=object))


def read_source(data: str, options: DataOptions) -> ImageTable:
    """The rows `data` names, with the splits the source itself gives (folders, split column) and no others."""
    path = Path(data).expanduser()
    csv = Path(options.labels_csv) if options.labels_csv else (path if path.suffix.lower() == ".csv" else None)
    if csv is not None:
        from mobilemed.data.manifest import read_manifest

        root = options.image_root or (str(path) if path.is_dir() else None)
        return read_manifest(csv, options, image_root=root)
    if path.is_dir():
        return read_image_folder(path)
    if path.exists():
        raise MobilemedError(f"{data} is a file but not a CSV manifest; pass a folder, a .csv, or a MedMNIST name")
    if is_medmnist_name(data):
        return load_medmnist(data, options.medmnist_size)
    raise MobilemedError(f"{data} does not exist: pass an image folder, a CSV manifest, or a MedMNIST name "
                         "such as pneumoniamnist")


def read_image_folder(root: Path) -> ImageTable:
    """train/val/test subfolders of class folders, or class folders directly (split later)."""
    split_dirs = {SPLIT_FOLDERS[d.name.lower()]: d for d in sorted(root.iterdir())
                  if d.is_dir() and d.name.lower() in SPLIT_FOLDERS}
    if not split_dirs:
        split_dirs = {"": root}
    per_split = {split: _class_folders(folder) for split, folder in split_dirs.items()}
    class_names = sorted({name for classes in per_split.values() for name in classes})
    if len(class_names) < 2:
        raise MobilemedError(f"{root}: found {len(class_names)} class folder(s); an ImageFolder tree needs at "
                             "least two class subfolders (optionally inside train/ val/ test/)")
    paths, labels, splits = [], [], []
    for split, classes in per_split.items():
        for name, files in classes.items():
            paths += files
            labels += [class_names.index(name)] * len(files)
            splits += [split] * len(files)
    task = "binary" if len(class_names) == 2 else "multiclass"
    return ImageTable(paths=np.array(paths, dtype=object), labels=np.array(labels, dtype=np.int64),
                      class_names=class_names, task=task, splits=np.array(splits, dtype=object), source=str(root))


def _class_folders(folder: Path) -> dict[str, list[str]]:
    classes = {}
    for class_dir in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = sorted(str(p) for p in class_dir.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise MobilemedError(f"class folder {class_dir} holds no images; add images or remove the folder")
        classes[class_dir.name] = files
    return classes


def complete_splits(table: ImageTable, options: DataOptions) -> ImageTable:
    """Give every row a split: unassigned rows are split (grouped by patient, stratified), and a
    source with train but no val gets validation carved from train."""
    from mobilemed.data.splits import assign_splits, carve_validation

    if (table.splits == "").any():
        table = assign_splits(table, val_fraction=options.val_fraction, test_fraction=options.test_fraction,
                              seed=options.seed)
    if not (table.splits == "val").any():
        table = carve_validation(table, options.val_fraction, options.seed)
    for split in ("train", "val"):
        if not (table.splits == split).any():
            raise MobilemedError(f"{table.source}: the {split} split is empty; add images or change the split")
    return table
