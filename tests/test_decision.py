"""One decision rule: the same logits give the same decisions in predict, evaluate, explain and the gallery."""
import numpy as np
import pytest
import torch

from mobilemed.cli.main import main
from mobilemed.checkpoint import save_checkpoint
from mobilemed.decision import class_probabilities, decisions, label_text, probabilities
from mobilemed.evaluation.metrics import compute_metrics
from mobilemed.explain.gallery import classify_outcomes
from mobilemed.explain.gradcam import compute_gradcam, default_targets
from mobilemed.inference import Predictor
from mobilemed.models import build_model
from mobilemed.spec import GRAY_MEAN, GRAY_STD, ModelSpec

# Hand-computed cases. Binary, T = 2, threshold 0.55: p = sigmoid(z / 2) = .378 .525 .537 .562 .818; the
# logit 0.3 would be positive without the temperature (sigmoid(0.3) = .574), and is negative with it.
BINARY = dict(logits=[[-1.0], [0.2], [0.3], [0.5], [3.0]], temperature=2.0, thresholds=[0.55],
              classes=["normal", "pneumonia"], expected=["normal", "normal", "normal", "pneumonia", "pneumonia"])
MULTICLASS = dict(logits=[[2.0, 1.0, 0.0], [0.0, 0.5, 0.4], [-1.0, 0.0, 3.0]], temperature=1.5, thresholds=[],
                  classes=["grade 0", "grade 1", "grade 2"], expected=["grade 0", "grade 1", "grade 2"])
# Per-finding thresholds 0.5 and 0.8: p = [.5 .5], [.88 .88], [.27 .73], [.95 .05]; p == threshold is positive.
MULTILABEL = dict(logits=[[0.0, 0.0], [2.0, 2.0], [-1.0, 1.0], [3.0, -3.0]], temperature=1.0, thresholds=[0.5, 0.8],
                  classes=["effusion", "mass"], expected=["effusion", "effusion|mass", "none", "effusion"])
TASKS = {"binary": BINARY, "multiclass": MULTICLASS, "multilabel": MULTILABEL}


def _spec(task: str, case: dict, image_size: int = 32) -> ModelSpec:
    return ModelSpec(arch="mobilenet_v3_small", class_names=case["classes"], task=task, image_size=image_size,
                     in_chans=1, mean=GRAY_MEAN, std=GRAY_STD, thresholds=case["thresholds"],
                     temperature=case["temperature"])


class FixedLogits(Predictor):
    """The real Predictor with the network's forward pass replaced by given logits."""

    def __init__(self, spec: ModelSpec, logits):
        super().__init__(torch.nn.Identity(), spec)
        self.fixed = np.asarray(logits, dtype=np.float32)

    def logits(self, images, batch_size: int = 64):
        return self.fixed


@pytest.mark.parametrize("task", sorted(TASKS))
def test_predict_evaluate_explain_and_gallery_agree(task):
    case = TASKS[task]
    spec = _spec(task, case)
    n = len(case["logits"])
    predicted = FixedLogits(spec, case["logits"]).predict_images(np.zeros((n, 32, 32), np.uint8), list("abcde")[:n])
    assert predicted.labels == case["expected"]  # predict

    names = case["classes"]
    if task == "multilabel":
        truth = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
        hits = np.array([[n in label.split("|") for n in names] for label in case["expected"]])
        report = compute_metrics(truth, predicted.probabilities, task=task, class_names=names,
                                 thresholds=spec.thresholds, n_bootstrap=0)
        for k, name in enumerate(names):  # evaluate: each finding's [[TN, FP], [FN, TP]] from the same hits
            t, h = truth[:, k] == 1, hits[:, k]
            expected_matrix = [[int(np.sum(~t & ~h)), int(np.sum(~t & h))], [int(np.sum(t & ~h)), int(np.sum(t & h))]]
            assert report.per_class[name]["confusion_matrix"] == expected_matrix
        outcomes = classify_outcomes(spec, truth, predicted.probabilities)
    else:
        truth = np.arange(n) % len(names)
        pred_idx = np.array([names.index(label) for label in case["expected"]])
        report = compute_metrics(truth, predicted.probabilities, task=task, class_names=names,
                                 thresholds=spec.thresholds, n_bootstrap=0)
        expected_matrix = np.zeros((len(names), len(names)), int)
        np.add.at(expected_matrix, (truth, pred_idx), 1)
        assert report.confusion_matrix == expected_matrix.tolist()  # evaluate
        assert default_targets(predicted.probabilities, spec).tolist() == pred_idx.tolist()  # explain's default
        outcomes = classify_outcomes(spec, truth, predicted.probabilities)
        assert outcomes.target.tolist() == pred_idx.tolist()
    assert outcomes.predicted_label == case["expected"]  # gallery


def test_probabilities_and_decisions_by_hand():
    p = probabilities(BINARY["logits"], "binary", 2.0)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-np.ravel(BINARY["logits"]) / 2)), rtol=1e-12)
    assert decisions(p, "binary", [0.55]).tolist() == [0, 0, 0, 1, 1]
    assert decisions(probabilities(BINARY["logits"], "binary"), "binary", [0.55]).tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(class_probabilities(p, "binary")[:, 0], 1 - p)
    soft = probabilities(MULTICLASS["logits"], "multiclass", 1.5)
    z = np.asarray(MULTICLASS["logits"]) / 1.5
    np.testing.assert_allclose(soft, np.exp(z) / np.exp(z).sum(1, keepdims=True), rtol=1e-12)
    # Large logits neither overflow nor lose the answer.
    np.testing.assert_allclose(probabilities([[-800.0], [800.0]], "binary"), [0.0, 1.0])
    assert label_text(np.zeros((1, 2), bool), ["a", "b"]) == ["none"]
    with pytest.raises(ValueError, match="thresholds"):
        decisions(p, "binary")


def test_explain_cli_and_gradcam_follow_the_predicted_class(tmp_path, capsys):
    """A real model: Grad-CAM's and the explain command's default target is the class predict reports."""
    from PIL import Image

    from mobilemed.data.transforms import to_model_input

    torch.manual_seed(0)
    spec = _spec("binary", BINARY, image_size=64)
    model = build_model(spec)
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64), dtype=np.uint8)
    x = to_model_input(images, spec)
    # Fresh BatchNorm statistics (mean 0, var 1) make an untrained network answer the same for every image;
    # the statistics of this batch make the logits differ from image to image.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(x)
    model.eval()
    files = []
    for i, image in enumerate(images):
        Image.fromarray(image, "L").save(tmp_path / f"img{i}.png")
        files.append(str(tmp_path / f"img{i}.png"))
    predictor = Predictor(model, spec)
    spec.thresholds = [float(np.median(probabilities(predictor.logits(images), spec)))]  # two of each class
    predicted = predictor.predict_images(images, files)
    assert sorted(predicted.labels) == ["normal", "normal", "pneumonia", "pneumonia"]

    classes = [spec.class_names.index(label) for label in predicted.labels]
    np.testing.assert_allclose(compute_gradcam(model, x, spec=spec),
                               compute_gradcam(model, x, spec=spec, target_classes=classes), atol=1e-6)

    checkpoint = save_checkpoint(tmp_path / "best.pt", model, spec)
    assert main(["--quiet", "explain", str(checkpoint), *files, "--out", str(tmp_path / "cam")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "predicted" in line]
    for line, label in zip(lines, predicted.labels):
        assert f"predicted {label}; Grad-CAM for {label} " in line


def test_a_prediction_loads_neither_evaluation_nor_scipy():
    """The deployment path: a Predictor's answer needs decision, not evaluation (nor its scipy/sklearn)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from mobilemed.inference import Predictor\nfrom mobilemed.models import build_model\n"
            "from mobilemed.spec import ModelSpec\n"
            "spec = ModelSpec(arch='mobilenet_v3_small', class_names=['a', 'b'], task='binary', image_size=32)\n"
            "Predictor(build_model(spec), spec).predict_images(np.zeros((2, 32, 32, 3), np.uint8), ['x', 'y'])\n"
            "print(sorted(m for m in ('scipy', 'sklearn', 'matplotlib', 'mobilemed.evaluation', 'mobilemed.training')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
