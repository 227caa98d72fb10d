"""Folder conventions of published data sets (data/layout.py): split folders are never classes, ambiguous
layouts stop with the flag that settles them, masks are not images, symlinks never loop."""
import json
import logging
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mobilemed.cli.main import main
from mobilemed.data.layout import parse_split_mapping, split_of_name
from mobilemed.data.sources import DataOptions, load_table, read_source
from mobilemed.errors import MobilemedError
from tests.conftest import tiny_train_args


def make_tree(root, layout: dict[str, int], size: int = 32, seed: int = 0):
    """Files from {"Training/a": 3, "Training/b/x_mask.png": 1, ...}: a folder gets n PNGs (class-dependent
    brightness, so a tiny model can learn), a path ending in .png is one file."""
    rng = np.random.default_rng(seed)
    for relative, n in layout.items():
        target = root / relative
        paths = [target] if target.suffix else [target / f"{target.name}_{i}.png" for i in range(n)]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            level = 40 + 40 * (sum(map(ord, path.parent.name)) % 5)
            pixels = np.clip(rng.normal(level, 10, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(path)
    return root


def counts(table) -> dict:
    return dict(Counter((split, table.class_names[label]) for split, label in zip(table.splits, table.labels)))


TRAINING_TESTING = {f"{split}/{c}": n for split, n in (("Training", 4), ("Testing", 2)) for c in "abcd"}


@pytest.mark.parametrize("name, split", [
    ("train", "train"), ("Training", "train"), ("TRN", "train"), ("training_set", "train"), ("trainset", "train"),
    ("val", "val"), ("Valid", "val"), ("VALIDATION", "val"), ("dev", "val"), ("tune", "val"),
    ("test", "test"), ("Testing", "test"), ("tst", "test"), ("test_images", "test"),
    ("eval", None), ("evaluation", None), ("holdout", None), ("development", None), ("train_masks", None),
    ("NORMAL", None), ("trainee", None)])
def test_split_names(name, split):
    assert split_of_name(name) == split


def test_training_testing_is_four_classes_with_train_and_test(tmp_path):
    root = make_tree(tmp_path / "brain", TRAINING_TESTING)
    table = read_source(str(root), DataOptions())
    assert table.task == "multiclass" and table.class_names == ["a", "b", "c", "d"]
    assert counts(table) == {**{("train", c): 4 for c in "abcd"}, **{("test", c): 2 for c in "abcd"}}
    full = load_table(str(root), DataOptions(val_fraction=0.25))  # validation carved from Training only
    assert sorted(set(full.splits)) == ["test", "train", "val"] and (full.splits == "test").sum() == 8


def test_split_folders_beside_other_folders_stop_with_the_flag(tmp_path):
    """Kaggle's Kermany archive: chest_xray/ holds train/ test/ val/, a second chest_xray/ and __MACOSX/."""
    root = tmp_path / "chest_xray"
    layout = {f"{top}{split}/{c}": 2 for top in ("", "chest_xray/") for split in ("train", "test", "val")
              for c in ("NORMAL", "PNEUMONIA")}
    make_tree(root, {**layout, "__MACOSX/train/NORMAL": 1})
    with pytest.raises(MobilemedError) as err:
        read_source(str(root), DataOptions())
    message = str(err.value)
    assert "--split-folders train=train,val=val,test=test" in message and "chest_xray/" in message
    assert "__MACOSX" not in message  # archive-tool folders are not data
    table = read_source(str(root), DataOptions(split_folders=parse_split_mapping("train=train,val=val,test=test",
                                                                                 many_to_one=False)))
    assert len(table) == 12 and table.class_names == ["NORMAL", "PNEUMONIA"]


@pytest.mark.parametrize("layout, expected", [
    ({"train/a": 2, "train/b": 2, "training/a": 2, "training/b": 2}, "--split-folders train=train"),
    ({"train/a": 2, "train/b": 2, "eval/a": 1, "eval/b": 1}, "test=eval"),
    ({"train_images": 3, "test_images": 3}, "--labels"),  # APTOS: images in split folders, labels in a CSV
    ({"train/a": 2, "train/b": 2, "test": 3}, "left out by naming the others with --split-folders"),  # unlabelled
    ({"Training/a": 2, "Training/b": 2, "Testing/a": 2, "Testing/B": 2}, "Testing/: B, a; Training/: a, b"),
    ({"wrapper/train/a": 2, "wrapper/train/b": 2}, "holds the single folder wrapper/ (which holds train/): pass "),
    ({"training_set/training_set/a": 2, "training_set/training_set/b": 2, "test_set/test_set/a": 1,
      "test_set/test_set/b": 1}, "--split-folders train=training_set/training_set,test=test_set/test_set"),
])
def test_ambiguous_layouts_stop_with_what_was_found(tmp_path, layout, expected):
    root = make_tree(tmp_path / "data", layout)
    with pytest.raises(MobilemedError) as err:
        read_source(str(root), DataOptions())
    assert expected in str(err.value)


def test_split_folders_may_name_nested_folders(tmp_path):
    root = make_tree(tmp_path / "cats", {"training_set/training_set/a": 3, "training_set/training_set/b": 3,
                                         "test_set/test_set/a": 1, "test_set/test_set/b": 1})
    options = DataOptions(split_folders={"train": "training_set/training_set", "test": "test_set/test_set"})
    assert counts(read_source(str(root), options)) == {("train", "a"): 3, ("train", "b"): 3, ("test", "a"): 1,
                                                       ("test", "b"): 1}
    with pytest.raises(MobilemedError, match="not a folder.*test_set/, training_set/"):
        read_source(str(root), DataOptions(split_folders={"train": "training"}))


def test_busi_masks_are_not_images_of_their_class(tmp_path, caplog):
    """BUSI: "benign/benign (1).png" with "benign (1)_mask.png" and "benign (1)_mask_1.png" beside it."""
    layout = {}
    for c in ("benign", "malignant", "normal"):
        for i in range(1, 4):
            layout[f"Dataset_BUSI_with_GT/{c}/{c} ({i}).png"] = 1
            layout[f"Dataset_BUSI_with_GT/{c}/{c} ({i})_mask.png"] = 1
        layout[f"Dataset_BUSI_with_GT/{c}/{c} (1)_mask_1.png"] = 1
    root = make_tree(tmp_path, layout) / "Dataset_BUSI_with_GT"
    with caplog.at_level(logging.WARNING):
        table = read_source(str(root), DataOptions())
    assert len(table) == 9 and not any("mask" in os.path.basename(p) for p in table.paths)
    assert "skipped 4 segmentation masks" in caplog.text


def test_mask_folders_are_skipped_but_a_class_about_masks_is_kept(tmp_path):
    covid = make_tree(tmp_path / "covid", {"COVID/images": 3, "COVID/masks": 3, "Normal/images": 2, "Normal/masks": 2})
    assert len(read_source(str(covid), DataOptions())) == 5
    faces = make_tree(tmp_path / "faces", {"with_mask": 3, "without_mask": 2})  # every file is named *mask*
    assert len(read_source(str(faces), DataOptions(positive_class="with_mask"))) == 5


def test_symlinked_class_folders_never_loop(tmp_path, caplog):
    outside = make_tree(tmp_path / "elsewhere", {"c": 2})
    root = make_tree(tmp_path / "data", {"a": 2, "b": 3})
    os.symlink(outside / "c", root / "c")          # a real class kept elsewhere: read, with a warning
    os.symlink(root / "b", root / "b_again")       # a second copy of a class: skipped
    os.symlink(root, root / "loop")                # a loop: skipped
    os.symlink(root, root / "a" / "inner_loop")    # inside a class folder: not followed
    with caplog.at_level(logging.WARNING):
        table = read_source(str(root), DataOptions())
    assert table.class_names == ["a", "b", "c"] and table.class_counts().tolist() == [2, 3, 2]
    assert "loop or a second copy" in caplog.text and "is not followed" in caplog.text


def test_csv_split_values_any_case_and_mapped(tmp_path):
    make_tree(tmp_path, {"img": 6})
    values = ["Training", "TRAIN", "dev", "Valid", "holdout", "external"]
    (tmp_path / "m.csv").write_text("path,label,split\n" + "\n".join(
        f"img/img_{i}.png,{'xy'[i % 2]},{v}" for i, v in enumerate(values)))
    with pytest.raises(MobilemedError, match="'external' \\(1 rows\\), 'holdout' \\(1 rows\\).*--split-values"):
        read_source(str(tmp_path / "m.csv"), DataOptions(split_column="split"))
    mapping = parse_split_mapping("test=holdout,test=External", many_to_one=True)
    table = read_source(str(tmp_path / "m.csv"), DataOptions(split_column="split", split_values=mapping))
    assert table.splits.tolist() == ["train", "train", "val", "val", "test", "test"]


def test_train_audit_and_evaluate_read_training_testing_alike(tmp_path):
    """Brain Tumor MRI's layout: Training/ and Testing/ with the same four class folders."""
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    root = make_tree(tmp_path / "mri", {f"{s}/{c}": n for s, n in (("Training", 5), ("Testing", 3)) for c in classes})
    assert main(["--quiet", "audit", str(root), "--out", str(tmp_path / "audit"), "--near-threshold", "-1"]) == 0
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert audit["class_names"] == classes and list(audit["counts"]) == ["train", "test"]
    assert [audit["counts"][s]["images"] for s in ("train", "test")] == [20, 12]
    run = tmp_path / "run"
    assert main(["--quiet", "train", str(root), "--out", str(run), "--val-fraction", "0.4", *tiny_train_args()]) == 0
    assert json.loads((run / "spec.json").read_text())["class_names"] == classes
    assert main(["--quiet", "evaluate", str(run / "best.pt"), str(root), "--n-bootstrap", "10",
                 "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["n"] == 12 and evaluated["evaluation"]["class_counts"] == dict.fromkeys(classes, 3)


def test_split_flags_are_checked_before_reading(tmp_path, capsys):
    root = make_tree(tmp_path / "d", TRAINING_TESTING)
    with pytest.raises(SystemExit) as stop:
        main(["audit", str(root), "--split-folders", "training=Training"])
    assert stop.value.code == 2 and "SPLIT one of train, val, test" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", str(root), "--split-folders", "train=Training,train=Testing"])
    assert "repeats one" in capsys.readouterr().err
    (tmp_path / "m.csv").write_text("path,label\nd/Training/a/a_0.png,a\nd/Training/b/b_0.png,b\n")
    assert main(["audit", str(tmp_path / "m.csv"), "--split-folders", "train=Training"]) == 2
    assert "--split-column" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "m.csv"), "--split-values", "test=holdout"]) == 2
    assert "name the column with --split-column" in capsys.readouterr().err


def test_class_folders_holding_split_folders_say_the_split_is_made_afresh(tmp_path, caplog):
    root = make_tree(tmp_path / "d", {f"{c}/{s}": 2 for c in ("NORMAL", "PNEUMONIA") for s in ("train", "test")})
    with caplog.at_level(logging.WARNING):
        table = read_source(str(root), DataOptions())
    assert table.class_names == ["NORMAL", "PNEUMONIA"] and set(table.splits) == {""}
    assert "holds split folders (test, train): read as one class and split afresh" in caplog.text
