"""The OOD detector fitted at training time: stored in the checkpoint, used by predict, evaluate and the report."""
import csv
import json

import numpy as np
import pytest
import torch

from mobilemed.batch_predict import predict_features_and_logits, predict_logits
from mobilemed.checkpoint import load_ood_detector, read_checkpoint
from mobilemed.cli.main import main
from mobilemed.inference import Predictor
from mobilemed.spec import ModelSpec
from mobilemed.training.detector import record_sources
from tests.conftest import train_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_checkpoint(tmp_path_factory.mktemp("ood"), image_px=48, image_size=64)


def test_checkpoint_carries_the_detector_and_its_threshold(tiny_run):
    checkpoint, _ = tiny_run
    payload = read_checkpoint(checkpoint)  # weights_only=True inside
    assert isinstance(payload["ood"]["precision"], torch.Tensor)
    detector = load_ood_detector(checkpoint)
    spec = ModelSpec.from_dict(payload["spec"])
    assert spec.ood_method == "mahalanobis_l2" and spec.ood_threshold == pytest.approx(detector.threshold_)
    assert spec.source_formats == ["png"] and spec.modalities == []
    assert spec.provenance["thresholds"] == {"data": str(checkpoint.parent.parent / "data"), "split": "val", "n": 16,
                                             "rule": "youden", "target": None,
                                             "neutral_logits": [0.0]}  # class-balanced loss: p = 0.5
    assert spec.provenance["ood_threshold"]["quantile"] == 0.99
    assert detector.means_.shape[0] == 2  # one Gaussian per class of the binary task
    test = json.loads((checkpoint.parent / "metrics.json").read_text())["test"]["ood"]
    assert test["n"] == 16 and 0 <= test["fraction_flagged"] <= 1 and test["threshold"] == spec.ood_threshold


def test_predict_writes_ood_columns_and_flags_foreign_images(tiny_run, tmp_path, capsys):
    checkpoint, data = tiny_run
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    rng = np.random.default_rng(1)
    from PIL import Image

    for i in range(3):  # colourful stripes: nothing like the gray blob images
        pixels = np.zeros((48, 48, 3), np.uint8)
        pixels[:, ::4] = rng.integers(0, 255, 3)
        Image.fromarray(pixels).save(foreign / f"stripes_{i}.png")
    out = tmp_path / "p.csv"
    assert main(["--quiet", "predict", str(checkpoint), str(foreign), str(data / "test"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[-5:-2] == ["ood_score", "in_distribution", "ood_reason"]
    stripes = [r for r in rows if "stripes" in r["file"]]
    assert all(r["in_distribution"] == "false" and "above the model's threshold" in r["ood_reason"] for r in stripes)
    own = [r for r in rows if "stripes" not in r["file"]]
    assert sum(r["in_distribution"] == "true" for r in own) >= 0.75 * len(own)
    assert "out of distribution" in capsys.readouterr().err


def test_scores_match_the_detector_on_the_backbone_features(tiny_run):
    checkpoint, data = tiny_run
    predictor = Predictor.from_checkpoint(checkpoint)
    files = sorted((data / "test").rglob("*.png"))[:5]
    result = predictor.predict_files(files)
    images = np.stack([predictor.read_image(f) for f in files])
    from mobilemed.data.transforms import to_model_input

    with torch.inference_mode():
        features = predictor.model.backbone(to_model_input(images, predictor.spec)).numpy()
    np.testing.assert_allclose(result.ood_score, predictor.ood.score(features), rtol=1e-3)


def test_tta_averages_logits_and_keeps_the_unshifted_features(tiny_run):
    checkpoint, data = tiny_run
    predictor = Predictor.from_checkpoint(checkpoint)
    images = np.stack([predictor.read_image(f) for f in sorted((data / "test").rglob("*.png"))[:6]])
    plain, _ = predict_features_and_logits(predictor.model, images, predictor.spec, tta=False)
    features, logits = predict_features_and_logits(predictor.model, images, predictor.spec, tta=True)
    np.testing.assert_allclose(features, plain, atol=1e-6 * np.abs(plain).max())
    np.testing.assert_allclose(logits, predict_logits(predictor.model, images, predictor.spec, tta=True), rtol=1e-5,
                               atol=1e-6)


def test_modality_never_seen_in_training_is_flagged(tiny_run, shared):
    checkpoint, _ = tiny_run
    predictor = Predictor.from_checkpoint(checkpoint)
    predictor.spec.modalities, predictor.spec.source_formats = ["CR", "DX"], ["dicom"]
    ct, cr = shared / "data/dicom/abdomen_ct_bigendian.dcm", shared / "data/dicom/chest_cr_monochrome2.dcm"
    result = predictor.predict_files([ct, cr])
    assert not result.in_distribution[0]
    assert result.ood_reason[0].startswith("DICOM modality CT, the model was trained on CR, DX")
    assert "modality" not in result.ood_reason[1]


def test_record_sources_reads_modality_and_body_part(shared, tmp_path):
    spec = ModelSpec(arch="mobilenet_v2", class_names=["a", "b"], task="binary")
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    record_sources(spec, [shared / "data/dicom/abdomen_ct_bigendian.dcm",
                          shared / "data/dicom/chest_cr_monochrome1.dcm", png])
    assert (spec.modalities, spec.body_parts, spec.source_formats) == (["CR", "CT"], ["ABDOMEN", "CHEST"],
                                                                       ["dicom", "png"])
    record_sources(spec, ["pneumoniamnist:train:0"])
    assert (spec.modalities, spec.source_formats) == ([], ["pneumoniamnist"])


def test_evaluate_reports_the_flagged_share_and_warns(tiny_run, tmp_path, capsys):
    checkpoint, data = tiny_run
    out = tmp_path / "eval"
    assert main(["evaluate", str(checkpoint), str(data), "--n-bootstrap", "0", "--out", str(out),
                 "--ood-max-share", "0"]) == 0
    ood = json.loads((out / "metrics.json").read_text())["ood"]
    assert ood["n"] == 16 and ood["max_share"] == 0
    flagged = ood["n_flagged"] > 0
    assert (ood["warning"] is not None) == flagged
    assert ("WARNING mobilemed.evaluation.ood_summary: OUT OF DISTRIBUTION" in capsys.readouterr().err) == flagged
    from mobilemed.evaluation.report import write_report

    html = write_report(out).read_text()
    assert f"{ood['n_flagged']} of 16 images flagged" in html


@pytest.fixture(scope="session")
def kermany_probe(shared, tmp_path_factory):
    """A real Kermany linear probe on 60 training images per class at 96 px (ImageNet weights from ../shared):
    its threshold sits near 5,200 and the abdominal CT scores about 13,900 (measured once, not asserted)."""
    root = tmp_path_factory.mktemp("kermany")
    for split, count in (("train", 60), ("test", 20)):
        for label in ("NORMAL", "PNEUMONIA"):
            folder = root / "data" / split / label
            folder.mkdir(parents=True)
            for source in sorted((shared / "data/kermany_cxr_224" / split / label).glob("*.jpeg"))[:count]:
                (folder / source.name).symlink_to(source)
    assert main(["--quiet", "train", str(root / "data"), "--mode", "linear-probe", "--weights",
                 str(shared / "weights/mobilenet_v2_imagenet.pth"), "--image-size", "96", "--epochs", "5",
                 "--no-gallery", "--n-bootstrap", "0", "--out", str(root / "run")]) == 0
    return root / "run" / "best.pt", root / "data"


def test_kermany_model_flags_the_abdominal_ct(kermany_probe, shared):
    checkpoint, data = kermany_probe
    predictor = Predictor.from_checkpoint(checkpoint)
    assert predictor.spec.source_formats == ["jpeg"] and predictor.spec.modalities == []
    result = predictor.predict_files([shared / "data/dicom/abdomen_ct_bigendian.dcm", data / "test"])
    assert not result.in_distribution[0]
    assert result.ood_reason[0].startswith("feature distance")
    assert result.ood_reason[0].endswith("(DICOM modality CT; the model was trained on jpeg files)")
    assert result.in_distribution[1:].mean() >= 0.8  # its own test images mostly pass


def test_bad_ood_quantile_stops_before_training(blob_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before anything is read or written
        main(["train", str(blob_folder), "--out", str(tmp_path / "run"), "--ood-quantile", "1.5"])
    assert exit_info.value.code == 2 and not (tmp_path / "run").exists()
    assert "--ood-quantile: 1.5 is out of range; use a number in (0, 1]" in capsys.readouterr().err
    from mobilemed.errors import MobilemedError
    from mobilemed.training.config import OperatingPointRule

    with pytest.raises(MobilemedError, match="quantile"):  # a Python caller gets the same refusal
        OperatingPointRule(ood_quantile=1.5)
