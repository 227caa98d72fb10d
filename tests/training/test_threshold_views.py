"""--threshold-views V: the operating point chosen on V augmented views of every validation (or out-of-fold)
image, pooled, with the plateau's standard error counted in images."""
import json

import numpy as np
import pytest
import torch

from mobilemed.checkpoint import read_checkpoint
from mobilemed.cli.main import main
from mobilemed.data.transforms import Augmentation
from mobilemed.evaluation.thresholds import choose_thresholds
from mobilemed.spec import ModelSpec
from mobilemed.training.config import TrainConfig
from mobilemed.training.finish import choose_operating_point
from mobilemed.training.threshold_views import VIEWS_FILE, pooled, read_views, view_logits
from tests.conftest import make_blob_folder, tiny_train_args


def plateau_case():
    """400 validation images: J is 0.93 at thresholds in (0.45, 0.2) and 0.90 at 0.5 (six positives between),
    within two standard errors counted on 400 images (2 x 0.018), not on 4 x 400 rows (2 x 0.009)."""
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    p = np.r_[rng.uniform(0.0, 0.2, 190), rng.uniform(0.6, 0.9, 10),  # negatives: 5% false positives above 0.6
              rng.uniform(0.6, 1.0, 190), rng.uniform(0.25, 0.45, 6), rng.uniform(0.0, 0.2, 4)]
    return y, p


def test_identical_views_choose_what_the_plain_images_choose_and_views_widen_the_standard_error():
    y, p = plateau_case()
    plain = choose_thresholds(y, p, task="binary", neutral=[0.5])
    copies = choose_thresholds(np.tile(y, 4), np.tile(p, 4), task="binary", neutral=[0.5], views=4)
    as_if_independent = choose_thresholds(np.tile(y, 4), np.tile(p, 4), task="binary", neutral=[0.5])
    assert copies == plain == [0.5]
    assert as_if_independent[0] < 0.45  # a 2x narrower plateau leaves the neutral point out


def test_pooled_rows_pair_every_view_with_its_own_image_label():
    labels = np.array([0, 1, 1])
    logits = np.arange(2 * 3, dtype=np.float32).reshape(2, 3, 1)  # view v, image i -> 3 v + i
    rows_y, rows_logits = pooled(labels, logits)
    assert rows_y.tolist() == [0, 1, 1, 0, 1, 1]
    assert rows_logits.reshape(-1).tolist() == [0, 1, 2, 3, 4, 5]
    multilabel = np.array([[0, 1], [1, 0], [1, 1]])
    assert pooled(multilabel, np.zeros((2, 3, 2)))[0].tolist() == multilabel.tolist() * 2


def test_views_are_the_augmentations_draws_reproducible_and_different_from_each_other():
    torch.manual_seed(0)
    spec = ModelSpec(arch="mobilenet_v3_small", class_names=["normal", "pneumonia"], task="binary", image_size=32,
                     in_chans=1, mean=[0.5], std=[0.25])
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32), dtype=np.uint8)
    augmentation = Augmentation(crop_scale=0.5, intensity=0.3)
    a = view_logits(model, images, spec, augmentation, views=3, seed=7)
    b = view_logits(model, images, spec, augmentation, views=3, seed=7)
    assert a.shape == (3, 5, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1]) and not np.allclose(a, view_logits(model, images, spec, augmentation,
                                                                            views=3, seed=8))


@pytest.mark.parametrize("cv", [[], ["--cv", "2"]])
def test_a_run_chooses_its_threshold_on_the_saved_views(tmp_path, cv):
    data = make_blob_folder(tmp_path / "data", per_class=8, size=32)
    run = tmp_path / "run"
    assert main(["--quiet", "train", str(data), "--out", str(run), *tiny_train_args(image_size=32), *cv,
                 "--threshold-views", "3", "--crop-scale", "0.6", "--intensity", "0.2"]) == 0
    logits, labels = read_views(run)
    n_val = 16 if not cv else 32  # under --cv the views are the pooled out-of-fold images of train+val
    assert logits.shape == (3, n_val, 1) and labels.shape == (n_val,)
    spec = read_checkpoint(run / "best.pt")["spec"]
    assert spec["provenance"]["thresholds"]["views"] == 3
    assert "each image in 3 augmented views" in (run / "report.html").read_text()
    if cv:  # each fold saved its own held-out images' views; the run's are the two put together
        folds = [read_views(run / "folds" / f"fold{k}")[0] for k in range(2)]
        assert sum(f.shape[1] for f in folds) == n_val
    from mobilemed.run_config import read_config

    config = TrainConfig.from_dict(read_config(run))
    split = np.loadtxt(run / "split.csv", delimiter=",", dtype=str, skiprows=1, usecols=(1, 3))
    kept = {"train", "val"} if cv else {"train"}
    train_labels = np.array([int(label == "pneumonia") for s, label in split if s in kept])
    val = np.load(run / "predictions_val.npz")
    (threshold,), _ = choose_operating_point(ModelSpec.from_dict(spec), train_labels, val["y_true"], val["logits"],
                                             config, logits)
    assert spec["thresholds"] == [pytest.approx(threshold)]


@pytest.mark.parametrize("extra, words", [
    (["--threshold-views", "65"], ["--threshold-views", "0 to 64", "65"]),
    (["--threshold-views", "2", "--threshold-rule", "fixed"], ["--threshold-views", "fixed"]),
])
def test_bad_threshold_views_are_refused_before_the_run_folder(capsys, blob_folder, tmp_path, extra, words):
    code = main(["train", str(blob_folder), "--out", str(tmp_path / "r"), *tiny_train_args(), *extra])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words) and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_multiclass_run_has_no_threshold_to_move(capsys, tmp_path):
    data = tmp_path / "three"
    for k, name in enumerate(("a", "b", "c")):
        make_blob_folder(tmp_path / f"src{k}", per_class=4, size=32)
        for split in ("train", "val", "test"):
            (data / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / f"src{k}" / split / "pneumonia").rename(data / split / name)
    code = main(["train", str(data), "--out", str(tmp_path / "r"), *tiny_train_args(), "--threshold-views", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--threshold-views" in err and "multi-class" in err
    assert not (tmp_path / "r").exists()
