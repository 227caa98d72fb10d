"""Patient-grouped, stratified, seeded splits."""
from dataclasses import replace

import numpy as np
import pytest

from mobilemed.data.splits import (assign_splits, carve_validation, groups_across_splits,
                                   iterative_stratification, split_summary)
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError


def single_label_table(labels, groups=None, splits=None):
    n = len(labels)
    return ImageTable(paths=np.array([f"{i}.png" for i in range(n)], dtype=object),
                      labels=np.asarray(labels, dtype=np.int64), class_names=["a", "b", "c"][: max(labels) + 1],
                      task="binary" if max(labels) == 1 else "multiclass",
                      splits=np.array(splits if splits is not None else [""] * n, dtype=object),
                      groups=None if groups is None else np.array(groups, dtype=object))


def counts(table):
    return {s: int((table.splits == s).sum()) for s in ("train", "val", "test")}


def test_iterative_stratification_is_exact_for_single_labels():
    one_hot = np.repeat(np.eye(2, dtype=np.int64), [60, 40], axis=0)  # 60 of class 0, 40 of class 1
    choice = iterative_stratification(one_hot, np.ones(100, np.int64), np.array([0.7, 0.1, 0.2]),
                                      np.random.default_rng(0))
    per_subset = [one_hot[choice == s].sum(axis=0).tolist() for s in range(3)]
    assert per_subset == [[42, 28], [6, 4], [12, 8]]


def test_ungrouped_single_label_split_is_stratified_and_seeded():
    table = single_label_table([0] * 150 + [1] * 50)
    a, b = assign_splits(table, seed=1), assign_splits(table, seed=1)
    assert (a.splits == b.splits).all() and not (a.splits == assign_splits(table, seed=2).splits).all()
    assert counts(a) == {"train": 140, "val": 20, "test": 40}
    for split in ("train", "val", "test"):
        assert a.labels[a.splits == split].mean() == pytest.approx(0.25)


def test_grouped_split_never_separates_a_patient():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(80)], rng.integers(1, 6, 80))
    labels = (rng.random(len(groups)) < 0.3).astype(int).tolist()
    table = assign_splits(single_label_table(labels, groups=groups), val_fraction=0.2, test_fraction=0.2)
    assert groups_across_splits(table) == {}
    sizes = counts(table)
    assert abs(sizes["val"] / len(table) - 0.2) < 0.05 and abs(sizes["test"] / len(table) - 0.2) < 0.05


def test_given_splits_are_kept_and_their_patients_follow():
    table = single_label_table([0, 1] * 10, groups=[f"p{i // 2}" for i in range(20)],
                               splits=["test", ""] + [""] * 18)
    result = assign_splits(table, seed=0)
    assert result.splits[0] == "test" and result.splits[1] == "test"  # p0's unlabelled row joins p0's split
    assert groups_across_splits(result) == {}


def test_carve_validation_moves_whole_patients_from_train_only():
    groups = [f"p{i // 2}" for i in range(60)]
    splits = ["train"] * 40 + ["test"] * 20
    table = carve_validation(single_label_table([i % 2 for i in range(60)], groups=groups, splits=splits), 0.25)
    assert counts(table) == {"train": 30, "val": 10, "test": 20}
    assert (table.splits[40:] == "test").all() and groups_across_splits(table) == {}


def test_multilabel_split_keeps_every_finding_prevalence_close():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(400).astype(str), rng.integers(1, 5, 400))
    prevalence = np.array([0.3, 0.1, 0.05, 0.02])
    labels = (rng.random((len(groups), 4)) < prevalence).astype(np.float32)
    table = ImageTable(paths=np.arange(len(groups)).astype(str), labels=labels, class_names=list("ABCD"),
                       task="multilabel", splits=np.full(len(groups), "", dtype=object), groups=groups)
    result = assign_splits(table, seed=0)
    overall = labels.mean(axis=0)
    for split in ("train", "val", "test"):
        part = labels[result.splits == split]
        assert np.abs(part.mean(axis=0) - overall).max() < 0.02
    assert groups_across_splits(result) == {}


def test_full_nih_table_split_balances_all_14_findings(shared, tmp_path):
    from mobilemed.data.nih import read_nih_table

    table = read_nih_table(shared / "data/nih_labels/Data_Entry_2017_v2020.csv.gz", tmp_path, require_images=False)
    result = assign_splits(table, seed=0)
    summary = split_summary(result)
    assert groups_across_splits(result) == {}
    for name, overall in zip(table.class_names, table.labels.mean(axis=0)):
        for split in ("train", "val", "test"):
            assert summary[split]["classes"][name]["prevalence"] == pytest.approx(overall, abs=0.002)


def test_split_summary_counts_and_prevalence():
    table = single_label_table([0, 0, 1, 1, 1], groups=["a", "a", "b", "c", "c"],
                               splits=["train", "train", "train", "test", "test"])
    summary = split_summary(table)
    assert list(summary) == ["train", "test"]
    assert summary["train"] == {"images": 3, "patients": 2, "classes": {
        "a": {"count": 2, "prevalence": 0.6667}, "b": {"count": 1, "prevalence": 0.3333}}}
    assert split_summary(replace(table, splits=np.full(5, "", dtype=object)))["unassigned"]["images"] == 5


def test_bad_fractions_are_refused():
    with pytest.raises(MobilemedError, match="--val-fraction 0.5 and --test-fraction 0.5"):
        assign_splits(single_label_table([0, 1] * 5), val_fraction=0.5, test_fraction=0.5)


def test_identical_images_stay_in_one_split_without_patients(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
        paths.append(str(path))
    for i in range(10):  # ten exact copies under other names
        (tmp_path / f"copy{i}.png").write_bytes((tmp_path / f"{i}.png").read_bytes())
        paths.append(str(tmp_path / f"copy{i}.png"))
    table = single_label_table([i % 2 for i in range(40)] + [i % 2 for i in range(10)])
    table = replace(table, paths=np.array(paths, dtype=object))
    for seed in range(3):
        splits = assign_splits(table, val_fraction=0.3, test_fraction=0.3, seed=seed).splits
        assert (splits[:10] == splits[40:]).all()
