"""The report's Grad-CAM gallery: which examples, in which order, and what lands on disk."""
import json

import numpy as np
import torch

from mobilemed.explain.gallery import classify_outcomes, select_examples, write_gallery
from mobilemed.models import build_model
from mobilemed.spec import GRAY_MEAN, GRAY_STD, ModelSpec


def _spec(task, classes, in_chans=1, thresholds=()):
    mean, std = (GRAY_MEAN, GRAY_STD) if in_chans == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ModelSpec(arch="mobilenet_v3_small", class_names=list(classes), task=task, image_size=64,
                     in_chans=in_chans, mean=mean, std=std, thresholds=list(thresholds))


def test_binary_kinds_follow_the_stored_threshold_and_the_most_confident_come_first():
    spec = _spec("binary", ["normal", "pneumonia"], thresholds=[0.3])
    y_true = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    y_prob = np.array([0.9, 0.35, 0.1, 0.8, 0.31, 0.05, 0.2, 0.2])
    outcomes = classify_outcomes(spec, y_true, y_prob)
    assert outcomes.kind.tolist() == ["TP", "TP", "FN", "FP", "FP", "TN", "FN", "TN"]
    picks = select_examples(outcomes, per_kind=1)
    # TP: highest P(pneumonia); FN: the most confidently missed, i.e. lowest P(pneumonia).
    assert picks == [(0, 0), (3, 0), (5, 0), (2, 0)]
    assert outcomes.target[[0, 2]].tolist() == [1, 0]  # the heatmap explains the predicted class
    np.testing.assert_allclose(outcomes.probability[[0, 2]], [0.9, 0.9])  # ... with its probability


def test_multiclass_and_multilabel_kinds():
    spec = _spec("multiclass", ["grade 0", "grade 1", "grade 2"])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3]])
    outcomes = classify_outcomes(spec, np.array([0, 2, 1]), probs)
    assert outcomes.kind.tolist() == ["correct_grade-0", "incorrect_grade-1", "correct_grade-1"]
    assert outcomes.predicted_label == ["grade 0", "grade 1", "grade 1"]

    spec = _spec("multilabel", ["effusion", "mass"], thresholds=[0.5, 0.4])
    probs = np.array([[0.9, 0.1], [0.2, 0.45], [0.1, 0.3]])
    outcomes = classify_outcomes(spec, np.array([[1, 1], [0, 0], [0, 1]]), probs)
    assert outcomes.kind.tolist() == ["TP", "FP", "FN"]  # judged on each image's most probable finding
    assert outcomes.target.tolist() == [0, 1, 1]
    assert outcomes.true_label == ["effusion|mass", "none", "mass"]
    assert outcomes.predicted_label == ["effusion", "mass", "none"]


def test_write_gallery_end_to_end_and_rerun_removes_stale_overlays(tmp_path):
    torch.manual_seed(0)
    spec = _spec("binary", ["normal", "pneumonia"])
    model = build_model(spec).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 64, 64), dtype=np.uint8)
    files = [f"img_{i}.png" for i in range(12)]
    y_true = np.arange(12) % 2
    y_prob = np.linspace(0.05, 0.95, 12)[rng.permutation(12)]

    entries = write_gallery(model, spec, images, files, y_true, y_prob, tmp_path, per_kind=2)
    assert len(entries) == 8 and {e["kind"] for e in entries} == {"TP", "FP", "TN", "FN"}
    # how the heatmaps were made: the stride-8 block of MobileNetV3-Small, 8x8 at 64 px
    assert all(e["cam"] == {"method": "Grad-CAM", "layer": "backbone.features.3", "map_size": [8, 8], "members": 1}
               for e in entries)
    assert all(-1 <= e["randomised_r"] <= 1 for e in entries)
    assert all(0 <= e["edge_heat"] <= 1 and isinstance(e["peak_at_edge"], bool) for e in entries)
    assert json.loads((tmp_path / "gallery.json").read_text()) == entries
    assert set(entries[0]) >= {"file", "png", "kind", "true_label", "predicted_label", "probability"}
    for entry in entries:
        assert (tmp_path / entry["png"]).read_bytes()[:4] == b"\x89PNG"
        assert entry["png"].startswith(entry["kind"] + "_")

    fewer = write_gallery(model, spec, images, files, y_true, y_prob, tmp_path, per_kind=1)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(e["png"] for e in fewer)


def test_write_gallery_colour_multiclass(tmp_path):
    torch.manual_seed(0)
    spec = _spec("multiclass", ["a", "b/c", "d"], in_chans=3)
    model = build_model(spec).eval()
    images = np.random.default_rng(1).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    probs = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.8 + 0.2 / 3
    entries = write_gallery(model, spec, images, list("uvwxyz"), np.array([0, 1, 2, 1, 1, 0]), probs,
                            tmp_path, per_kind=1)
    assert [e["kind"] for e in entries] == ["correct_a", "incorrect_a", "correct_b-c", "correct_d",
                                            "incorrect_d"]
    assert all((tmp_path / e["png"]).is_file() for e in entries)


def test_report_states_the_cam_layer_method_and_randomised_weights_check(tmp_path):
    from mobilemed.evaluation.report import write_report
    from tests.evaluation.conftest import make_run

    run = make_run(tmp_path / "run")
    torch.manual_seed(0)
    spec = _spec("binary", ["normal", "pneumonia"])
    rng = np.random.default_rng(0)
    entries = write_gallery(build_model(spec).eval(), spec, rng.integers(0, 256, (8, 64, 64), dtype=np.uint8),
                            [f"img_{i}.png" for i in range(8)], np.arange(8) % 2, np.linspace(0.1, 0.9, 8),
                            run / "gallery", per_kind=1)
    text = write_report(run, save_plots=False).read_text()
    assert ("Heatmaps: Grad-CAM at layer backbone.features.3, whose map is 8x8 before upsampling" in text)
    mean_r = np.mean([e["randomised_r"] for e in entries])
    assert f"correlate r = {mean_r:.2f} on average" in text
    peaks = sum(e["peak_at_edge"] for e in entries)
    assert (f"{np.mean([e['edge_heat'] for e in entries]):.0%} of the heat on average (a flat map: 44%); "
            f"{peaks} of {len(entries)} heatmaps peak there.") in text
    assert text.count("peaks on the image's edge</b>") == peaks
