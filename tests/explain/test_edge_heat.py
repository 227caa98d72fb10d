"""Heat on the image's edge (explain/edge_heat.py): the figure that says a model may be reading a laterality
marker, burned-in text or the film's border instead of the lungs."""
import numpy as np
import pytest
import torch

from mobilemed.data.transforms import to_model_input
from mobilemed.explain.edge_heat import band_area, describe_edge_heat, edge_heat
from mobilemed.explain.gradcam import compute_gradcam
from tests.explain import cam_models


def test_shares_of_flat_centred_and_cornered_maps():
    flat = edge_heat(np.ones((64, 64)))
    assert flat.share == pytest.approx(band_area()) == pytest.approx(0.4375)  # 64 px: an 8-px band
    assert not flat.peak_at_edge  # a flat map peaks nowhere

    centre = np.zeros((64, 64))
    centre[24:40, 24:40] = 1.0
    assert edge_heat(centre).share == 0.0 and not edge_heat(centre).peak_at_edge

    marker = np.full((64, 64), 0.1)
    marker[1:7, 56:62] = 1.0  # an "R" in the top right corner, as on many chest films
    heat = edge_heat(marker)
    expected = (0.1 * (4096 - 2304 - 36) + 36) / (0.1 * (4096 - 36) + 36)
    assert heat.share == pytest.approx(expected) and heat.peak_at_edge
    assert edge_heat(np.zeros((64, 64))).share == 0.0 and not edge_heat(np.zeros((64, 64))).peak_at_edge
    assert edge_heat(marker).to_dict() == {"edge_heat": round(expected, 4), "peak_at_edge": True}


def test_maps_too_small_for_a_band_or_not_2d_are_refused():
    with pytest.raises(ValueError, match="no edge band"):
        edge_heat(np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        edge_heat(np.ones((2, 64, 64)))


def test_a_model_that_reads_a_corner_mark_is_caught_and_one_that_reads_the_centre_is_not():
    """The patch model (cam_models.train_patch_model) learned that a bright square means its class. Put the
    square in the image's corners, where a laterality marker sits, and its Grad-CAM heat moves onto the
    edge; put it in the middle and the edge is cold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, spec = cam_models.train_patch_model()
        far = cam_models.SIZE - cam_models.PATCH
        corners = np.array([[0, 0], [0, far], [far, 0], [far, far]] * 5)
        middle = np.full((20, 2), (cam_models.SIZE - cam_models.PATCH) // 2)
        shares, peaks = {}, {}
        for name, where in (("corner", corners), ("middle", middle)):
            images, labels, _ = cam_models.patch_images(40, seed=2000, corners=np.repeat(where, 2, axis=0))
            x = to_model_input(images[labels == 1], spec)
            heat = [edge_heat(h) for h in compute_gradcam(model, x, spec=spec, target_classes=1)]
            shares[name] = np.mean([h.share for h in heat])
            peaks[name] = np.mean([h.peak_at_edge for h in heat])
    finally:
        torch.set_num_threads(threads)
    assert shares["corner"] > band_area() > shares["middle"], shares  # observed 0.51 and 0.10
    assert shares["corner"] - shares["middle"] > 0.3, shares
    # At 64 px a map cell is 8 px, and a 16-px square in a corner also covers one interior cell: the peak lands
    # in the 8-px band on some of the images only (0.4 observed), never when the square sits in the middle.
    assert peaks["corner"] >= 0.3 and peaks["middle"] == 0.0, (peaks, shares)


def test_the_sentence_counts_the_heatmaps_that_peak_on_the_edge():
    entries = [{"edge_heat": 0.7, "peak_at_edge": True}, {"edge_heat": 0.3, "peak_at_edge": False},
               {"edge_heat": 0.2, "peak_at_edge": False}, {"kind": "TP"}]
    text = describe_edge_heat(entries)
    assert "40% of the heat on average" in text and "1 of 3 heatmaps peak there" in text
    assert "Look at those" in text
    assert "Look at those" not in describe_edge_heat(entries[1:])
    assert describe_edge_heat([{"kind": "TP"}]) == ""
