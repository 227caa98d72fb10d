"""The notebook walk-through of the README, through the public API only (`from mobilemed import api as mm`):
train, evaluate, predict on a numpy batch, explain, audit."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import mobilemed
from mobilemed import api as mm
from tests.conftest import make_blob_folder


def test_a_notebook_trains_evaluates_predicts_and_explains(tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=8, size=40)
    run = mm.train(str(data), out=tmp_path / "run", mode="scratch", weights="none", arch="mobilenet_v3_small",
                   image_size=32, batch_size=16, epochs=1, gallery=False, n_bootstrap=20, progress=False)
    assert run.metrics["test"]["n"] == 16 and (run.run_dir / "best.pt").is_file()

    model = mm.load_model(run.run_dir / "best.pt", engine="torch")
    evaluation = mm.evaluate(model, str(data), n_bootstrap=0)
    assert evaluation.metrics["n"] == 16  # the run's own test split
    assert evaluation.metrics["auroc_macro"]["value"] == pytest.approx(run.metrics["test"]["auroc_macro"]["value"],
                                                                      abs=1e-6)

    files = sorted((data / "test").rglob("*.png"))
    images = np.stack([np.asarray(Image.open(f)) for f in files])  # (16, 40, 40) uint8, as a notebook holds them
    result = mm.predict(model, images)
    threshold = run.spec.thresholds[0]
    assert result.labels == ["pneumonia" if p >= threshold else "normal" for p in result.probabilities]
    from_files = mm.predict(model, files)
    np.testing.assert_allclose(result.probabilities, from_files.probabilities, atol=1e-6)

    explained = mm.explain(run.run_dir / "best.pt", files[:2], tmp_path / "cams")
    assert [e.png.name for e in explained.images] == [f"{f.stem}_gradcam.png" for f in files[:2]]
    assert all(e.png.is_file() and e.heatmap.max() <= 1 for e in explained.images)

    report = mm.audit(str(data))
    assert report.num_images == 48 and report.class_names == ["normal", "pneumonia"]


def test_the_package_exposes_the_api_lazily():
    assert mobilemed.train is mm.train and mobilemed.predict is mm.predict and mobilemed.load_model is mm.load_model


def test_the_api_refuses_what_the_cli_refuses(tmp_path):
    with pytest.raises(mobilemed.MobilemedError, match="unknown option 'epoch'"):
        mm.train("pneumoniamnist", out=tmp_path / "r", epoch=3)
    with pytest.raises(mobilemed.MobilemedError, match="batch-size"):
        mm.train("pneumoniamnist", out=tmp_path / "r", batch_size=0)
    assert not (tmp_path / "r").exists()
    with pytest.raises(mobilemed.MobilemedError, match="uint8"):
        mm.predict(object.__new__(type("M", (), {"predict_images": None, "spec": None})), np.zeros((2, 8, 8)))
