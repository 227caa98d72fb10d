"""mobilemed evaluate scores the images the run held out, whatever split flags the user repeats."""
import csv
import json

import pytest

from mobilemed.cli.main import main
from tests.conftest import make_blob_folder, tiny_train_args, train_tiny_checkpoint

TINY = tiny_train_args()


def test_evaluate_uses_the_split_the_run_saved(blob_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--quiet", "train", str(blob_folder), "--resplit", "--out", str(run), *TINY]) == 0
    with open(run / "split.csv", newline="") as handle:
        held_out = sum(row["split"] == "test" for row in csv.DictReader(handle))
    assert held_out != 24  # the folders' own test split has 24 images: the resplit differs

    assert main(["--quiet", "evaluate", str(run / "best.pt"), str(blob_folder), "--n-bootstrap", "20",
                 "--out", str(tmp_path / "saved")]) == 0
    assert json.loads((tmp_path / "saved" / "metrics.json").read_text())["n"] == held_out

    other = tmp_path / "other-data"  # data the run never saw: its own folders decide
    (other / "test").mkdir(parents=True)
    for name in ("normal", "pneumonia"):
        (blob_folder / "test" / name).rename(other / "test" / name)
    (blob_folder / "train").rename(other / "train")
    assert main(["--quiet", "evaluate", str(run / "best.pt"), str(other), "--n-bootstrap", "20",
                 "--out", str(tmp_path / "own")]) == 0
    assert json.loads((tmp_path / "own" / "metrics.json").read_text())["n"] == 24


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(best.pt, the folder it was trained on), trained once for the tests below."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), image_px=32, image_size=32)


def test_split_all_scores_every_image_of_external_data(tiny_model, tmp_path, capsys):
    checkpoint, _ = tiny_model
    external = make_blob_folder(tmp_path / "external", per_class=7, size=32, splits=("train", "test"), seed=5)
    for folder in external.glob("*/*"):
        folder.rename(folder.with_name(folder.name.upper()))  # the model's classes are lower case
    n_files = sum(1 for p in external.rglob("*.png"))
    capsys.readouterr()
    assert main(["--quiet", "evaluate", str(checkpoint), str(external), "--split", "all", "--n-bootstrap", "20",
                 "--out", str(tmp_path / "ext")]) == 0
    metrics = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    assert metrics["n"] == n_files == 28
    assert metrics["evaluation"] == {"kind": "external", "split": "all", "data": str(external.resolve()),
                                     "n_images": 28, "class_counts": {"normal": 14, "pneumonia": 14}}
    printed = capsys.readouterr().out
    assert f"external evaluation: every labelled image of {external.resolve()}: 28 images" in printed
    assert "Sensitivity for pneumonia" in printed and "positive class 'pneumonia'" in printed

    # the other class as the finding: the same decisions seen from the other side
    assert main(["--quiet", "evaluate", str(checkpoint), str(external), "--split", "all", "--n-bootstrap", "0",
                 "--positive-class", "NORMAL", "--out", str(tmp_path / "flip")]) == 0
    flipped = json.loads((tmp_path / "flip" / "metrics.json").read_text())
    assert flipped["positive_class"] == "normal"
    assert flipped["sensitivity_macro"]["value"] == metrics["specificity_macro"]["value"]
    assert flipped["ppv_macro"]["value"] == metrics["npv_macro"]["value"]
    assert flipped["auroc_macro"]["value"] == pytest.approx(metrics["auroc_macro"]["value"])


def test_split_all_refuses_other_classes_and_the_models_own_training_images(tiny_model, tmp_path, capsys):
    checkpoint, own = tiny_model
    other = make_blob_folder(tmp_path / "other", per_class=3, size=32, splits=("",))
    (other / "pneumonia").rename(other / "covid")
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint), str(other), "--split", "all"]) == 2
    error = capsys.readouterr().err
    assert "'covid'" in error and "the data's classes: normal, covid; the model's: normal, pneumonia" in error
    assert main(["evaluate", str(checkpoint), str(own), "--split", "all"]) == 2
    assert "trained or tuned the model" in capsys.readouterr().err


def test_labels_follow_the_models_class_order_whatever_the_data_says():
    import numpy as np

    from mobilemed.data.table import ImageTable
    from mobilemed.evaluation.eval_data import remap_labels

    table = ImageTable(paths=["a", "b", "c"], labels=np.array([0, 1, 1]), class_names=["PNEUMONIA", "Normal"],
                       task="binary", splits=["", "", ""])
    assert remap_labels(table, ["normal", "pneumonia"]).tolist() == [1, 0, 0]
