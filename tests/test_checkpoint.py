"""Checkpoints whose spec is inconsistent are refused on load with the file and the field named (issue 7,
item 7), and a checkpoint knows whether its run finished (item 1)."""
import math

import pytest
import torch

from mobilemed.checkpoint import is_complete, load_checkpoint, read_checkpoint, require_complete, save_checkpoint
from mobilemed.cli.main import main
from mobilemed.errors import MobilemedError
from mobilemed.models import build_model
from mobilemed.spec import ModelSpec
from tests.cli.test_bad_input import assert_clean_error


def tiny_spec(**changes) -> ModelSpec:
    fields = dict(arch="mobilenet_v2_035", class_names=["normal", "pneumonia"], task="binary", image_size=32,
                  in_chans=1, mean=(0.45,), std=(0.22,), thresholds=[0.3])
    return ModelSpec(**{**fields, **changes})


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory):
    spec = tiny_spec()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, build_model(spec), spec, complete=True)
    return path


def rewrite(source, target, **changes):
    """The checkpoint at `source` with payload fields replaced (spec=... replaces the whole spec)."""
    payload = read_checkpoint(source)
    payload.update(changes)
    torch.save(payload, target)
    return target


def spec_with(valid_checkpoint, **changes) -> dict:
    spec = dict(read_checkpoint(valid_checkpoint)["spec"])
    for key, value in changes.items():
        if value is DELETE:
            del spec[key]
        else:
            spec[key] = value
    return spec


DELETE = object()
BAD_SPECS = {  # name -> (spec changes, what the error must name)
    "missing class names": ({"class_names": DELETE}, "class_names"),
    "one class for a binary task": ({"class_names": ["normal"]}, "class_names"),
    "a string for class names": ({"class_names": "normal,pneumonia"}, "class_names"),
    "image size 0": ({"image_size": 0}, "image_size"),
    "image size as text": ({"image_size": "224"}, "image_size"),
    "thresholds of the wrong length": ({"thresholds": [0.5, 0.5]}, "thresholds"),
    "threshold outside [0, 1]": ({"thresholds": [1.5]}, "thresholds"),
    "unknown task": ({"task": "segmentation"}, "task"),
    "NaN temperature": ({"temperature": math.nan}, "temperature"),
    "negative temperature": ({"temperature": -1.0}, "temperature"),
    "mean for the wrong channel count": ({"mean": [0.5, 0.5, 0.5]}, "mean"),
    "zero std": ({"std": [0.0]}, "std"),
    "in_chans 2": ({"in_chans": 2}, "in_chans"),
    "dropout 1": ({"dropout": 1.0}, "dropout"),
}


@pytest.mark.parametrize("case", BAD_SPECS)
def test_inconsistent_spec_is_named_on_load(valid_checkpoint, tmp_path, case):
    changes, field = BAD_SPECS[case]
    bad = rewrite(valid_checkpoint, tmp_path / "bad.pt", spec=spec_with(valid_checkpoint, **changes))
    with pytest.raises(MobilemedError) as raised:
        load_checkpoint(bad)
    assert str(bad) in str(raised.value) and field in str(raised.value)


def test_a_string_for_a_spec(valid_checkpoint, tmp_path):
    bad = rewrite(valid_checkpoint, tmp_path / "bad.pt", spec="mobilenet_v2 binary")
    with pytest.raises(MobilemedError, match="invalid model spec.*mapping"):
        load_checkpoint(bad)


def test_wrong_architecture_for_the_weights(valid_checkpoint, tmp_path):
    bad = rewrite(valid_checkpoint, tmp_path / "bad.pt", spec=spec_with(valid_checkpoint, arch="mobilenet_v3_small"))
    with pytest.raises(MobilemedError) as raised:
        load_checkpoint(bad)
    message = str(raised.value)
    assert str(bad) in message and "do not fit its spec (mobilenet_v3_small)" in message
    assert "look like mobilenet_v2_035" in message and len(message) < 800


def test_unknown_architecture(valid_checkpoint, tmp_path):
    bad = rewrite(valid_checkpoint, tmp_path / "bad.pt", spec=spec_with(valid_checkpoint, arch="resnet50"))
    with pytest.raises(MobilemedError, match="bad.pt: unknown architecture 'resnet50'"):
        load_checkpoint(bad)


def test_predict_on_an_inconsistent_checkpoint_exits_2_without_traceback(capsys, valid_checkpoint, tmp_path):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("L", (32, 32)).save(image)
    bad = rewrite(valid_checkpoint, tmp_path / "bad.pt", spec=spec_with(valid_checkpoint, image_size=0))
    code = main(["--quiet", "predict", str(bad), str(image)])
    assert_clean_error(code, capsys.readouterr().err, "bad.pt", "image_size")


def test_a_valid_checkpoint_loads_with_its_spec(valid_checkpoint):
    model, spec = load_checkpoint(valid_checkpoint)
    assert spec == tiny_spec() and spec.thresholds == [0.3]
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1)


def test_completeness_flag(valid_checkpoint, tmp_path):
    """Only the final best.pt says complete; older checkpoints: the one saved without an epoch."""
    assert is_complete({"complete": True}) and not is_complete({"complete": False})
    assert not is_complete({"complete": "yes"}) and not is_complete({"complete": torch.ones(2)})
    assert is_complete({"history": []}) and not is_complete({"epoch": 3, "val_auroc": 0.9})
    unfinished = rewrite(valid_checkpoint, tmp_path / "epoch.pt", complete=False, epoch=2)
    with pytest.raises(MobilemedError, match="did not finish.*--resume.*--allow-incomplete"):
        load_checkpoint(unfinished)
    model, spec = load_checkpoint(unfinished, allow_incomplete=True)
    require_complete(valid_checkpoint)
    with pytest.raises(MobilemedError, match="does not exist"):
        require_complete(tmp_path / "nowhere")
