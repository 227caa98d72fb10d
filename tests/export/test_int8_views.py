"""The int8 file's operating point when training chose its threshold on augmented views (--threshold-views)."""
import numpy as np

from mobilemed.export.exporter import int8_operating_point
from mobilemed.spec import ModelSpec


def spec_with(views: int | None) -> ModelSpec:
    spec = ModelSpec(arch="mobilenet_v2", class_names=["normal", "pneumonia"], task="binary", image_size=64,
                     in_chans=1, mean=[0.5], std=[0.25], thresholds=[0.4])
    spec.provenance = {"thresholds": {"rule": "youden", "target": None, "neutral_logits": [0.0],
                                      **({"views": views} if views else {})}}
    return spec


def test_a_threshold_chosen_on_views_is_carried_by_rank_not_rechosen_on_the_plain_images():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    fp32 = np.r_[rng.normal(-2, 1.5, 100), rng.normal(2, 1.5, 100)].reshape(-1, 1).astype(np.float32)
    int8 = 1.2 * fp32 + 0.3  # int8 moves the logits but keeps their order
    called = 1 / (1 + np.exp(-fp32[:, 0])) >= 0.4

    carried = int8_operating_point(spec_with(4), None, {"logits": int8}, labels, fp32)
    (threshold,) = carried.thresholds
    assert np.array_equal(1 / (1 + np.exp(-int8[:, 0])) >= threshold, called)  # same order: the very images
    assert "carried by rank" in carried.provenance["int8"]["thresholds"]
    swapped = int8 + rng.normal(0, 0.3, int8.shape).astype(np.float32)  # a few swaps near the cut: the count holds
    (threshold,) = int8_operating_point(spec_with(4), None, {"logits": swapped}, labels, fp32).thresholds
    assert (1 / (1 + np.exp(-swapped[:, 0])) >= threshold).sum() == called.sum()

    rechosen = int8_operating_point(spec_with(None), None, {"logits": int8}, labels, fp32)
    assert rechosen.provenance["int8"]["thresholds"] == "re-chosen by the rule"
    assert rechosen.thresholds != carried.thresholds
