"""main([...]) end to end on small data: the run folder is the lab notebook."""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from mobilemed.checkpoint import load_checkpoint
from mobilemed.cli.main import main
from tests.conftest import tiny_train_args

SCRATCH = tiny_train_args(epochs=None, n_bootstrap=50)  # each test sets --epochs


def test_scratch_run_writes_the_whole_notebook(blob_folder, tmp_path):
    run = tmp_path / "run"
    assert main(["--quiet", "train", str(blob_folder), "--out", str(run), "--epochs", "2", *SCRATCH]) == 0
    for name in ("config.yaml", "split.csv", "versions.json", "history.json", "metrics.json", "spec.json",
                 "best.pt", "last.pt", "predictions_val.npz", "predictions_test.npz", "report.html"):
        assert (run / name).exists(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["config"]["optim"]["epochs"] == 2 and config["config"]["version"] == 2
    assert config["spec"]["task"] == "binary"
    versions = json.loads((run / "versions.json").read_text())
    assert versions["torch"].startswith("2.") and versions["seed"] == 0
    assert len(json.loads((run / "history.json").read_text())) == 2
    split = (run / "split.csv").read_text().splitlines()
    assert split[0] == "path,split,group,label" and len(split) == 1 + 72
    model, spec = load_checkpoint(run / "best.pt")  # weights_only inside
    assert spec.class_names == ["normal", "pneumonia"] and spec.in_chans == 1 and len(spec.thresholds) == 1
    test = np.load(run / "predictions_test.npz")
    assert test["y_prob"].shape == (24,) and ((test["y_prob"] >= 0) & (test["y_prob"] <= 1)).all()


def test_resume_extends_a_run_without_scheduler(blob_folder, tmp_path):
    """More epochs on --resume only without a learning-rate schedule (a cosine curve already ended at 0)."""
    run = tmp_path / "run"
    assert main(["--quiet", "train", str(blob_folder), "--out", str(run), "--epochs", "1", "--patience", "0",
                 "--scheduler", "none", *SCRATCH]) == 0
    first = json.loads((run / "history.json").read_text())
    assert main(["--quiet", "train", str(blob_folder), "--out", str(run), "--epochs", "3", "--patience", "0",
                 "--scheduler", "none", "--resume", *SCRATCH]) == 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[0]["train_loss"] == pytest.approx(first[0]["train_loss"])


def test_threshold_does_not_depend_on_test_labels(blob_folder, tmp_path):
    """Swap the test labels: the operating threshold (chosen on validation) must not move."""
    flipped = tmp_path / "flipped"
    shutil.copytree(blob_folder, flipped)
    (flipped / "test" / "normal").rename(flipped / "test" / "tmp")
    (flipped / "test" / "pneumonia").rename(flipped / "test" / "normal")
    (flipped / "test" / "tmp").rename(flipped / "test" / "pneumonia")
    specs = []
    for data, out in ((blob_folder, tmp_path / "a"), (flipped, tmp_path / "b")):
        assert main(["--quiet", "train", str(data), "--out", str(out), "--epochs", "2", *SCRATCH]) == 0
        specs.append(json.loads((out / "spec.json").read_text()))
    assert specs[0]["thresholds"] == specs[1]["thresholds"]
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["test"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["test"]
    assert a["accuracy"]["value"] == pytest.approx(1 - b["accuracy"]["value"])


def test_linear_probe_on_pneumoniamnist_learns(imagenet_cache, tmp_path):
    """Real data, real ImageNet weights: the tutorial's method on PneumoniaMNIST beats chance by far."""
    run = tmp_path / "probe"
    assert main(["--quiet", "train", "pneumoniamnist", "--out", str(run), "--epochs", "3", "--no-gallery",
                 "--n-bootstrap", "100"]) == 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["auroc_macro"]["value"] > 0.85
    lo, hi = test["auroc_macro"]["ci"]
    assert lo < test["auroc_macro"]["value"] < hi
    feature_pass = json.loads((run / "feature_pass.json").read_text())
    # seconds is 0.0 when an earlier test already cached these very features
    assert feature_pass["requested"] == "auto" and feature_pass["seconds"] >= 0
    # int8 only where validation says it costs nothing (its speed-up depends on the machine)
    assert feature_pass["chosen"] == "fp32" or \
        abs(feature_pass["val_auroc_fp32"] - feature_pass["val_auroc_int8"]) <= 0.005


def test_multilabel_run_from_a_multihot_manifest_reports_every_finding(shared, imagenet_cache, tmp_path):
    """The 14 NIH findings from labels_multihot.csv, a fresh patient-grouped split, per-finding AUROC."""
    import csv

    from mobilemed.data.nih import FINDINGS

    root = shared / "data" / "nih_cxr14_1000"
    run = tmp_path / "nih"
    # The manifest's paths start with the folder it was written in, NIH1000/: give them that folder.
    (tmp_path / "NIH1000").symlink_to(root, target_is_directory=True)
    assert main(["--quiet", "train", str(root / "labels_multihot.csv"), "--image-root", str(tmp_path),
                 "--image-column", "path", "--label-columns", ",".join(FINDINGS), "--group-column", "Patient ID",
                 "--resplit", "--mode", "linear-probe", "--image-size", "64", "--epochs", "5", "--no-gallery",
                 "--n-bootstrap", "100", "--out", str(run)]) == 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["task"] == "multilabel" and list(test["per_class"]) == list(FINDINGS)
    positives = {name: test["per_class"][name]["n_positive"] for name in FINDINGS}
    assert sum(positives.values()) > 100 and all(n >= 0 for n in positives.values())
    for name in FINDINGS:
        auroc = test["per_class"][name]["auroc"]["value"]
        assert (auroc is None) == (positives[name] == 0), name
    assert 0.5 < test["auroc_macro"]["value"] < 1
    with open(run / "split.csv", newline="") as handle:
        patients = {}
        for row in csv.DictReader(handle):
            patients.setdefault(row["group"], set()).add(row["split"])
    assert len(patients) == 264 and all(len(splits) == 1 for splits in patients.values())
