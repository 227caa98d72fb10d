"""The split checks every training run makes before it spends any time: leakage across splits, duplicate
images and label conflicts (what `mobilemed audit` reports), and a missing test split."""
from __future__ import annotations

import logging

import numpy as np

from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)
SHOWN = 3  # examples named per finding


def check_leakage(table: ImageTable, *, strict: bool) -> None:
    """Warn loudly (or, strict, stop) when patients or identical images cross splits, when an image is in a
    split twice or carries two labels; say so when there is no test split."""
    from mobilemed.data.audit import cross_split_checks

    report = cross_split_checks(table)
    if report.has_leakage:
        message = "LEAKAGE across splits: " + report.format_text().strip().replace("\n", "; ")
        if strict:
            raise MobilemedError(message + " (--strict); re-split with --resplit (and --group-column or "
                                 "--group-pattern) or fix the data")
        log.warning("%s", message)
        log.warning("results may look better than they are; run `mobilemed audit` for details, or train with "
                    "--resplit (and --group-column or --group-pattern when the data has patients) for a "
                    "patient-grouped split")
    check_duplicates(table, strict=strict)
    warn_without_test_split(table)


def check_duplicates(table: ImageTable, *, strict: bool) -> None:
    """Byte-identical images twice in one split (they weigh double) or under different labels (one label is
    wrong): warned, or refused with strict."""
    duplicates, conflicts = duplicates_and_conflicts(table)
    problems = []
    if duplicates:
        problems.append(f"{len(duplicates)} image(s) appear more than once within a split ({_examples(duplicates)})")
    if conflicts:
        problems.append(f"{len(conflicts)} image(s) carry different labels ({_examples(conflicts)})")
    if not problems:
        return
    message = "DUPLICATES in the data: " + "; ".join(problems)
    if strict:
        raise MobilemedError(message + " (--strict); remove the copies or fix the labels (`mobilemed audit` lists all)")
    log.warning("%s; run `mobilemed audit` for the full list, and --strict to stop on this", message)


def duplicates_and_conflicts(table: ImageTable) -> tuple[list[list[str]], list[list[str]]]:
    """Groups of identical images (paths, or MedMNIST row names): those with two members in one split, and
    those whose members disagree on the label. Only files that share a byte size are read."""
    from mobilemed.data.audit import label_texts
    from mobilemed.data.duplicates import pixels_sha1, same_value_groups, sha1_where_sizes_collide

    if table.images is not None:
        hashes = [pixels_sha1(pixels) for pixels in table.images]
        names = [f"row {i}" for i in range(len(table))]
    else:
        hashes = sha1_where_sizes_collide(table.paths, np.arange(len(table)))
        names = [str(p) for p in table.paths]
    texts = label_texts(table)
    duplicates, conflicts = [], []
    for rows in same_value_groups(hashes):
        splits = [table.splits[i] for i in rows]
        members = [names[i] for i in rows]
        if len(set(splits)) < len(splits):
            duplicates.append(members)
        if len({texts[i] for i in rows}) > 1:
            conflicts.append([f"{name} = {texts[i]}" for name, i in zip(members, rows)])
    return duplicates, conflicts


def warn_without_test_split(table: ImageTable) -> None:
    if not (table.splits == "test").any():
        log.warning("%s has no test split: every metric of this run will be on validation only, which also "
                    "chose the threshold (optimistic). Add a test/ folder, a split column (--split-column) with "
                    "test rows, or --test-fraction F with --resplit", table.source)


def _examples(groups: list[list[str]]) -> str:
    shown = "; ".join(" and ".join(group[:2]) for group in groups[:SHOWN])
    return shown + ("; ..." if len(groups) > SHOWN else "")
