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

log = logging.getLogger(__name__)


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
    group_pattern: str | None = None  # regex: the patient id in each file name (data/group_pattern.py)
    split_column: str | None = None
    medmnist_size: int = 28
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    use_voi: bool = True  # DICOM: apply the VOI LUT / Window Center-Width when present
    resplit: bool = False  # drop the source's own splits (folders, split column) and split afresh
    split_folders: dict[str, str] | None = None  # {"train": "Training", "test": "Testing"}: split -> folder
    split_values: dict[str, str] | None = None  # {"holdout": "test"}: split-column value (lower case) -> split
    positive_class: str | None = None  # binary: the finding (class_names[1]); default: see data/positive_class.py
    allow_outside_root: bool = False  # CSV paths may lead outside image_root (../, absolute paths)


def load_table(data: str, options: DataOptions | None = None) -> ImageTable:
    """Read `data` (folder, CSV file, or MedMNIST name) and give every row a split."""
    options = options or DataOptions()
    table = read_source(data, options)
    if len(table) == 0:
        raise MobilemedError(f"{data}: no images found")
    if options.group_pattern:
        from mobilemed.data.group_pattern import groups_from_names

        table = groups_from_names(table, options.group_pattern)
    if options.resplit:
        table = without_splits(table)
    return complete_splits(table, options)


def without_splits(table: ImageTable) -> ImageTable:
    """The same rows with no split assigned, so complete_splits makes a fresh grouped, stratified split."""
    return replace(table, splits=np.full(len(table), "", dtype=object))


def read_source(data: str, options: DataOptions) -> ImageTable:
    """The rows `data` names, with the splits the source itself gives (folders, split column) and no others;
    a binary task's classes ordered [negative, positive] (data/positive_class.py)."""
    from mobilemed.data.positive_class import order_binary_classes

    return order_binary_classes(_read_rows(data, options), options.positive_class)


def _read_rows(data: str, options: DataOptions) -> ImageTable:
    path = Path(data).expanduser()
    csv = Path(options.labels_csv) if options.labels_csv else (path if path.suffix.lower() == ".csv" else None)
    if options.split_folders and (csv is not None or not path.is_dir()):
        raise MobilemedError(f"--split-folders names the split folders of an image folder; {data} is read "
                             "from a table or by name (use --split-column for a table's splits)")
    if options.split_values and not options.split_column:
        raise MobilemedError("--split-values says what the values of a split column mean: name the column with "
                             "--split-column")
    if csv is not None:
        from mobilemed.data.manifest import read_manifest

        root = options.image_root or (str(path) if path.is_dir() else None)
        return read_manifest(csv, options, image_root=root)
    if path.is_dir():
        return read_image_folder(path, options.split_folders)
    if path.exists():
        raise MobilemedError(f"{data} is a file but not a CSV manifest; pass a folder, a .csv, or a MedMNIST name")
    if is_medmnist_name(data):
        return load_medmnist(data, options.medmnist_size)
    raise MobilemedError(f"{data} does not exist: pass an image folder, a CSV manifest, or a MedMNIST name "
                         "such as pneumoniamnist")


def read_image_folder(root: Path, split_folders: dict[str, str] | None = None) -> ImageTable:
    """Class folders, optionally inside split folders (data/layout.py says which names and layouts)."""
    from mobilemed.data import layout

    folders = layout.split_folders(root, split_folders)
    per_split = {split: layout.class_folders(folder, root, split) for split, folder in folders.items()}
    _check_same_classes(root, folders, per_split)
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


def _check_same_classes(root: Path, folders: dict[str, Path], per_split: dict[str, dict]) -> None:
    """Split folders must hold the same class folders: a class missing from one split is usually a
    misspelt or differently cased folder, and would otherwise become a class of its own."""
    names = {split: sorted(classes) for split, classes in per_split.items()}
    if len({tuple(n) for n in names.values()}) > 1:
        found = "; ".join(f"{folders[split].name}/: {', '.join(n) or 'none'}" for split, n in names.items())
        raise MobilemedError(f"{root}: the split folders hold different class folders ({found}); rename them to "
                             "match, or read one split only with --split-folders train=FOLDER (the rest is "
                             "split from it)")


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
