"""CSV manifests: an image path column plus labels as one column, multi-hot columns, or a joined string.

NIH ChestX-ray14 tables (Image Index, Finding Labels, Patient ID) are recognised and read by data/nih.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

IMAGE_COLUMN_GUESSES = ("path", "image", "file", "filename", "image_path", "Image Index")
# What spreadsheets and pandas write for "no value": never a class name.
MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "none", "null", "nat", "<na>", "#n/a", "-", "?"})
SHOWN_MISSING = 3


def read_manifest(csv_path: Path, options, *, image_root: str | None = None) -> ImageTable:
    import pandas as pd

    from mobilemed.data.nih import is_nih_table, read_nih_table

    if not csv_path.is_file():
        raise MobilemedError(f"label table {csv_path} does not exist")
    root = Path(image_root) if image_root else csv_path.parent
    if is_nih_table(csv_path) and not (options.label_column or options.label_columns):
        return read_nih_table(csv_path, root)
    frame = _read_frame(csv_path)
    image_column = options.image_column or _guess_image_column(frame, csv_path)
    _require_columns(frame, csv_path, [image_column, options.group_column, options.split_column,
                                       options.label_column, *(options.label_columns or [])])
    labels, class_names, task = _read_labels(frame, csv_path, options)
    splits = _read_splits(frame, csv_path, options)
    paths = np.array(resolve_paths(root, frame[image_column], csv_path, image_column,
                                   allow_outside_root=options.allow_outside_root), dtype=object)
    return ImageTable(paths=paths, labels=labels, class_names=class_names, task=task, splits=splits,
                      groups=frame[options.group_column].to_numpy(object) if options.group_column else None,
                      source=str(csv_path))


def _read_frame(csv_path: Path):
    """Every cell as text ("NA" stays "NA": _read_labels decides what a missing value is)."""
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise MobilemedError(f"label table {csv_path} is empty; it needs a header row and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise MobilemedError(f"label table {csv_path} is not a readable UTF-8 CSV file ({err}); save it as CSV "
                             "(comma-separated, UTF-8)") from None
    if frame.empty:
        raise MobilemedError(f"label table {csv_path} has a header but no rows; add one row per image")
    return frame


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
        if not (values == "1").any().any():
            raise MobilemedError(f"{csv_path}: no row has a 1 in any of the label columns "
                                 f"{', '.join(options.label_columns)}; check --label-columns")
        return values.to_numpy(np.float32), list(options.label_columns), "multilabel"
    column = options.label_column or ("label" if "label" in frame.columns else None)
    if column is None:
        raise MobilemedError(f"{csv_path}: say which column holds the labels with --label-column NAME, or "
                             f"--label-columns A,B,C for multi-hot columns; columns are: {', '.join(frame.columns)}")
    if options.label_sep:  # "Effusion|Mass" strings -> multi-hot
        return _read_joined_labels(frame[column], csv_path, column, options.label_sep)
    values = frame[column].str.strip()
    _refuse_missing_labels(values, csv_path, column)
    class_names = sorted(values.unique(), key=_natural_key)
    if len(class_names) < 2:
        raise MobilemedError(f"{csv_path}: found 1 class ({class_names[0]!r}) in column {column!r}; a classifier "
                             "needs at least two classes, so add rows of the other class(es)")
    labels = values.map({name: i for i, name in enumerate(class_names)}).to_numpy(np.int64)
    return labels, class_names, "binary" if len(class_names) == 2 else "multiclass"


def _read_joined_labels(column_values, csv_path: Path, column: str, sep: str):
    """"Effusion|Mass" strings -> multi-hot; an empty string is an image with no finding."""
    sets = [{name.strip() for name in v.split(sep)} - {""} for v in column_values]
    for row, names in enumerate(sets):
        missing = sorted(n for n in names if n.lower() in MISSING_LABELS)
        if missing:
            raise MobilemedError(f"{csv_path}: row {row + 2} of column {column!r} lists {missing[0]!r}, which marks "
                                 "a missing value, not a finding; write the findings, or leave it empty for none")
    class_names = sorted(set().union(*sets))
    if not class_names:
        raise MobilemedError(f"{csv_path}: column {column!r} lists no finding in any row (split on {sep!r}); "
                             "check --label-column and --label-sep")
    labels = np.array([[name in s for name in class_names] for s in sets], dtype=np.float32)
    return labels, class_names, "multilabel"


def _refuse_missing_labels(values, csv_path: Path, column: str) -> None:
    missing = values.str.lower().isin(MISSING_LABELS)
    if missing.any():
        row = int(np.argmax(missing.to_numpy()))
        raise MobilemedError(f"{csv_path}: row {row + 2} has {values.iloc[row]!r} in column {column!r} "
                             f"({int(missing.sum())} row(s) in all), a missing label, not a class; fill in every "
                             "label or remove those rows")


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


def resolve_paths(root: Path, values, csv_path: Path, column: str, *, allow_outside_root: bool = False) -> list[str]:
    """Each path as written, relative to root (absolute paths as they are). Never guessed: every file must
    exist, and must lie under root (judged on the written path, so a symlinked folder under root is fine)
    unless allow_outside_root."""
    resolved, missing, outside = [], [], []
    root_text = os.path.normpath(os.path.abspath(root))
    for row, value in enumerate(values):
        path = os.path.normpath(os.path.join(root_text, os.path.expanduser(value.strip())))
        if not allow_outside_root and os.path.commonpath([root_text, path]) != root_text:
            outside.append((row, value))
        elif not os.path.isfile(path):
            missing.append((row, value))
        resolved.append(path)
    if outside:
        raise MobilemedError(f"{csv_path}: {len(outside)} path(s) in column {column!r} lead outside the image root "
                             f"{root_text} ({_rows(outside)}); pass --image-root to the folder that holds them, or "
                             "--allow-outside-root to read them anyway")
    if missing:
        raise MobilemedError(f"{csv_path}: {len(missing)} of {len(resolved)} image(s) in column {column!r} do not "
                             f"exist under {root_text} ({_rows(missing)}); paths are read relative to that folder: "
                             "fix the paths or pass --image-root")
    return resolved


def _rows(rows: list[tuple[int, str]]) -> str:
    shown = ", ".join(f"row {row + 2}: {value!r}" for row, value in rows[:SHOWN_MISSING])
    return shown + (", ..." if len(rows) > SHOWN_MISSING else "")
