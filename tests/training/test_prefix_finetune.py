"""Fine-tuning on cached frozen blocks (--freeze-blocks), label smoothing and progressive resizing."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mobilemed.assets import load_imagenet_state
from mobilemed.batch_predict import predict_logits
from mobilemed.checkpoint import load_checkpoint
from mobilemed.cli.main import main
from mobilemed.data.transforms import Augmentation, to_model_input
from mobilemed.errors import MobilemedError
from mobilemed.models import build_model
from mobilemed.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from mobilemed.training.config import ModelChoice, OptimConfig, TrainConfig
from mobilemed.training.loop import make_loss
from mobilemed.training.prefix_cache import prefix_maps
from mobilemed.training.prefix_finetune import PrefixTail
from mobilemed.training.strategies import NetworkPlan
from tests.cli.test_options import parse_error
from tests.conftest import make_blob_folder

K = 12  # of mobilenet_v2's 19 feature blocks: the output of block 11 is (96, S/16, S/16)


def _spec(size: int = 64) -> ModelSpec:
    return ModelSpec(arch="mobilenet_v2", class_names=["normal", "pneumonia"], task="binary", image_size=size,
                     in_chans=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _train_args(data, out, *extra) -> list:
    return ["--quiet", "train", str(data), "--out", str(out), "--mode", "finetune", "--arch", "mobilenet_v2",
            "--image-size", "64", "--batch-size", "8", "--no-gallery", "--n-bootstrap", "0",
            "--freeze-blocks", str(K), *extra]


def test_the_tail_on_cached_maps_gives_the_full_models_logits(imagenet_cache):
    torch.manual_seed(0)  # the head is random; the blocks are ImageNet's
    model = build_model(_spec(), load_imagenet_state("mobilenet_v2")).eval()
    images = _images(10, 64)
    tail = PrefixTail(model, K)
    maps = prefix_maps(tail.prefix, images, _spec(), progress=False)  # (1, 10, 96, 4, 4) fp16
    assert maps.shape == (1, 10, 96, 4, 4) and maps.dtype == np.float16
    with torch.inference_mode():
        full = model(to_model_input(images, _spec())).numpy()
        cached = tail.eval()(torch.from_numpy(maps[0].astype(np.float32))).numpy()
    assert full.std() > 0.05  # real logits that differ between images
    np.testing.assert_allclose(cached, full, atol=2e-3 * np.abs(full).max() + 1e-4)


def test_a_memory_mapped_cache_holds_the_same_maps_and_leaves_no_file(mobilemed_home):
    model = build_model(_spec())
    tail, images = PrefixTail(model, K), _images(6, 64, seed=1)
    in_memory = prefix_maps(tail.prefix, images, _spec(), views=2, seed=3, progress=False)
    on_disk = prefix_maps(tail.prefix, images, _spec(), views=2, seed=3, progress=False, max_memory_bytes=0)
    assert isinstance(on_disk, np.memmap) and not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(on_disk, in_memory)
    assert not np.array_equal(in_memory[0], in_memory[1])  # view 1 is an augmented copy
    assert list((mobilemed_home / "prefix_cache").iterdir()) == []


def test_the_saved_model_is_the_full_network_with_its_prefix_untouched(imagenet_cache, tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=8, size=64)
    assert main(_train_args(data, tmp_path / "run", "--epochs", "2", "--head-warmup-epochs", "1",
                            "--prefix-views", "2", "--label-smoothing", "0.1")) == 0
    model, spec = load_checkpoint(tmp_path / "run" / "best.pt")
    trained, initial = model.state_dict(), build_model(spec, load_imagenet_state("mobilenet_v2")).state_dict()
    prefix = [k for k in trained if k.startswith("backbone.features.") and int(k.split(".")[2]) < K]
    rest = [k for k in trained if k.startswith("backbone.features.") and int(k.split(".")[2]) >= K]
    assert all(torch.equal(trained[k], initial[k]) for k in prefix)  # frozen: not even BatchNorm statistics moved
    assert any(not torch.equal(trained[k], initial[k]) for k in rest)  # the later blocks did train
    images = np.stack([np.asarray(Image.open(p)) for p in sorted((data / "test").rglob("*.png"))])  # (N, 64, 64)
    maps = prefix_maps(PrefixTail(model, K).prefix, images, spec, progress=False)
    with torch.inference_mode():
        cached = PrefixTail(model, K).eval()(torch.from_numpy(maps[0].astype(np.float32))).numpy()
    full = predict_logits(model, images, spec)
    np.testing.assert_allclose(cached, full, atol=2e-3 * np.abs(full).max() + 1e-4)
    record = json.loads((tmp_path / "run" / "prefix_cache.json").read_text())
    assert record["freeze_blocks"] == K and record["views"] == 2 and record["map_shape"] == [96, 4, 4]


def test_resume_across_the_head_warm_up_equals_an_uninterrupted_run(imagenet_cache, tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=6, size=64)
    common = ["--head-warmup-epochs", "1", "--scheduler", "none", "--ema", "0.9", "--patience", "0"]
    assert main(_train_args(data, tmp_path / "whole", "--epochs", "2", *common)) == 0
    assert main(_train_args(data, tmp_path / "split", "--epochs", "1", *common)) == 0
    assert main(_train_args(data, tmp_path / "split", "--epochs", "2", "--resume", *common)) == 0
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    for key, value in whole["model"].items():
        torch.testing.assert_close(split["model"][key], value, rtol=1e-5, atol=1e-6)
    assert [round(r["val_auroc"], 6) for r in whole["history"]] == [round(r["val_auroc"], 6) for r in split["history"]]


def test_resume_of_a_run_saved_before_the_new_options_existed(tmp_path):
    from mobilemed.training.resume import check_resume_config

    ours = TrainConfig(data="x")
    saved = ours.to_dict()
    for part, names in (("model", ["freeze_blocks"]), ("optim", ["label_smoothing", "prefix_views"])):
        for name in names:
            del saved[part][name]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": saved, "spec": {}}))
    check_resume_config(tmp_path, ours)  # absent fields read back as their defaults
    with pytest.raises(MobilemedError, match=r"model\.freeze_blocks: 0 -> 5"):
        check_resume_config(tmp_path, TrainConfig(data="x", model=ModelChoice(mode="finetune", freeze_blocks=5)))


@pytest.mark.parametrize("option, value, valid", [
    ("--freeze-blocks", "-1", "a whole number >= 0"), ("--prefix-views", "0", "a whole number >= 1"),
    ("--label-smoothing", "1", "[0, 1)"), ("--low-res-size", "0", "a whole number >= 1"),
    ("--low-res-epochs", "-2", "a whole number >= 0")])
def test_bad_numbers_are_refused_at_parse_time(capsys, tmp_path, option, value, valid):
    code, line = parse_error(capsys, "train", tmp_path / "nowhere", "--mode", "finetune", option, value)
    assert code == 2 and f"argument {option}" in line and valid in line


@pytest.mark.parametrize("extra, message", [
    (["--mode", "finetune", "--freeze-blocks", "19"], "mobilenet_v2 has 19 feature blocks, so at most 18"),
    (["--mode", "linear-probe", "--freeze-blocks", "3"], "--freeze-blocks needs --mode finetune"),
    (["--mode", "finetune", "--prefix-views", "2"], "--prefix-views needs --freeze-blocks"),
    (["--mode", "finetune", "--low-res-size", "64", "--low-res-epochs", "1", "--epochs", "3"],
     "give --image-size explicitly"),
    (["--mode", "finetune", "--image-size", "96", "--low-res-size", "64", "--low-res-epochs", "3", "--epochs", "3"],
     "between 1 and --epochs - 1"),
    (["--mode", "finetune", "--image-size", "96", "--freeze-blocks", "4", "--low-res-size", "64",
      "--low-res-epochs", "1", "--epochs", "3"], "cached frozen blocks are computed at one resolution"),
    (["--mode", "finetune", "--crop-scale", "0"], "--crop-scale is the smallest share of the image's area"),
    (["--mode", "finetune", "--crop-scale", "1.5"], "in (0, 1], e.g. 0.35"),
    (["--mode", "finetune", "--crop-scale", "0.5", "--no-augment"], "--crop-scale, --hflip and --intensity are"),
    (["--mode", "finetune", "--intensity", "0.3", "--no-augment"], "drop --no-augment"),
    (["--mode", "finetune", "--intensity", "1"], "--intensity is the strength of the random gamma"),
    (["--mode", "finetune", "--intensity", "-0.1"], "in [0, 1), e.g. 0.3"),
    (["--mode", "finetune", "--hflip", "--no-augment"], "drop --no-augment")])
def test_options_that_do_not_fit_are_refused_before_any_file(capsys, tmp_path, extra, message):
    data = make_blob_folder(tmp_path / "data", per_class=2, size=32)
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_label_smoothing_pulls_binary_and_multiclass_targets_towards_uniform():
    logits, labels = torch.tensor([[2.0], [-1.0], [0.5]]), np.array([1, 0, 1])
    smoothed = make_loss("binary", labels, "none", smoothing=0.2)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[0.9], [0.1], [0.9]]))
    torch.testing.assert_close(smoothed(logits, torch.tensor([[1.0], [0.0], [1.0]])), expected)
    three = make_loss("multiclass", np.array([0, 1, 2]), "none", smoothing=0.3)
    assert three.label_smoothing == 0.3


def test_progressive_resizing_trains_the_first_epochs_small_and_the_last_at_full_size():
    spec, images = _spec(96), _images(5, 96)
    plan = NetworkPlan(torch.nn.Identity(), np.array([0, 1, 0, 1, 1]), 4, images, images, spec, False, (48, 2))
    sizes = []
    for epoch in range(3):
        plan.epoch = epoch
        sizes.append(next(iter(plan.batches(torch.Generator().manual_seed(0))))[0].shape[-1])
    assert sizes == [48, 48, 96]


def test_the_new_options_default_to_off():
    optim, model = OptimConfig(), ModelChoice()
    assert (model.freeze_blocks, optim.label_smoothing, optim.prefix_views, optim.low_res_size) == (0, 0.0, 1, None)


def test_with_crops_every_cached_view_is_a_crop_drawn_from_the_seed(mobilemed_home):
    tail, images = PrefixTail(build_model(_spec()), K), _images(6, 64, seed=2)
    plain = prefix_maps(tail.prefix, images, _spec(), views=1, progress=False)
    crops = prefix_maps(tail.prefix, images, _spec(), views=2, seed=5, progress=False, augmentation=Augmentation(crop_scale=0.35))
    again = prefix_maps(tail.prefix, images, _spec(), views=2, seed=5, progress=False, augmentation=Augmentation(crop_scale=0.35))
    assert not np.array_equal(crops[0], plain[0]) and not np.array_equal(crops[0], crops[1])
    np.testing.assert_array_equal(crops, again)


def test_shared_prefix_maps_give_each_fold_rows_of_one_pooled_pass(monkeypatch):
    import copy

    from mobilemed.training import prefix_finetune

    spec, images = _spec(32), _images(10, 32)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    optim = OptimConfig(crop_scale=0.5, prefix_views=2, seed=4)
    passes = []
    monkeypatch.setattr(prefix_finetune, "prefix_maps", lambda *a, **k: passes.append(k) or prefix_maps(*a, **k))
    shared = prefix_finetune.SharedPrefixMaps(images, spec, optim, freeze_blocks=4, progress=False)
    train_rows, val_rows = np.array([0, 2, 3, 7, 9]), np.array([1, 4])
    train, val = shared.rows(model, train_rows, val_rows)
    pooled = prefix_maps(model.backbone.features[:4], images, spec, views=2, seed=4, progress=False,
                         augmentation=optim.augmentation)
    plain = prefix_maps(model.backbone.features[:4], images, spec, progress=False)
    np.testing.assert_array_equal(train, pooled[:, train_rows])
    np.testing.assert_array_equal(val, plain[:, val_rows])
    assert len(passes) == 2  # the views and the plain pass, once
    again, _ = shared.rows(copy.deepcopy(model), val_rows, train_rows)  # the next fold: same frozen blocks
    np.testing.assert_array_equal(again, pooled[:, val_rows])
    assert len(passes) == 2  # no new prefix pass
    everything, _ = shared.rows(model, np.arange(10), val_rows)  # the refit trains on every pooled row
    assert everything is shared.train  # the pooled views themselves, not a second copy
    torch.manual_seed(1)
    assert shared.rows(build_model(spec), train_rows, val_rows) == (None, None)  # other frozen blocks: its own maps


def test_cross_validation_on_cached_frozen_blocks_runs_the_prefix_once(shared, tmp_path, monkeypatch):
    from mobilemed.training import prefix_finetune

    passes = []
    original = prefix_finetune.prefix_maps
    monkeypatch.setattr(prefix_finetune, "prefix_maps", lambda *a, **k: passes.append(1) or original(*a, **k))
    data = make_blob_folder(tmp_path / "data", per_class=8, size=36)
    out = tmp_path / "run"
    assert main(["--quiet", "train", str(data), "--out", str(out), "--mode", "finetune", "--weights",
                 str(shared / "weights/mobilenet_v2_imagenet.pth"), "--image-size", "32", "--freeze-blocks", "14",
                 "--prefix-views", "2", "--crop-scale", "0.5", "--epochs", "1", "--batch-size", "8", "--cv", "3",
                 "--no-gallery", "--n-bootstrap", "20"]) == 0
    assert len(passes) == 2  # 3 folds and the refit share one pass of views and one plain pass (not 8 passes)
    assert json.loads((out / "folds/fold1/prefix_cache.json").read_text())["shared_prefix_pass"] is True
    oof = np.load(out / "predictions_val.npz", allow_pickle=False)
    assert len(oof["files"]) == 32 and np.isfinite(oof["logits"]).all()  # every train+val image held out once


@pytest.mark.parametrize("weighting, smoothing", [("balanced", 0.0), ("balanced", 0.1), ("none", 0.0), ("none", 0.2)])
def test_neutral_logit_minimises_the_training_loss_where_an_image_looks_like_both_classes(weighting, smoothing):
    from mobilemed.training.loop import neutral_logits

    labels = np.r_[np.ones(74), np.zeros(26)].astype(int)  # Kermany's 74% pneumonia
    (expected,) = neutral_logits("binary", labels, weighting, smoothing=smoothing)
    # an image with likelihood ratio 1 is positive with the training prevalence: minimise its expected loss
    loss = make_loss("binary", labels, weighting, smoothing=smoothing)
    z = torch.zeros(1, 1, requires_grad=True)
    optimiser = torch.optim.LBFGS([z], lr=0.5, max_iter=200)

    def expected_loss():
        optimiser.zero_grad()
        value = 0.74 * loss(z, torch.ones(1, 1)) + 0.26 * loss(z, torch.zeros(1, 1))
        value.backward()
        return value

    optimiser.step(expected_loss)
    assert float(z.detach()) == pytest.approx(expected, abs=1e-3)
    if weighting == "balanced" and smoothing == 0:
        assert expected == pytest.approx(0.0, abs=1e-9)  # p = 0.5
    if weighting == "none" and smoothing == 0:
        assert expected == pytest.approx(np.log(0.74 / 0.26))  # p = the prevalence
