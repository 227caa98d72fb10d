"""The checks a training run makes on its split: duplicates within a split, label conflicts, no test split."""
import logging
import shutil

import pytest

from mobilemed.data.sources import DataOptions, load_table
from mobilemed.errors import MobilemedError
from mobilemed.training.leakage import check_leakage, duplicates_and_conflicts
from tests.conftest import make_blob_folder


def test_duplicates_within_a_split_and_label_conflicts_are_found(tmp_path):
    root = make_blob_folder(tmp_path / "d", per_class=4)
    shutil.copy(root / "train/normal/normal_0.png", root / "train/normal/normal_0_again.png")
    shutil.copy(root / "val/normal/normal_1.png", root / "val/pneumonia/relabelled.png")
    table = load_table(str(root))
    duplicates, conflicts = duplicates_and_conflicts(table)
    assert [[p.rsplit("/", 1)[1] for p in group] for group in duplicates] == [["normal_0.png", "normal_0_again.png"],
                                                                              ["normal_1.png", "relabelled.png"]]
    assert len(conflicts) == 1 and conflicts[0][0].endswith("normal_1.png = normal")
    assert conflicts[0][1].endswith("relabelled.png = pneumonia")


def test_train_warns_loudly_and_strict_stops(tmp_path, caplog):
    root = make_blob_folder(tmp_path / "d", per_class=4)
    shutil.copy(root / "train/normal/normal_0.png", root / "train/pneumonia/copy.png")
    table = load_table(str(root))
    with caplog.at_level(logging.WARNING):
        check_leakage(table, strict=False)
    assert "DUPLICATES in the data" in caplog.text and "carry different labels" in caplog.text
    assert "copy.png = pneumonia" in caplog.text
    with pytest.raises(MobilemedError, match="appear more than once within a split.*--strict"):
        check_leakage(table, strict=True)


def test_no_test_split_is_announced_with_the_ways_to_add_one(tmp_path, caplog):
    root = make_blob_folder(tmp_path / "d", per_class=4, splits=("train", "val"))
    with caplog.at_level(logging.WARNING):
        check_leakage(load_table(str(root)), strict=False)
    assert "has no test split" in caplog.text and "validation only" in caplog.text
    assert "--test-fraction" in caplog.text and "--resplit" in caplog.text and "DUPLICATES" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_leakage(load_table(str(make_blob_folder(tmp_path / "e", per_class=4))), strict=False)
    assert caplog.text == ""
