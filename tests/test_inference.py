"""Predictor: the checkpoint's own preprocessing, thresholds and temperature; DICOM input."""
import numpy as np
import pytest

from mobilemed.cli.main import main
from mobilemed.inference import Predictor
from tests.conftest import train_tiny_checkpoint


@pytest.fixture(scope="module")
def gray_checkpoint(tmp_path_factory):
    return train_tiny_checkpoint(tmp_path_factory.mktemp("gray"), image_px=48, image_size=64)


def test_predictions_follow_the_stored_threshold(gray_checkpoint):
    checkpoint, data = gray_checkpoint
    predictor = Predictor.from_checkpoint(checkpoint)
    result = predictor.predict_files([data / "test"])
    threshold = predictor.spec.thresholds[0]
    expected = np.where(result.probabilities >= threshold, "pneumonia", "normal")
    assert result.labels == expected.tolist()
    predictor.spec.thresholds = [0.0]
    assert set(predictor.predict_files([data / "test"]).labels) == {"pneumonia"}


def test_temperature_is_applied(gray_checkpoint):
    checkpoint, data = gray_checkpoint
    predictor = Predictor.from_checkpoint(checkpoint)
    files = sorted((data / "test").rglob("*.png"))[:4]
    base = predictor.predict_files(files)
    predictor.spec.temperature = 2.0
    softer = predictor.predict_files(files)
    np.testing.assert_allclose(softer.probabilities, 1 / (1 + np.exp(-base.logits.ravel() / 2)), rtol=1e-5)


def test_predict_cli_accepts_dicom_and_images_together(gray_checkpoint, shared, tmp_path, capsys):
    checkpoint, data = gray_checkpoint
    out = tmp_path / "p.csv"
    png = sorted((data / "test").rglob("*.png"))[0]
    code = main(["--quiet", "predict", str(checkpoint), str(shared / "data/dicom/chest_cr_monochrome2.dcm"),
                 str(png), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = out.read_text().strip().splitlines()
    assert len(rows) == 3 and rows[1].startswith(str(shared / "data/dicom/chest_cr_monochrome2.dcm"))
