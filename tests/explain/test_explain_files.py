"""explain_files, the library verb behind `mobilemed explain`, and the target/caption it shares with the gallery."""
import numpy as np
import pytest
import torch

from mobilemed.checkpoint import save_checkpoint
from mobilemed.decision import probabilities
from mobilemed.errors import MobilemedError
from mobilemed.explain.files import cam_caption, cam_targets, explain_files
from mobilemed.explain.gallery import classify_outcomes
from mobilemed.inference import Predictor
from mobilemed.models import build_model
from mobilemed.spec import GRAY_MEAN, GRAY_STD, ModelSpec
from tests.conftest import make_blob_folder


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(arch="mobilenet_v3_small", class_names=["normal", "pneumonia"], task="binary",
                     image_size=64, in_chans=1, mean=GRAY_MEAN, std=GRAY_STD, thresholds=[0.5])
    return save_checkpoint(tmp_path / "best.pt", build_model(spec), spec)


def test_explain_files_returns_what_it_wrote(checkpoint, tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=2, size=48, splits=("",))
    (data / "normal" / "broken.png").write_bytes(b"not a png")
    predictor = Predictor.from_checkpoint(checkpoint)
    done = explain_files(predictor, [data], tmp_path / "out", target="PNEUMONIA", skip_bad=True)
    assert [s[0].endswith("broken.png") for s in done.skipped] == [True]
    assert len(done.images) == 4 and all(i.png.is_file() and i.target == "pneumonia" for i in done.images)
    image = done.images[0]
    pixels = predictor.read_image(image.file)[None]
    expected = predictor.predict_images(pixels, [image.file])
    assert image.probability == pytest.approx(float(expected.probabilities[0]), abs=1e-6)
    assert image.predicted == expected.labels[0] and image.heatmap.min() >= 0 and image.heatmap.max() <= 1


def test_explain_files_refuses_before_writing(checkpoint, tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=1, size=48, splits=("",))
    with pytest.raises(MobilemedError, match="choose one of: normal, pneumonia"):
        explain_files(checkpoint, [data], tmp_path / "out", target="tumour")
    (data / "normal" / "normal_0.png").write_bytes(b"junk")
    with pytest.raises(MobilemedError, match="normal_0.png"):
        explain_files(checkpoint, [data / "normal"], tmp_path / "out2")
    assert not list((tmp_path / "out2").glob("*.png"))  # nothing half-written


@pytest.mark.parametrize("task,classes,logits", [
    ("binary", ["a", "b"], [[-2.0], [0.3], [1.5]]),
    ("multiclass", ["a", "b", "c"], [[3.0, 0, 0], [0, 0.2, 0.1], [0, 0, 2]]),
    ("multilabel", ["a", "b", "c"], [[-3.0, 2, 0], [0.5, -1, 1], [-1, -1, -1]])])
def test_gallery_explains_the_same_class_with_the_same_probability(task, classes, logits):
    spec = ModelSpec(arch="mobilenet_v3_small", class_names=classes, task=task, image_size=64)
    prob = probabilities(np.array(logits), spec)
    target, p_target = cam_targets(prob, spec)
    y_true = np.zeros(prob.shape, dtype=int) if task == "multilabel" else np.zeros(len(prob), dtype=int)
    outcomes = classify_outcomes(spec, y_true, prob)
    assert outcomes.target.tolist() == target.tolist()
    np.testing.assert_allclose(outcomes.probability, p_target)
    assert cam_caption(classes[target[0]], p_target[0]) == f"Grad-CAM for {classes[target[0]]} (p = {p_target[0]:.2f})"
