"""Patient-level, stratified train/val/test splits.

Rows are split as units: a patient (table.groups) when known, else an image with any byte-identical
copies of it (so no copy lands in another split). Units are dealt
out by iterative stratification (Sechidis, Tsoumakas & Vlahavas, ECML 2011), which keeps every class's
share close to the requested fractions: for one label per image it is an exact stratified split, for
multi-label it balances each finding (and "no finding") in turn, rarest first. Seeded and deterministic.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

import numpy as np

from mobilemed.data.duplicates import pixels_sha1, sha1_where_sizes_collide
from mobilemed.data.table import SPLITS, ImageTable
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)


def assign_splits(table: ImageTable, *, val_fraction: float = 0.1, test_fraction: float = 0.2,
                  seed: int = 0) -> ImageTable:
    """Give a split to every row whose split is "" (given splits are kept).

    A patient that already has a given split keeps all of its rows there; the other patients are
    split val_fraction / test_fraction / rest into val / test / train, never across two splits.
    Returns: a new table.
    """
    splits = _spread_given_splits(table)
    todo = splits == ""
    if todo.any():
        names, fractions = _split_fractions(val_fraction, test_fraction)
        choice = _stratify_rows(table, todo, fractions, seed)
        splits[todo] = np.array(names, dtype=object)[choice]
    return replace(table, splits=splits)


def carve_validation(table: ImageTable, fraction: float, seed: int = 0) -> ImageTable:
    """Move `fraction` of the train rows (whole patients, stratified) to val; other splits are untouched."""
    train = table.splits == "train"
    if not train.any() or fraction <= 0:
        return table
    choice = _stratify_rows(table, train, np.array([1.0 - fraction, fraction]), seed)
    splits = table.splits.copy()
    splits[train] = np.array(["train", "val"], dtype=object)[choice]
    return replace(table, splits=splits)


def assign_folds(table: ImageTable, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold index in 0..folds-1 for every row: whole patients (or identical images) in one fold, every
    class spread evenly over the folds (the same iterative stratification as the splits)."""
    return _stratify_rows(table, np.ones(len(table), bool), np.full(folds, 1.0 / folds), seed)


def split_summary(table: ImageTable) -> dict:
    """{split: {"images", "patients" (when groups are known), "classes": {name: {"count", "prevalence"}}}}.

    Splits come in train / val / test order; rows without a split appear under "unassigned".
    """
    summary = {}
    present = [s for s in SPLITS if (table.splits == s).any()] + ([""] if (table.splits == "").any() else [])
    for split in present:
        part = table.split(split)
        counts = part.class_counts()
        entry = {"images": len(part)}
        if part.groups is not None:
            entry["patients"] = len(set(part.groups))
        entry["classes"] = {name: {"count": int(c), "prevalence": round(float(c) / len(part), 4)}
                            for name, c in zip(table.class_names, counts)}
        summary[split or "unassigned"] = entry
    return summary


def groups_across_splits(table: ImageTable) -> dict[str, list[str]]:
    """Patients (groups) whose rows sit in more than one split: {group: sorted splits}. Empty without groups."""
    if table.groups is None:
        return {}
    seen: dict[str, set] = {}
    for group, split in zip(table.groups, table.splits):
        if split:
            seen.setdefault(str(group), set()).add(split)
    order = {name: i for i, name in enumerate(SPLITS)}
    return {g: sorted(s, key=lambda x: order.get(x, 9)) for g, s in seen.items() if len(s) > 1}


def iterative_stratification(counts: np.ndarray, sizes: np.ndarray, fractions: np.ndarray,
                             rng: np.random.Generator) -> np.ndarray:
    """One pass dealing units out to subsets so each label's total lands close to fractions.

    counts: (U, L) positives of each label in each unit; sizes: (U,) rows per unit;
    fractions: (S,) summing to 1. Returns: (U,) subset index per unit.
    Within a label, units with more positives go first (large patients are placed while there is
    room, small ones fill the gaps), ties in random order.
    """
    desired = fractions[:, None] * counts.sum(axis=0)[None, :]  # (S, L) positives still wanted
    wanted = fractions * sizes.sum()  # (S,) rows still wanted
    choice = np.full(len(counts), -1)
    order = rng.permutation(len(counts))
    while True:
        remaining = counts[choice == -1].sum(axis=0)
        if not remaining.any():
            break
        label = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))  # rarest label first
        units = order[(choice[order] == -1) & (counts[order, label] > 0)]
        for unit in units[np.argsort(-counts[units, label], kind="stable")]:
            subset = _pick_subset(desired[:, label], wanted, rng)
            choice[unit] = subset
            desired[subset] -= counts[unit]
            wanted[subset] -= sizes[unit]
    rest = order[choice[order] == -1]  # units without any label: fill by size, largest first
    for unit in rest[np.argsort(-sizes[rest], kind="stable")]:
        subset = _pick_subset(wanted, wanted, rng)
        choice[unit] = subset
        wanted[subset] -= sizes[unit]
    return choice


def stratification_error(counts: np.ndarray, sizes: np.ndarray, fractions: np.ndarray,
                         choice: np.ndarray) -> float:
    """How far a dealing is from its goal: the largest gap between a label's prevalence in a subset and
    overall, plus the subsets' relative size error."""
    got = np.stack([counts[choice == s].sum(axis=0) for s in range(len(fractions))])  # (S, L)
    rows = np.array([sizes[choice == s].sum() for s in range(len(fractions))])  # (S,)
    gap = np.abs(got / np.maximum(rows, 1)[:, None] - counts.sum(axis=0) / sizes.sum())
    return float(gap.max() + np.abs(rows - fractions * sizes.sum()).sum() / sizes.sum())


def _best_stratification(counts, sizes, fractions, seed: int) -> np.ndarray:
    """Greedy passes are sensitive to order when patients are few and large: keep the best of several
    seeded passes (up to 64, fewer for big tables, where one pass is already close)."""
    rng = np.random.default_rng(seed)
    tries = int(np.clip(100_000 // max(len(counts), 1), 1, 64))
    passes = [iterative_stratification(counts, sizes, fractions, rng) for _ in range(tries)]
    return min(passes, key=lambda choice: stratification_error(counts, sizes, fractions, choice))


def _pick_subset(need: np.ndarray, wanted: np.ndarray, rng: np.random.Generator) -> int:
    """The subset that most needs this label; ties go to the one wanting most rows, then at random.
    Plain lists: called once per unit per pass (~100,000 times for Kermany), where numpy's per-call
    overhead on 2-3 elements cost a second."""
    need, wanted = need.tolist(), wanted.tolist()
    top = max(need)
    best = [i for i, value in enumerate(need) if value == top]
    if len(best) > 1:
        most = max(wanted[i] for i in best)
        best = [i for i in best if wanted[i] == most]
    return best[0] if len(best) == 1 else int(rng.choice(best))


def _stratify_rows(table: ImageTable, rows: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """(rows.sum(),) subset index for the selected rows, whole groups together."""
    units, unit_of_row = _units(table, rows)
    label_matrix = _label_matrix(table)[rows]
    counts = np.zeros((len(units), label_matrix.shape[1]), np.int64)
    np.add.at(counts, unit_of_row, label_matrix)
    sizes = np.bincount(unit_of_row, minlength=len(units))
    choice = _best_stratification(counts, sizes, fractions, seed)
    return choice[unit_of_row]


def _units(table: ImageTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit ids and each selected row's unit index: patients, or else images, identical copies together."""
    if table.groups is not None:
        keys = [str(g) for g in table.groups[rows]]
    else:
        keys = _content_keys(table, rows)
    return np.unique(np.array(keys, dtype=object), return_inverse=True)


def _content_keys(table: ImageTable, rows: np.ndarray) -> list[str]:
    """Without patients, byte-identical images (common in public sets) still belong in one split."""
    index = np.flatnonzero(rows)
    if table.images is not None:
        hashes = [pixels_sha1(table.images[i]) for i in index]
    else:
        hashes = sha1_where_sizes_collide(table.paths[index], range(len(index)))
    keys = [digest or f"row:{i}" for i, digest in zip(index, hashes)]
    if len(set(keys)) < len(keys):
        log.info("kept %d identical image copies in the same split", len(keys) - len(set(keys)))
    return keys


def _label_matrix(table: ImageTable) -> np.ndarray:
    """(N, L) 0/1 label indicators: one-hot classes, or findings plus a "no finding" column."""
    if table.is_multilabel:
        labels = (np.asarray(table.labels) > 0.5).astype(np.int64)
        return np.concatenate([labels, (labels.sum(axis=1) == 0)[:, None].astype(np.int64)], axis=1)
    return np.eye(len(table.class_names), dtype=np.int64)[np.asarray(table.labels, dtype=np.int64)]


def _split_fractions(val_fraction: float, test_fraction: float) -> tuple[list[str], np.ndarray]:
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise MobilemedError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must be >= 0 "
                             "and add up to less than 1")
    names, fractions = ["train"], [1.0 - val_fraction - test_fraction]
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0:
            names.append(name)
            fractions.append(fraction)
    return names, np.array(fractions)


def _spread_given_splits(table: ImageTable) -> np.ndarray:
    """Copy of the splits where every unassigned row of a patient with a given split joins that split."""
    splits = table.splits.copy()
    if table.groups is None or not (splits == "").any():
        return splits
    given: dict[str, Counter] = {}
    for group, split in zip(table.groups, splits):
        if split:
            given.setdefault(str(group), Counter())[split] += 1
    for i in np.flatnonzero(splits == ""):
        votes = given.get(str(table.groups[i]))
        if votes:  # a patient split across given splits joins its most common one
            splits[i] = votes.most_common(1)[0][0]
    return splits


def apply_saved_split(table: ImageTable, split_csv) -> ImageTable | None:
    """The table with the splits a run recorded in its split.csv, so a model is evaluated on the very
    images it was tested on. None when split.csv does not list every image of the table (other data)."""
    import csv

    with open(split_csv, newline="") as handle:
        saved = {row["path"]: row["split"] for row in csv.DictReader(handle)}
    splits = [saved.get(str(path)) for path in table.paths]
    if any(split is None for split in splits):
        return None
    return replace(table, splits=np.array(splits, dtype=object))
