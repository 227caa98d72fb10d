"""`mobilemed explain` end to end on a checkpoint of an untrained model (the CLI's plumbing, not Grad-CAM)."""
import re

import pytest
import torch

from mobilemed.checkpoint import save_checkpoint
from mobilemed.cli.main import main
from mobilemed.models import build_model
from mobilemed.spec import GRAY_MEAN, GRAY_STD, ModelSpec
from tests.conftest import make_blob_folder


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(arch="mobilenet_v3_small", class_names=["normal", "pneumonia"], task="binary",
                     image_size=64, in_chans=1, mean=GRAY_MEAN, std=GRAY_STD)
    return save_checkpoint(tmp_path / "best.pt", build_model(spec), spec)


def test_explain_writes_one_overlay_per_image(checkpoint, tmp_path, capsys):
    data = make_blob_folder(tmp_path / "data", per_class=2, size=48, splits=("",))
    out = tmp_path / "overlays"
    assert main(["--quiet", "explain", str(checkpoint), str(data), "--class", "Pneumonia", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["normal_0_gradcam.png", "normal_1_gradcam.png", "pneumonia_0_gradcam.png",
                     "pneumonia_1_gradcam.png"]
    out = capsys.readouterr().out
    assert "Grad-CAM for pneumonia" in out
    assert len(re.findall(r"; \d+% of the heat on the edge", out)) == 4  # explain/edge_heat.py, per image


def test_unknown_class_lists_the_model_classes(checkpoint, tmp_path, capsys):
    data = make_blob_folder(tmp_path / "data", per_class=1, size=48, splits=("",))
    assert main(["explain", str(checkpoint), str(data), "--class", "tumour", "--out", str(tmp_path / "o")]) == 2
    assert "choose one of: normal, pneumonia" in capsys.readouterr().err
