"""train --ensemble N: N networks on the run's train split, each from its own seed, deployed as their mean
probability; the operating point chosen on the ensemble's validation predictions; resume member by member."""
import json

import numpy as np
import pytest
import torch

from mobilemed.checkpoint import load_checkpoint, read_checkpoint
from mobilemed.cli.main import main
from mobilemed.decision import probabilities
from mobilemed.errors import MobilemedError
from mobilemed.models.ensemble import EnsembleClassifier
from mobilemed.run_files import read_split_predictions
from mobilemed.spec import ModelSpec
from mobilemed.training.config import TrainConfig
from mobilemed.training.distributed import Dist, check_distributed
from mobilemed.training.finish import choose_operating_point
from mobilemed.training.members import validation_auroc
from mobilemed.training.seed_ensemble import member_seed
from mobilemed.training.threshold_views import read_views
from tests.conftest import make_blob_folder, tiny_train_args
from tests.training.interrupting import TrainingCalls


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blob_folder(tmp_path_factory.mktemp("ens") / "data", per_class=8, size=36)


def ensemble_train(data, out, *extra, members="2"):
    return main(["--quiet", "train", str(data), "--out", str(out), *tiny_train_args(image_size=32, epochs=2),
                 "--seed", "3", "--ensemble", members, *extra])


@pytest.fixture(scope="module")
def ensemble_run(blobs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensrun") / "run"
    assert ensemble_train(blobs, out, "--threshold-views", "2", "--crop-scale", "0.6") == 0
    return out


def _val_labels_and_train_labels(run):
    split = np.loadtxt(run / "split.csv", delimiter=",", dtype=str, skiprows=1, usecols=(1, 3))
    return np.array([int(label == "pneumonia") for s, label in split if s == "train"])


def test_the_deployed_model_is_the_members_best_weights_and_their_mean_probability(ensemble_run, blobs):
    model, spec = load_checkpoint(ensemble_run / "best.pt")
    assert isinstance(model, EnsembleClassifier) and spec.ensemble_size == 2
    states = [read_checkpoint(ensemble_run / "members" / f"member{m}" / "best.pt")["model"] for m in range(2)]
    for member, state in zip(model.members, states):
        assert all(torch.equal(member.state_dict()[k], v) for k, v in state.items())
    assert any(not torch.equal(v, states[1][k]) for k, v in states[0].items())  # each from its own seed
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = np.mean([probabilities(m(x).numpy(), "binary") for m in model.members], axis=0)
        assert np.allclose(probabilities(model(x).numpy(), "binary"), expected, atol=1e-6)
    val = read_split_predictions(ensemble_run, "val")
    assert set(val.files) == {str(p) for p in (blobs / "val").rglob("*.png")}  # the run's own val split, not folds


def test_the_threshold_is_chosen_on_the_ensembles_validation_views(ensemble_run):
    spec = read_checkpoint(ensemble_run / "best.pt")["spec"]
    views, labels = read_views(ensemble_run)
    assert views.shape == (2, 16, 1)
    from mobilemed.run_config import read_config

    config = TrainConfig.from_dict(read_config(ensemble_run))
    val = np.load(ensemble_run / "predictions_val.npz")
    (threshold,), _ = choose_operating_point(ModelSpec.from_dict(spec), _val_labels_and_train_labels(ensemble_run),
                                             val["y_true"], val["logits"], config, views)
    assert spec["thresholds"] == [pytest.approx(threshold)]
    assert spec["provenance"]["thresholds"]["split"] == "val"


def test_metrics_and_report_name_every_members_seed_and_validation_auroc(ensemble_run):
    ensemble = json.loads((ensemble_run / "metrics.json").read_text())["ensemble"]
    assert ensemble["members"] == 2 and ensemble["seeds"] == [member_seed(3, 0), member_seed(3, 1)] == [3027, 3028]
    spec = load_checkpoint(ensemble_run / "best.pt")[1]
    for m, auroc in enumerate(ensemble["val_auroc_per_member"]):
        member = read_split_predictions(ensemble_run / "members" / f"member{m}", "val")
        assert auroc == pytest.approx(validation_auroc(member.y_true, member.logits, spec))
    assert all(1 <= e <= 2 for e in ensemble["best_epoch_per_member"])
    report = (ensemble_run / "report.html").read_text()
    assert "Ensemble members" in report and "seed 3027" in report and "mean probability of 2 networks" in report
    assert "2 networks, each trained in its own folder; the best validation AUROC of each: member0" in report


def test_member_checkpoints_are_never_taken_for_the_deployed_model(ensemble_run):
    with pytest.raises(MobilemedError, match="did not finish"):
        load_checkpoint(ensemble_run / "members" / "member0" / "best.pt")


def test_an_interrupted_ensemble_resumes_without_retraining_finished_members(blobs, ensemble_run, tmp_path,
                                                                              monkeypatch):
    calls = TrainingCalls(monkeypatch, interrupt_at=2)  # member 1 starts: member 0 is finished
    out = tmp_path / "run"
    extra = ("--threshold-views", "2", "--crop-scale", "0.6")
    assert ensemble_train(blobs, out, *extra) == 130
    assert json.loads((out / "run_state.json").read_text())["state"] == "interrupted"
    calls.restart()
    assert ensemble_train(blobs, out, *extra, "--resume") == 0
    assert calls.folders == ["member1"]  # member 0 was read back, not retrained
    resumed, whole = read_split_predictions(out, "test"), read_split_predictions(ensemble_run, "test")
    assert np.allclose(resumed.y_prob, whole.y_prob, atol=1e-5)  # each member is seeded by (seed, member) alone
    assert load_checkpoint(out / "best.pt")[1].thresholds == \
        pytest.approx(load_checkpoint(ensemble_run / "best.pt")[1].thresholds)
    assert main(["--quiet", "train", str(blobs), "--out", str(out), *tiny_train_args(image_size=32, epochs=2),
                 "--seed", "3", "--ensemble", "3", *extra, "--resume"]) == 2  # another N is another run


def test_an_ensemble_on_cached_frozen_blocks_runs_the_prefix_once(blobs, tmp_path, monkeypatch):
    import torchvision

    from mobilemed.training import prefix_finetune

    passes = []
    original = prefix_finetune.prefix_maps
    monkeypatch.setattr(prefix_finetune, "prefix_maps", lambda *a, **k: passes.append(1) or original(*a, **k))
    torch.manual_seed(0)  # the members' shared starting weights, as pretrained ones would be
    weights = tmp_path / "start.pt"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)  # the layout of ImageNet's file
    out = tmp_path / "run"
    assert main(["--quiet", "train", str(blobs), "--out", str(out), "--mode", "finetune", "--weights", str(weights),
                 "--image-size", "32", "--freeze-blocks", "14", "--prefix-views", "2", "--crop-scale", "0.5",
                 "--epochs", "1", "--batch-size", "8", "--ensemble", "3", "--no-gallery", "--n-bootstrap", "20"]) == 0
    assert len(passes) == 2  # 3 members share one pass of views and one plain pass (not 6 passes)
    cache = json.loads((out / "members/member2/prefix_cache.json").read_text())
    assert cache["shared_prefix_pass"] is True
    assert load_checkpoint(out / "best.pt")[1].ensemble_size == 3


@pytest.mark.parametrize("flags, words", [
    (["--ensemble", "17"], ["--ensemble", "1 to 16", "17"]),
    (["--ensemble", "2", "--cv", "2"], ["--ensemble", "--cv", "choose one"]),
])
def test_bad_ensembles_are_refused_before_the_run_folder(capsys, blobs, tmp_path, flags, words):
    code = main(["train", str(blobs), "--out", str(tmp_path / "r"), *tiny_train_args(), *flags])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words) and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_an_ensemble_of_no_network_is_an_argument_error(capsys, blobs, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["train", str(blobs), "--out", str(tmp_path / "r"), *tiny_train_args(), "--ensemble", "0"])
    assert stop.value.code == 2 and "argument --ensemble" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_torchrun_refuses_an_ensemble_it_would_train_on_one_process():
    config = TrainConfig(model={"mode": "finetune", "ensemble": 2})
    with pytest.raises(MobilemedError, match="--ensemble trains its networks one after the other"):
        check_distributed(config, Dist(world_size=2))
    assert check_distributed(config, Dist()) is config


def _pixels(spec, n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, spec.in_chans), dtype=np.uint8)


def test_an_ensemble_is_explained_by_the_mean_of_its_members_grad_cam_maps(ensemble_run):
    import dataclasses

    from mobilemed.data.transforms import to_model_input
    from mobilemed.explain.gradcam import cam_layer_for, compute_gradcam

    model, spec = load_checkpoint(ensemble_run / "best.pt")
    x = to_model_input(_pixels(spec), spec)
    maps = compute_gradcam(model, x, spec=spec, target_classes=[1, 0, 1])
    single = dataclasses.replace(spec, ensemble_size=1)
    mean = np.mean([compute_gradcam(m, x, spec=single, target_classes=[1, 0, 1]) for m in model.members], axis=0)
    assert maps.shape == (3, 32, 32)
    assert cam_layer_for(spec).describe().endswith(", the mean of 2 members' maps")
    np.testing.assert_allclose(maps, mean / mean.reshape(3, -1).max(axis=1)[:, None, None], atol=1e-6)


def test_an_ensemble_checks_out_of_distribution_images_and_exports_with_that_check(ensemble_run, tmp_path):
    from mobilemed.onnx_model import OnnxModel

    model, spec = load_checkpoint(ensemble_run / "best.pt")
    assert spec.ood_method and spec.ood_threshold is not None  # fitted on the first member's features
    assert "ood" in json.loads((ensemble_run / "metrics.json").read_text())["test"]
    out = tmp_path / "ensemble.onnx"
    assert main(["--quiet", "export", str(ensemble_run / "best.pt"), "--out", str(out)]) == 0
    assert json.loads(out.with_name(out.name + ".parity.json").read_text())["fp32_max_abs_logit_diff"] < 1e-3
    exported = OnnxModel(out).forward(_pixels(spec))
    from mobilemed.batch_predict import predict_features_and_logits

    features, logits = predict_features_and_logits(model, _pixels(spec), spec)
    assert np.allclose(exported["logits"], logits, atol=1e-3) and exported["ood_score"].shape == (3,)
    assert np.allclose(exported["features"], features, atol=1e-3)


def test_an_ensemble_resumed_on_other_images_is_refused(tmp_path, monkeypatch, capsys):
    data = make_blob_folder(tmp_path / "data", per_class=6, size=32)
    TrainingCalls(monkeypatch, interrupt_at=2)  # Ctrl-C as member1 starts
    out = tmp_path / "run"
    assert ensemble_train(data, out) == 130
    next((data / "val").rglob("*.png")).unlink()
    capsys.readouterr()
    assert ensemble_train(data, out, "--resume") == 2
    assert "split.csv" in capsys.readouterr().err
    assert not (out / "members" / "member1" / "best.pt").exists()
