"""train --cv K: patient-grouped stratified folds of train+val, the operating point chosen on the pooled
out-of-fold predictions, cross-validated metrics with CIs, a refit or a fold ensemble, resume."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from mobilemed.batch_predict import predict_features_and_logits
from mobilemed.checkpoint import load_checkpoint, read_checkpoint
from mobilemed.data.transforms import normalise_pixels
from mobilemed.cli.main import main
from mobilemed.data.table import ImageTable
from mobilemed.decision import probabilities
from mobilemed.errors import MobilemedError
from mobilemed.evaluation.thresholds import choose_thresholds, neutral_probabilities
from mobilemed.inference import Predictor
from mobilemed.models.ensemble import EnsembleClassifier
from mobilemed.onnx_model import OnnxModel
from mobilemed.run_files import read_split_predictions
from mobilemed.training.cross_validation import assign_cv_folds, pooled_table
from tests.conftest import make_blob_folder, tiny_train_args
from tests.training.interrupting import TrainingCalls


def patient_table(seed=0):
    """60 patients with 1-4 images each, a third of them positive, in train / val / test."""
    rng = np.random.default_rng(seed)
    groups, labels, splits = [], [], []
    for patient in range(60):
        n = int(rng.integers(1, 5))
        groups += [f"p{patient}"] * n
        labels += [int(patient % 3 == 0)] * n
        splits += [("train", "train", "val", "test")[patient % 4]] * n
    n = len(groups)
    return ImageTable(paths=np.array([f"img{i}.png" for i in range(n)], dtype=object), labels=np.array(labels),
                      class_names=["normal", "pneumonia"], task="binary", splits=np.array(splits, dtype=object),
                      groups=np.array(groups, dtype=object), source="patients")


def test_folds_keep_patients_whole_cover_train_and_val_only_and_spread_every_class():
    table = patient_table()
    fold = assign_cv_folds(table, 3, seed=0)
    pooled = pooled_table(table)
    assert len(fold) == len(pooled) == int((table.splits != "test").sum())
    assert set(pooled.splits) == {"train", "val"}  # the test split never enters a fold
    for patient in set(pooled.groups):
        assert len(set(fold[pooled.groups == patient])) == 1
    prevalence = [pooled.labels[fold == k].mean() for k in range(3)]
    assert max(prevalence) - min(prevalence) < 0.1
    assert np.array_equal(fold, assign_cv_folds(table, 3, seed=0))  # seeded


def test_folds_are_refused_when_a_class_cannot_reach_every_fold():
    table = patient_table()
    with pytest.raises(MobilemedError, match="use a smaller --cv"):
        assign_cv_folds(table, 40, seed=0)


def test_ensemble_averages_the_members_probabilities():
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    for task, outputs in (("binary", 1), ("multiclass", 3), ("multilabel", 3)):
        members = [nn.Linear(4, outputs) for _ in range(3)]
        ensemble = EnsembleClassifier(members, task)
        with torch.no_grad():
            expected = np.mean([probabilities(m(x).numpy(), task) for m in members], axis=0)
            got = probabilities(ensemble(x).numpy(), task)
        assert np.allclose(got, expected, atol=1e-6), task
    with pytest.raises(MobilemedError, match="--cv-ensemble"):
        ensemble.backbone


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blob_folder(tmp_path_factory.mktemp("cv") / "data", per_class=8, size=36)


def cv_train(data, out, *extra):
    return main(["--quiet", "train", str(data), "--out", str(out), *tiny_train_args(image_size=32), "--seed", "3",
                 "--cv", "2", *extra])


@pytest.fixture(scope="module")
def cv_run(blobs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cvrun") / "run"
    assert cv_train(blobs, out) == 0
    return out


def test_operating_point_is_chosen_on_the_pooled_out_of_fold_predictions(cv_run, blobs):
    spec = load_checkpoint(cv_run / "best.pt")[1]
    oof = read_split_predictions(cv_run, "val")
    split = [line.split(",") for line in (cv_run / "split.csv").read_text().splitlines()[1:]]
    pooled = sorted(path for path, which, *_ in split if which in ("train", "val"))
    assert sorted(oof.files) == pooled  # every train+val image once, no test image
    folds = [read_split_predictions(cv_run / "folds" / f"fold{k}", "oof") for k in range(2)]
    assert sorted(np.concatenate([f.files for f in folds])) == pooled
    assert not set(folds[0].files) & set(folds[1].files)
    neutral = spec.provenance["thresholds"]["neutral_logits"]  # the loss's own point, from the pooled labels
    assert neutral == pytest.approx([0.0], abs=1e-9)  # class-balanced, no smoothing: p = 0.5
    expected = choose_thresholds(oof.y_true, probabilities(oof.logits, "binary", spec.temperature), task="binary",
                                 neutral=neutral_probabilities(neutral, spec.temperature))
    assert spec.thresholds == expected
    assert spec.provenance["thresholds"]["split"].startswith("out-of-fold predictions of 2 folds")
    assert spec.ensemble_size == 1


def test_cv_metrics_carry_bootstrap_intervals_and_the_report_shows_them(cv_run):
    metrics = json.loads((cv_run / "metrics.json").read_text())
    cv = metrics["cv"]
    assert cv["folds"] == 2 and len(cv["auroc_per_fold"]) == 2 and cv["deployed"].startswith("refit")
    low, high = cv["pooled_out_of_fold"]["auroc_macro"]["ci"]
    assert low <= cv["pooled_out_of_fold"]["auroc_macro"]["value"] <= high
    assert "test" in metrics
    report = (cv_run / "report.html").read_text()
    assert "Cross-validation" in report and "out-of-fold" in report


def test_fold_checkpoints_are_never_taken_for_the_deployed_model(cv_run):
    assert read_checkpoint(cv_run / "best.pt")["complete"] is True
    with pytest.raises(MobilemedError, match="did not finish"):
        load_checkpoint(cv_run / "folds" / "fold0" / "best.pt")


def test_an_interrupted_cv_run_resumes_without_retraining_finished_folds(blobs, cv_run, tmp_path, monkeypatch):
    calls = TrainingCalls(monkeypatch, interrupt_at=2)  # fold 1 starts: fold 0 is finished
    out = tmp_path / "run"
    assert cv_train(blobs, out) == 130
    assert json.loads((out / "run_state.json").read_text())["state"] == "interrupted"
    calls.restart()
    assert cv_train(blobs, out, "--resume") == 0
    assert calls.folders == ["fold1", "run"]  # fold 1, then the refit; fold 0 was done
    resumed, whole = read_split_predictions(out, "val"), read_split_predictions(cv_run, "val")
    assert np.allclose(resumed.y_prob, whole.y_prob, atol=1e-5)
    assert load_checkpoint(out / "best.pt")[1].thresholds == pytest.approx(load_checkpoint(cv_run / "best.pt")[1].thresholds)


def test_fold_ensemble_predicts_evaluates_and_exports(blobs, tmp_path, capsys):
    out = tmp_path / "ens"
    assert cv_train(blobs, out, "--cv-ensemble") == 0
    model, spec = load_checkpoint(out / "best.pt")
    assert isinstance(model, EnsembleClassifier) and spec.ensemble_size == 2
    members = [read_checkpoint(out / "folds" / f"fold{k}" / "best.pt")["model"] for k in range(2)]
    for member, state in zip(model.members, members):
        assert all(torch.equal(member.state_dict()[k], v) for k, v in state.items())
    test = read_split_predictions(out, "test")
    predicted = Predictor.from_checkpoint(out / "best.pt").predict_files([str(blobs / "test")])
    assert len(predicted.files) == len(test.files)
    assert main(["--quiet", "evaluate", str(out / "best.pt"), str(blobs), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0
    assert main(["--quiet", "export", str(out / "best.pt")]) == 0  # one graph holding both fold networks
    parity = json.loads((out / "best.onnx.parity.json").read_text())
    assert parity["fp32_max_abs_logit_diff"] < 1e-3 and "fp32_max_rel_ood_score_diff" in parity
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, spec.in_chans), dtype=np.uint8)
    features, logits = predict_features_and_logits(model, pixels, spec)
    exported = OnnxModel(out / "best.onnx").forward(pixels)
    with torch.no_grad():  # the OOD features are the first fold network's, the logits the ensemble's
        first = model.members[0].backbone(normalise_pixels(torch.from_numpy(pixels), spec)).numpy()
    assert np.allclose(features, first, atol=1e-5) and np.allclose(exported["features"], first, atol=1e-3)
    assert np.allclose(exported["logits"], logits, atol=1e-3) and "ood_score" in exported


@pytest.mark.parametrize("flags,message", [(["--cv", "1"], "at least 2"), (["--cv-ensemble"], "add --cv K")])
def test_bad_cv_options_are_refused_before_anything_is_written(blobs, tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    assert main(["--quiet", "train", str(blobs), "--out", str(out), *tiny_train_args(), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
