"""The service answers real uploads with the model's decision and refuses bad ones with JSON 4xx, staying up."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from mobilemed.decision import decisions, label_text, probabilities
from mobilemed.inference import Predictor


@pytest.fixture(scope="module")
def client(served_run):
    from fastapi.testclient import TestClient

    from mobilemed.service.app import create_app

    checkpoint, _ = served_run
    return TestClient(create_app(checkpoint))


def test_predict_gives_the_checkpoints_decision_and_an_overlay(client, served_run, png_bytes, tmp_path):
    checkpoint, _ = served_run
    response = client.post("/v1/predict?explain=1", files={"file": ("x.png", png_bytes, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes)
    predictor = Predictor.from_checkpoint(checkpoint)
    probs = probabilities(predictor.logits(predictor.read_image(path)[None]), predictor.spec)
    assert answer["decision"] == label_text(decisions(probs, predictor.spec), predictor.spec)[0]
    assert answer["probabilities"]["pneumonia"] == pytest.approx(float(probs[0]), abs=1e-6)
    assert answer["thresholds"] == predictor.spec.thresholds and answer["positive_class"] == "pneumonia"
    overlay = Image.open(io.BytesIO(base64.b64decode(answer["gradcam_png"])))
    assert overlay.size == (64, 64) and np.asarray(overlay).std() > 0
    assert 0 <= answer["gradcam_edge_heat"] <= 1 and isinstance(answer["gradcam_peak_at_edge"], bool)


def test_a_dicom_upload_is_read_with_the_dicom_chain(client, dicom_path):
    with open(dicom_path, "rb") as handle:
        response = client.post("/v1/predict", files={"file": ("scan.bin", handle.read(), "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "dicom"


def test_bad_uploads_get_json_4xx_and_the_service_keeps_answering(client, bad_uploads, png_bytes):
    for name, (filename, content, status) in bad_uploads.items():
        response = client.post("/v1/predict", files={"file": (filename, content, "image/png")})
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"], name
        assert client.get("/healthz").json()["status"] == "ok"
    assert client.post("/v1/predict", files={"file": ("x.png", png_bytes, "image/png")}).status_code == 200


def test_model_endpoint_describes_the_spec_and_the_training(client):
    info = client.get("/v1/model").json()
    assert info["spec"]["class_names"] == ["normal", "pneumonia"]
    assert info["trained_on"]["mode"] == "scratch" and 0 <= info["trained_on"]["test_auroc"] <= 1
    assert client.get("/docs").status_code == 200 and "mobilemed" in client.get("/").text


def test_an_onnx_model_is_served_without_gradcam(served_run, png_bytes, tmp_path):
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from mobilemed.cli.main import main
    from mobilemed.service.app import create_app

    checkpoint, _ = served_run
    out = tmp_path / "model.onnx"
    assert main(["--quiet", "export", str(checkpoint), "--out", str(out)]) == 0
    client = TestClient(create_app(out))
    ok = client.post("/v1/predict", files={"file": ("x.png", png_bytes, "image/png")})
    assert ok.status_code == 200 and ok.json()["model"] == "model.onnx"
    refused = client.post("/v1/predict?explain=1", files={"file": ("x.png", png_bytes, "image/png")})
    assert refused.status_code == 400 and "checkpoint" in refused.json()["error"]
    assert client.get("/v1/model").json()["trained_on"]["mode"] == "scratch"
