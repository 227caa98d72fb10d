"""predict / evaluate on either engine: the same decisions from best.pt in torch, best.pt in ONNX Runtime and the
exported .onnx; streaming in bounded batches; DICOM UIDs; the OOD detector travels inside the export."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from mobilemed.cli.main import main
from tests.conftest import train_tiny_checkpoint

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(best.pt, best.onnx, data folder) of a tiny model trained with TTA, so the graph's averaging is checked."""
    root = tmp_path_factory.mktemp("engines")
    checkpoint, data = train_tiny_checkpoint(root, image_px=40, image_size=32, extra=["--tta"])
    assert main(["--quiet", "export", str(checkpoint)]) == 0
    return checkpoint, checkpoint.with_suffix(".onnx"), data


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_engine_gives_the_same_rows(exported, tmp_path, capsys):
    checkpoint, onnx_file, data = exported
    outputs = {}
    for name, model, engine in (("torch", checkpoint, "torch"), ("pt-onnx", checkpoint, "onnx"),
                                ("export", onnx_file, "auto")):
        out = tmp_path / f"{name}.csv"
        assert main(["--quiet", "predict", str(model), str(data / "test"), "--out", str(out), "--engine", engine,
                     "--batch-size", "5"]) == 0, capsys.readouterr().err
        outputs[name] = read_rows(out)
    reference = outputs["torch"]
    assert len(reference) == len(list((data / "test").rglob("*.png")))
    from mobilemed.checkpoint import load_checkpoint

    threshold = load_checkpoint(checkpoint)[1].thresholds[0]
    for name, rows in outputs.items():
        assert [r["file"] for r in rows] == [r["file"] for r in reference], name
        # the same decision, unless float rounding puts a probability on the other side of the threshold
        assert all(r["predicted"] == ref["predicted"] or abs(float(ref["prob_pneumonia"]) - threshold) < 1e-4
                   for r, ref in zip(rows, reference)), name
        np.testing.assert_allclose([float(r["prob_pneumonia"]) for r in rows],
                                   [float(r["prob_pneumonia"]) for r in reference], atol=1e-4)
        # OOD scores are compared on identical features in test_the_export_carries_the_ood_detector: this tiny
        # model's detector (16 training images, 1024 features) amplifies float noise in the features
        assert all(r["ood_score"] for r in rows), name


def test_an_onnx_model_cannot_run_in_torch(exported, capsys):
    _, onnx_file, data = exported
    assert main(["predict", str(onnx_file), str(data / "test"), "--engine", "torch"]) == 2
    assert "runs in ONNX Runtime only" in capsys.readouterr().err


def test_predict_streams_in_batches_and_keeps_input_order(exported, tmp_path):
    from mobilemed.engines import load_predictor
    from mobilemed.prediction import predict_to_csv

    checkpoint, _, data = exported
    predictor = load_predictor(checkpoint, engine="torch")
    seen = []
    original = predictor.predict_images

    def recording(images, files):
        seen.append(len(images))
        return original(images, files)

    predictor.predict_images = recording
    folder = tmp_path / "mixed"
    shutil.copytree(data / "test", folder)
    (folder / "normal" / "zz_broken.png").write_bytes(b"not an image")
    summary = predict_to_csv(predictor, [folder], tmp_path / "p.csv", skip_bad=True, batch_size=3)
    rows = read_rows(tmp_path / "p.csv")
    files = sorted(str(p) for p in folder.rglob("*.png"))
    assert [r["file"] for r in rows] == files and summary.files == len(files)
    assert max(seen) <= 3 and sum(seen) == len(files) - 1 == summary.predicted
    broken = next(r for r in rows if r["file"].endswith("zz_broken.png"))
    assert broken["predicted"] == "" and "zz_broken.png" in broken["error"]


def test_dicom_rows_carry_their_uids(exported, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    checkpoint, _, _ = exported
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's bundled CT_small.dcm is absent")
    out = tmp_path / "dicom.csv"
    assert main(["--quiet", "predict", str(checkpoint), path, "--out", str(out)]) == 0
    row = read_rows(out)[0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert row["sop_instance_uid"] == ds.SOPInstanceUID and row["study_instance_uid"] == ds.StudyInstanceUID


def test_evaluate_an_export_like_its_checkpoint(exported, tmp_path):
    checkpoint, onnx_file, data = exported
    metrics = {}
    for name, model in (("pt", checkpoint), ("onnx", onnx_file)):
        out = tmp_path / name
        assert main(["--quiet", "evaluate", str(model), str(data), "--out", str(out), "--n-bootstrap", "0"]) == 0
        metrics[name] = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx"]["n"] == metrics["pt"]["n"] == 16  # the run's own test split, from split.csv
    assert metrics["onnx"]["auroc_macro"]["value"] == pytest.approx(metrics["pt"]["auroc_macro"]["value"], abs=1e-6)
    assert metrics["onnx"]["ood"]["n_flagged"] == metrics["pt"]["ood"]["n_flagged"]


def test_the_export_carries_the_ood_detector(exported):
    """The graph's distance is the detector's own, to float64 precision, on the features the graph computed."""
    from mobilemed.checkpoint import load_ood_detector
    from mobilemed.inference import Predictor
    from mobilemed.onnx_model import OnnxModel

    checkpoint, onnx_file, data = exported
    parity = json.loads(onnx_file.with_name(onnx_file.name + ".parity.json").read_text())
    assert parity["fp32_max_abs_logit_diff"] < 1e-3 and "fp32_max_rel_ood_score_diff" in parity
    model, detector = OnnxModel(onnx_file), load_ood_detector(checkpoint)
    assert [o.name for o in model.session.get_outputs()] == ["logits", "features", "ood_score"]
    assert model.spec.ood_threshold == pytest.approx(detector.threshold_)
    predictor = Predictor.from_checkpoint(checkpoint)
    images = np.stack([predictor.read_image(f) for f in sorted((data / "test").rglob("*.png"))])
    out = model.forward(images)
    np.testing.assert_allclose(out["ood_score"], detector.score(out["features"]), rtol=1e-6)


def test_evaluate_model_is_a_library_verb_with_the_clis_guarantees(exported, tmp_path):
    """Called from Python: the run's own test split, the OOD block, and nothing written without `out`."""
    from mobilemed.engines import load_predictor
    from mobilemed.evaluate_model import evaluate_model

    checkpoint, _, data = exported
    done = evaluate_model(load_predictor(checkpoint, engine="torch"), str(data), n_bootstrap=0)
    assert done.out is None and done.metrics["n"] == len(done.labels) == 16
    assert done.metrics["evaluation"]["split"] == "test" and "ood" in done.metrics
    assert done.probabilities.shape == (16,) and set(np.unique(done.labels)) == {0, 1}
    external = evaluate_model(checkpoint, str(data / "test"), split="all", n_bootstrap=0, out=tmp_path / "ext")
    assert external.metrics["n"] == 16 and (tmp_path / "ext" / "metrics.json").is_file()
