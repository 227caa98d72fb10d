"""The positive class of a binary task is the finding (data/positive_class.py), for every source."""
import logging
from pathlib import Path

import numpy as np
import pytest

from mobilemed.cli.main import build_parser
from mobilemed.cli.train import config_from_args
from mobilemed.data.positive_class import looks_negative
from mobilemed.data.sources import DataOptions, load_table, read_source
from mobilemed.errors import MobilemedError
from tests.data.test_layouts import make_tree


@pytest.mark.parametrize("name, negative", [
    ("normal", True), ("NORMAL", True), ("0_normal", True), ("No Finding", True), ("no_finding", True),
    ("NoFinding", True), ("benign", True), ("normal, benign", True), ("Healthy", True), ("control", True),
    ("negative", True), ("no_tumor", True), ("non-covid", True), ("0", True),
    ("abnormal", False), ("1_abnormal", False), ("PNEUMONIA", False), ("malignant", False), ("nodule", False),
    ("1", False), ("positive", False), ("normal, malignant", False)])
def test_names_that_say_nothing_was_found(name, negative):
    assert looks_negative(name) is negative


@pytest.mark.parametrize("classes, positive", [
    (("NORMAL", "PNEUMONIA"), "PNEUMONIA"), (("benign", "malignant"), "malignant"),
    (("0_normal", "1_abnormal"), "1_abnormal"), (("abnormal", "normal"), "abnormal"),
    (("Healthy", "Glaucoma"), "Glaucoma")])
def test_folder_classes_put_the_finding_second(tmp_path, classes, positive):
    root = make_tree(tmp_path / "d", {classes[0]: 2, classes[1]: 3})
    table = read_source(str(root), DataOptions())
    assert table.class_names[1] == positive
    sizes = {c: int((table.labels == table.class_names.index(c)).sum()) for c in classes}
    assert sizes == {classes[0]: 2, classes[1]: 3}  # labels follow the new order
    assert all(Path(path).parent.name == table.class_names[label] for path, label in zip(table.paths, table.labels))


def test_positive_class_flag_overrides_and_ambiguity_warns(tmp_path, caplog):
    root = make_tree(tmp_path / "d", {"benign": 2, "malignant": 3})
    assert read_source(str(root), DataOptions(positive_class="BENIGN")).class_names == ["malignant", "benign"]
    with pytest.raises(MobilemedError, match="'cyst' is not a class.*benign, malignant"):
        read_source(str(root), DataOptions(positive_class="cyst"))
    pets = make_tree(tmp_path / "pets", {"cat": 2, "dog": 2})
    with caplog.at_level(logging.WARNING):
        assert read_source(str(pets), DataOptions()).class_names == ["cat", "dog"]
    assert "positive class is 'dog'" in caplog.text and "--positive-class" in caplog.text
    three = make_tree(tmp_path / "three", {"a": 1, "b": 1, "c": 1})
    with pytest.raises(MobilemedError, match="applies to binary tasks"):
        read_source(str(three), DataOptions(positive_class="a"))


def test_csv_labels_put_the_finding_second(tmp_path):
    make_tree(tmp_path, {"img": 4})
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(
        f"img/img_{i}.png,{'Pneumonia' if i % 2 else 'No Finding'}" for i in range(4)))
    table = read_source(str(tmp_path / "m.csv"), DataOptions())
    assert table.class_names == ["No Finding", "Pneumonia"] and table.labels.tolist() == [0, 1, 0, 1]


def test_train_takes_positive_class(blob_folder):
    args = build_parser(["train"])[0].parse_args(["train", str(blob_folder), "--positive-class", "normal"])
    config = config_from_args(args)
    assert load_table(config.data, config.data_options).class_names == ["pneumonia", "normal"]


def test_breastmnist_positive_class_is_malignant(imagenet_cache, shared):
    with np.load(shared / "data/medmnist/breastmnist.npz") as npz:
        malignant_in_test = int((npz["test_labels"][:, 0] == 0).sum())  # MedMNIST: 0 malignant, 1 normal, benign
    table = load_table("breastmnist")
    assert table.class_names == ["normal, benign", "malignant"]
    assert int((table.labels[table.splits == "test"] == 1).sum()) == malignant_in_test > 0
    flipped = load_table("breastmnist", DataOptions(positive_class="normal, benign"))
    assert flipped.class_names == ["malignant", "normal, benign"]
    assert int((flipped.labels[flipped.splits == "test"] == 0).sum()) == malignant_in_test
    assert load_table("pneumoniamnist").class_names == ["normal", "pneumonia"]
