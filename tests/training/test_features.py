"""The frozen-feature pass: ONNX Runtime against torch, the prefetching pipeline against a plain loop, its
memory bound, and the int8-or-fp32 choice of the linear probe on real images with real ImageNet weights."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from mobilemed.training.features import CHUNK, FeaturePass, input_chunks, prefetched


def pneumonia_backbone(image_size=64):
    from mobilemed.assets import load_imagenet_state
    from mobilemed.data.medmnist_source import load_medmnist
    from mobilemed.models import build_model
    from mobilemed.spec import GRAY_MEAN, GRAY_STD, ModelSpec

    table = load_medmnist("pneumoniamnist")
    spec = ModelSpec(arch="mobilenet_v2", class_names=table.class_names, task="binary", image_size=image_size,
                     in_chans=1, mean=GRAY_MEAN, std=GRAY_STD)
    return build_model(spec, load_imagenet_state("mobilenet_v2")).backbone.eval(), spec, table


def test_onnx_features_match_torch_and_the_prefetched_pass_matches_a_plain_loop(imagenet_cache):
    from mobilemed.training.features import _torch_runner

    backbone, spec, table = pneumonia_backbone()
    images = table.images[:CHUNK + 16]  # two chunks, the second partial
    onnx = FeaturePass(backbone, spec, progress=False).features(images, use_cache=False)
    plain = np.concatenate([_torch_runner(backbone)(c) for c in input_chunks(images, spec)])
    assert onnx.shape == plain.shape == (CHUNK + 16, 1280) and onnx.dtype == np.float32
    np.testing.assert_allclose(onnx, plain, atol=1e-4)


def test_prefetch_keeps_order_and_never_runs_more_than_depth_ahead():
    produced, consumed, ahead = [0], [0], []
    lock = threading.Lock()

    def chunks():
        for i in range(12):
            with lock:
                produced[0] += 1
                ahead.append(produced[0] - consumed[0])
            yield i

    out = []
    for item in prefetched(chunks(), depth=2):
        time.sleep(0.01)  # a slow consumer: the producer would run away if nothing held it back
        out.append(item)
        with lock:
            consumed[0] += 1
    assert out == list(range(12))
    # 2 in the queue + 1 in the producer's hand + 1 with the consumer
    assert max(ahead) <= 4 and max(ahead) >= 3


def test_prefetch_raises_the_producers_error_and_stops_its_thread_when_closed():
    def failing():
        yield 1
        raise ValueError("unreadable chunk")

    with pytest.raises(ValueError, match="unreadable chunk"):
        list(prefetched(failing(), depth=2))
    before = threading.active_count()
    stream = prefetched(iter(range(1000)), depth=2)
    assert next(stream) == 0
    stream.close()  # the consumer stops early: the producer must not stay blocked on a full queue
    assert threading.active_count() == before


def test_int8_choice_on_real_images_follows_the_validation_aurocs(imagenet_cache):
    """PneumoniaMNIST at 64 px through the ImageNet backbone: both precisions' validation AUROCs are real
    numbers far above chance, and `auto` picks int8 exactly when they are within the tolerance."""
    from mobilemed.data.medmnist_source import load_medmnist
    from mobilemed.training.feature_precision import INT8_TOLERANCE, MIN_SPEEDUP, probe_features

    backbone, spec, _ = pneumonia_backbone()
    table = load_medmnist("pneumoniamnist")
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", 96), ("val", 160)):
        rows = rng.choice(np.flatnonzero(table.splits == split), n, replace=False)
        data[split] = SimpleNamespace(images=table.images[rows], labels=table.labels[rows])
    features, record = probe_features(backbone, spec, data, precision="auto", progress=False)
    assert record["calibration_images"] == 32 and 0.8 < record["val_auroc_fp32"] <= 1
    assert 0.8 < record["val_auroc_int8"] <= 1
    within = abs(record["val_auroc_fp32"] - record["val_auroc_int8"]) <= INT8_TOLERANCE
    assert record["int8_speedup"] > 0.2  # a real timing of both sessions
    assert record["chosen"] == ("int8" if within and record["int8_speedup"] >= MIN_SPEEDUP else "fp32")
    assert features["train"].shape == (96, 1280) and features["val"].shape == (160, 1280)
    fp32_train = FeaturePass(backbone, spec, progress=False).features(data["train"].images)
    # int8 features are close to fp32 but not the same numbers (the int8 session really ran)
    close = np.abs(features["train"] - fp32_train).mean() / np.abs(fp32_train).mean()
    assert (0 < close < 1) if record["chosen"] == "int8" else close == 0
    forced_int8, _ = probe_features(backbone, spec, data, precision="int8", progress=False)
    int8_gap = np.abs(forced_int8["train"] - fp32_train).mean() / np.abs(fp32_train).mean()
    # the int8 session really ran: not the fp32 numbers, the same order of magnitude (at 64 px the mean
    # relative difference is ~0.5, whatever the calibration batch: the reason int8 is not the default)
    assert 0 < int8_gap < 1
    forced, forced_record = probe_features(backbone, spec, data, precision="fp32", progress=False)
    np.testing.assert_array_equal(forced["train"], fp32_train)
    assert forced_record["chosen"] == "fp32" and "val_auroc_int8" not in forced_record


def test_feature_precision_is_checked_when_the_config_is_made():
    from mobilemed.errors import MobilemedError
    from mobilemed.training.config import ModelChoice, TrainConfig

    assert TrainConfig().model.feature_precision == "auto"
    with pytest.raises(MobilemedError, match="--feature-precision 'int4' is unknown; choose one of fp32, auto, int8"):
        ModelChoice(feature_precision="int4")


def test_a_feature_change_that_costs_validation_auroc_is_caught():
    """compare_precisions on real structure: features that separate the classes, and a degraded copy."""
    from mobilemed.training.feature_precision import INT8_TOLERANCE, compare_precisions

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    clean = rng.normal(size=(120, 32)) + labels[:, None] * 0.6
    degraded = clean + rng.normal(scale=2.0, size=clean.shape)
    result = compare_precisions(clean, degraded, labels, "binary")
    assert result["val_auroc_fp32"] - result["val_auroc_int8"] > INT8_TOLERANCE
    assert compare_precisions(clean, clean.copy(), labels, "binary")["val_auroc_int8"] == result["val_auroc_fp32"]
    assert "reason" in compare_precisions(clean[:3], clean[:3], np.array([0, 1, 1]), "binary")


def test_a_resumed_probe_reuses_the_precision_auto_chose(tmp_path):
    """auto's choice depends on timings; --resume must train on the features the interrupted run used."""
    from mobilemed.run_files import write_json
    from mobilemed.training.strategies import _recorded_precision

    assert _recorded_precision(tmp_path) is None  # killed before the feature pass: auto decides afresh
    write_json(tmp_path / "feature_pass.json", {"requested": "auto", "chosen": "int8"})
    assert _recorded_precision(tmp_path) == "int8"
    write_json(tmp_path / "feature_pass.json", {"requested": "auto", "chosen": "int4"})
    assert _recorded_precision(tmp_path) is None


def test_a_probe_with_crops_learns_on_crops_of_the_training_images_and_scores_whole_images(imagenet_cache):
    from mobilemed.data.transforms import Augmentation
    from mobilemed.training.feature_precision import probe_features

    backbone, spec, table = pneumonia_backbone()
    part = lambda rows: SimpleNamespace(images=table.images[rows], labels=table.labels[rows])  # noqa: E731
    data = {"train": part(slice(0, 40)), "val": part(slice(40, 60))}
    plain, _ = probe_features(backbone, spec, data, precision="fp32", progress=False)
    cropped, record = probe_features(backbone, spec, data, precision="fp32", progress=False, augmentation=Augmentation(crop_scale=0.35))
    again, _ = probe_features(backbone, spec, data, precision="fp32", progress=False, augmentation=Augmentation(crop_scale=0.35))
    other_seed, _ = probe_features(backbone, spec, data, precision="fp32", progress=False, augmentation=Augmentation(crop_scale=0.35), seed=1)
    assert record["augmentation"] == {"crop_scale": 0.35, "hflip": False, "intensity": 0.0}
    np.testing.assert_array_equal(cropped["val"], plain["val"])  # validation (and test) images stay whole
    np.testing.assert_array_equal(cropped["train"], again["train"])  # reproducible from the seed
    change = np.abs(cropped["train"] - plain["train"]).mean() / np.abs(plain["train"]).mean()
    assert change > 0.1 and not np.array_equal(cropped["train"], other_seed["train"])
