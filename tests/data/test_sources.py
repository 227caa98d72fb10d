"""Every data source reads into an ImageTable with the right task, classes and splits."""
import numpy as np
import pytest
from PIL import Image

from mobilemed.data.sources import DataOptions, load_table
from mobilemed.errors import MobilemedError
from tests.conftest import make_blob_folder


def test_image_folder_with_train_val_test(blob_folder):
    table = load_table(str(blob_folder))
    assert table.task == "binary" and table.class_names == ["normal", "pneumonia"]
    assert {s: int((table.splits == s).sum()) for s in ("train", "val", "test")} == {"train": 24, "val": 24, "test": 24}


def test_train_test_only_carves_validation_from_train(tmp_path):
    root = make_blob_folder(tmp_path / "d", per_class=20, splits=("train", "test"))
    table = load_table(str(root), DataOptions(val_fraction=0.25))
    counts = {s: int((table.splits == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 30, "val": 10, "test": 40}
    assert set(table.labels[table.splits == "val"]) == {0, 1}  # stratified


def test_class_folders_alone_are_split_stratified_and_seeded(tmp_path):
    root = make_blob_folder(tmp_path / "d", per_class=30, splits=("",))
    a = load_table(str(root), DataOptions(val_fraction=0.2, test_fraction=0.2, seed=3))
    b = load_table(str(root), DataOptions(val_fraction=0.2, test_fraction=0.2, seed=3))
    assert (a.splits == b.splits).all()
    for split in ("train", "val", "test"):
        labels = a.labels[a.splits == split]
        assert abs(labels.mean() - 0.5) < 0.15


def test_csv_manifest_single_label_and_joined_multilabel(tmp_path):
    for i in range(6):
        Image.fromarray(np.full((8, 8), i * 30, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "single.csv").write_text("path,label,split\n" + "\n".join(
        f"{i}.png,{'b' if i % 2 else 'a'},{'train' if i < 2 else 'val' if i < 4 else 'test'}" for i in range(6)))
    single = load_table(str(tmp_path / "single.csv"), DataOptions(split_column="split"))
    assert single.task == "binary" and single.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert single.splits.tolist() == ["train", "train", "val", "val", "test", "test"]
    (tmp_path / "multi.csv").write_text("file,findings,split\n" + "\n".join(
        f"{i}.png,{'Mass|Effusion' if i % 2 else 'No Finding'},{'train' if i < 2 else 'val' if i < 4 else 'test'}"
        for i in range(6)))
    multi = load_table(str(tmp_path / "multi.csv"),
                       DataOptions(label_column="findings", label_sep="|", split_column="split"))
    assert multi.task == "multilabel" and multi.class_names == ["Effusion", "Mass", "No Finding"]
    assert multi.labels[1].tolist() == [1, 1, 0]


def test_csv_bad_split_value_is_named(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,split\na.png,x,training\nb.png,y,holdout\n")
    with pytest.raises(MobilemedError, match="'holdout'"):
        load_table(str(tmp_path / "m.csv"), DataOptions(split_column="split"))


def test_medmnist_official_split(imagenet_cache):
    table = load_table("pneumoniamnist")
    assert table.task == "binary" and table.class_names == ["normal", "pneumonia"]
    assert [int((table.splits == s).sum()) for s in ("train", "val", "test")] == [4708, 524, 624]
    assert table.images.shape == (5856, 28, 28)
    assert (table.labels[table.splits == "test"] == 1).mean() == pytest.approx(0.625)
