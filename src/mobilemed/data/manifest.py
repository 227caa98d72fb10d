"""CSV manifests: an image path column plus labels as one column, multi-hot columns, or a joined string.

NIH ChestX-ray14 tables (Image Index, Finding Labels, Patient ID) are recognised and read by data/nih.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

IMAGE_COLUMN_GUESSES = ("path", "image", "file", "filename", "image_path", "Image Index")


def read_manifest(csv_path: Path, options, *, image_root: str | None = None) -> ImageTable:
    import pandas as pd

    from mobilemed.data.nih import is_nih_table, read_nih_table

    if not csv_path.is_file():
        raise MobilemedError(f"label table {csv_path} does not exist")
    root = Path(image_root) if image_root else csv_path.parent
    if is_nih_table(csv_path) and not (options.label_column or options.label_columns):
        return read_nih_table(csv_path, root)
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    image_column = options.image_column or _guess_image_column(frame, csv_path)
    _require_columns(frame, csv_path, [image_column, options.group_column, options.split_column,
                                       options.label_column, *(options.label_columns or [])])
    labels, class_names, task = _read_labels(frame, csv_path, options)
    paths = np.array(_resolve_all(root, frame[image_column]), dtype=object)
    return ImageTable(paths=paths, labels=labels, class_names=class_names, task=task,
                      splits=_read_splits(frame, csv_path, options),
                      groups=frame[options.group_column].to_numpy(object) if options.group_column else None,
                      source=str(csv_path))


def _guess_image_column(frame, csv_path: Path) -> str:
    for name in frame.columns:
        if name in IMAGE_COLUMN_GUESSES or name.lower() in IMAGE_COLUMN_GUESSES:
            return name
    raise MobilemedError(f"{csv_path}: no image path column found among {list(frame.columns)}; "
                         "name it with --image-column")



def _require_columns(frame, csv_path: Path, columns) -> None:
    for column in columns:
        if column and column not in frame.columns:
            raise MobilemedError(f"{csv_path} has no column {column!r}; its columns are: {', '.join(frame.columns)}")


def _read_labels(frame, csv_path: Path, options):
    if options.label_columns:  # multi-hot columns, one per finding
        values = frame[options.label_columns]
        bad = ~values.isin(["0", "1"]).all(axis=0)
        if bad.any():
            raise MobilemedError(f"{csv_path}: multi-hot column {bad[bad].index[0]!r} must hold only 0 or 1")
        return values.to_numpy(np.float32), list(options.label_columns), "multilabel"
    column = options.label_column or ("label" if "label" in frame.columns else None)
    if column is None:
        raise MobilemedError(f"{csv_path}: say which column holds the labels with --label-column NAME, or "
                             f"--label-columns A,B,C for multi-hot columns; columns are: {', '.join(frame.columns)}")
    if options.label_sep:  # "Effusion|Mass" strings -> multi-hot
        sets = [set(filter(None, v.split(options.label_sep))) for v in frame[column]]
        class_names = sorted(set().union(*sets))
        labels = np.array([[name in s for name in class_names] for s in sets], dtype=np.float32)
        return labels, class_names, "multilabel"
    empty = frame[column] == ""
    if empty.any():
        raise MobilemedError(f"{csv_path}: row {int(np.argmax(empty)) + 2} has an empty {column!r}; fill in every label")
    class_names = sorted(frame[column].unique(), key=_natural_key)
    labels = frame[column].map({name: i for i, name in enumerate(class_names)}).to_numpy(np.int64)
    return labels, class_names, "binary" if len(class_names) == 2 else "multiclass"


def _natural_key(value: str):
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def _read_splits(frame, csv_path: Path, options) -> np.ndarray:
    """The split column's values as train/val/test ("" where empty): --split-values first, then the common
    names of data/layout.py in any case (Training, VALID, dev, test_set ...)."""
    from mobilemed.data.layout import split_of_name

    column = options.split_column
    if not column or options.resplit:  # --resplit makes a fresh split: the column's values do not matter
        return np.full(len(frame), "", dtype=object)
    given = options.split_values or {}
    values = frame[column].str.strip()
    mapping = {v: "" if v == "" else given.get(v.lower()) or split_of_name(v) for v in values.unique()}
    unknown = sorted(v for v, split in mapping.items() if split is None)
    if unknown:
        counts = values.value_counts()
        found = ", ".join(f"{v!r} ({counts[v]} rows)" for v in unknown[:6])
        raise MobilemedError(f"{csv_path}: column {column!r} has values that are not a split: {found}. Say which "
                             f"split each is with --split-values test={unknown[0]} (SPLIT=VALUE,...), or add "
                             "--resplit to ignore the column")
    return values.map(mapping).to_numpy(object)


def _resolve_all(root: Path, values) -> list[str]:
    """Paths relative to root. A manifest written on another machine often carries a different top
    folder ("NIH1000/train/x.png" for root/train/x.png): a missing path is then found by its file
    name under root, when exactly one file has that name."""
    by_name = None
    resolved = []
    for value in values:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.exists():
            by_name = _index_by_name(root) if by_name is None else by_name
            path = by_name.get(path.name, path)  # still missing: read_image names it later
        resolved.append(str(path))
    return resolved


def _index_by_name(root: Path) -> dict[str, Path]:
    index, repeated = {}, set()
    for file in root.rglob("*"):
        if file.name in index:
            repeated.add(file.name)
        index[file.name] = file
    return {name: path for name, path in index.items() if name not in repeated}
