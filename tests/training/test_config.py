"""TrainConfig: split by concern, every value checked when it is built (the CLI and a Python user alike),
config.yaml readable both ways, and fit returning its results rather than only writing them."""
import json

import numpy as np
import pytest
import yaml

from mobilemed.errors import MobilemedError
from mobilemed.training.config import (ModelChoice, OperatingPointRule, OptimConfig, RunOptions, TrainConfig,
                                       regroup)


@pytest.mark.parametrize("build,message", [
    (lambda: OptimConfig(optimizer="sgd"), "--optimizer 'sgd' is unknown; choose one of adamw, adam"),
    (lambda: OptimConfig(scheduler="step"), "--scheduler 'step' is unknown; choose one of cosine, onecycle, none"),
    (lambda: OptimConfig(class_weighting="sqrt"), "--class-weighting 'sqrt' is unknown"),
    (lambda: OptimConfig(epochs=0), "--epochs must be >= 1; got 0"),
    (lambda: OptimConfig(lr=0), "--lr must be > 0; got 0"),
    (lambda: OptimConfig(ema_decay=1.0), "--ema is a decay in [0, 1)"),
    (lambda: ModelChoice(mode="distill"), "--mode 'distill' is unknown"),
    (lambda: ModelChoice(arch="resnet50"), "resnet50"),
    (lambda: ModelChoice(arch="mobilenet_v3_small", image_size=16), "--image-size 16 is below the 32 px"),
    (lambda: OperatingPointRule(threshold_rule="target_sensitivity"),
     "--threshold-rule target_sensitivity needs --target-sensitivity VALUE in (0, 1)"),
    (lambda: OperatingPointRule(threshold_rule="best_f1"), "threshold rule 'best_f1' is unknown"),
    (lambda: OperatingPointRule(ood_quantile=1.5), "--ood-quantile is a quantile in (0, 1]"),
    (lambda: RunOptions(n_bootstrap=-1), "--n-bootstrap must be >= 0"),
])
def test_a_bad_value_is_refused_when_the_config_is_built(build, message):
    with pytest.raises(MobilemedError) as caught:
        build()
    assert message in str(caught.value)


def test_to_dict_round_trips_through_yaml_and_a_flat_v1_config_regroups():
    config = TrainConfig(data="x", model=ModelChoice(mode="finetune"), optim=OptimConfig(lr=0.01, epochs=3),
                         operating_point=OperatingPointRule("target_specificity", 0.9), run=RunOptions(gallery=False))
    saved = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert saved["version"] == 2 and saved["optim"]["lr"] == 0.01 and saved["model"]["mode"] == "finetune"
    assert TrainConfig.from_dict(saved) == config
    flat = {"data": "x", "mode": "finetune", "lr": 0.01, "epochs": 3, "threshold_rule": "target_specificity",
            "threshold_target": 0.9, "gallery": False}
    assert TrainConfig.from_dict(flat) == config
    assert regroup(flat)["model"] == {"mode": "finetune"} and regroup(flat)["run"] == {"gallery": False}
    assert TrainConfig(model=ModelChoice(mode="linear-probe")).uses_augmentation is False
    assert TrainConfig(model=ModelChoice(mode="scratch")).uses_augmentation is True


def test_fit_returns_what_it_wrote_and_leaves_the_callers_spec_alone(blob_folder, tmp_path, monkeypatch):
    from mobilemed.training import fit as fit_module

    seen = {}
    make_spec = fit_module.make_spec
    monkeypatch.setattr(fit_module, "make_spec", lambda *a, **k: seen.setdefault("spec", make_spec(*a, **k)))
    config = TrainConfig(data=str(blob_folder),
                         model=ModelChoice(arch="mobilenet_v3_small", weights="none", mode="scratch", image_size=32),
                         optim=OptimConfig(epochs=1, batch_size=16),
                         operating_point=OperatingPointRule(calibrate=True),
                         run=RunOptions(run_dir=str(tmp_path / "run"), gallery=False, progress=False, n_bootstrap=0))
    result = fit_module.fit(config)
    assert result.run_dir == tmp_path / "run" and result.checkpoint.is_file() and result.report.is_file()
    assert json.loads((result.run_dir / "metrics.json").read_text()) == json.loads(json.dumps(result.metrics))
    saved = np.load(result.run_dir / "predictions_test.npz")
    np.testing.assert_allclose(saved["y_prob"], result.predictions["test"].y_prob)
    assert result.spec.provenance["temperature"]["split"] == "val" and result.spec.ood_threshold is not None
    assert seen["spec"].provenance == {} and seen["spec"].ood_threshold is None  # the caller's spec is untouched
    assert len(result.history) == 1


def test_resume_compares_a_v1_flat_config_field_by_field(tmp_path):
    from mobilemed.training.resume import check_resume_config

    ours = TrainConfig(data="x", optim=OptimConfig(lr=0.01), run=RunOptions(run_dir=str(tmp_path), resume=True))
    flat = {k: v for part in ("model", "optim", "operating_point") for k, v in ours.to_dict()[part].items()}
    flat.update(data="x", data_options=ours.to_dict()["data_options"], run_dir="elsewhere", gallery=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": flat, "spec": {}}))
    check_resume_config(tmp_path, ours)  # run options may differ; nothing else does
    changed = TrainConfig(data="x", optim=OptimConfig(lr=0.5), run=RunOptions(run_dir=str(tmp_path), resume=True))
    with pytest.raises(MobilemedError, match=r"optim\.lr: 0\.01 -> 0\.5"):
        check_resume_config(tmp_path, changed)


def test_resume_reads_a_field_newer_than_the_run_as_its_default(tmp_path):
    """A run started before --cv existed has no operating_point.cv_folds in config.yaml: resuming it with the
    default (no --cv) is the same run; asking for --cv 5 is a change and is refused."""
    from mobilemed.training.config import OperatingPointRule
    from mobilemed.training.resume import check_resume_config

    ours = TrainConfig(data="x", run=RunOptions(run_dir=str(tmp_path), resume=True))
    saved = ours.to_dict()
    del saved["operating_point"]["cv_folds"], saved["operating_point"]["cv_ensemble"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": saved, "spec": {}}))
    check_resume_config(tmp_path, ours)
    with pytest.raises(MobilemedError, match=r"operating_point\.cv_folds: 0 -> 5"):
        check_resume_config(tmp_path, TrainConfig(data="x", operating_point=OperatingPointRule(cv_folds=5),
                                                  run=RunOptions(run_dir=str(tmp_path), resume=True)))
