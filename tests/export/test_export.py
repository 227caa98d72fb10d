"""mobilemed export: a self-describing ONNX file, a parity check, int8 calibrated on validation, and a
prediction path that never imports torch."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilemed.cli.main import main
from tests.conftest import train_tiny_checkpoint

pytest.importorskip("onnxruntime")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny model trained with test-time averaging on, so the graph's TTA is checked too."""
    root = tmp_path_factory.mktemp("export")
    checkpoint, data = train_tiny_checkpoint(root, image_px=40, image_size=32, extra=["--tta"])
    return checkpoint, data


def test_fp32_export_reproduces_the_checkpoint_and_carries_its_spec(tiny_run, tmp_path):
    from mobilemed.checkpoint import load_checkpoint
    from mobilemed.inference import Predictor
    from mobilemed.onnx_model import OnnxModel

    checkpoint, data = tiny_run
    out = tmp_path / "model.onnx"
    assert main(["--quiet", "export", str(checkpoint), "--out", str(out)]) == 0
    parity = json.loads((tmp_path / "model.onnx.parity.json").read_text())
    assert parity["precision"] == "fp32" and parity["validation_images"] == 16
    assert parity["fp32_max_abs_logit_diff"] < 1e-3
    onnx_model = OnnxModel(out)
    _, spec = load_checkpoint(checkpoint)
    assert onnx_model.spec == spec and spec.tta
    files = sorted((data / "test").rglob("*.png"))
    predictor = Predictor.from_checkpoint(checkpoint)
    images = np.stack([predictor.read_image(f) for f in files])
    np.testing.assert_allclose(onnx_model.logits(images), predictor.logits(images), atol=1e-4)


def test_int8_export_is_calibrated_on_validation_and_reports_its_cost(imagenet_cache, tmp_path):
    """A real ImageNet MobileNetV2 probe on BreastMNIST: int8 keeps validation AUROC close to fp32."""
    run = tmp_path / "breast"
    assert main(["--quiet", "train", "breastmnist", "--mode", "linear-probe", "--image-size", "64", "--epochs", "5",
                 "--no-gallery", "--n-bootstrap", "0", "--out", str(run)]) == 0
    assert main(["--quiet", "export", str(run / "best.pt"), "--int8"]) == 0
    parity = json.loads((run / "best.int8.onnx.parity.json").read_text())
    assert parity["quantization"]["calibration_split"] == "val"
    assert parity["quantization"]["calibration_images"] == 64  # 78 validation images, whole batches of 16
    assert parity["fp32_max_abs_logit_diff"] < 1e-3
    assert parity["int8_val"]["auroc"] > parity["checkpoint_val"]["auroc"] - 0.03
    from mobilemed.onnx_model import OnnxModel

    assert OnnxModel(run / "best.int8.onnx").extra["precision"] == "int8"


def test_the_onnx_path_never_imports_torch(tiny_run, tmp_path):
    checkpoint, data = tiny_run
    out = tmp_path / "model.onnx"
    assert main(["--quiet", "export", str(checkpoint), "--out", str(out)]) == 0
    image = next((data / "test" / "pneumonia").glob("*.png"))
    from mobilemed.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    expected = predictor.logits(predictor.read_image(image)[None])
    script = f"""
import sys, json
sys.modules["torch"] = None  # any import of torch now fails
from mobilemed.onnx_model import OnnxModel
model = OnnxModel({str(out)!r})
logits = model.logits(model.read_image({str(image)!r})[None])
print(json.dumps({{"logits": logits.tolist(), "torch": "torch" in sys.modules and sys.modules["torch"] is not None}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["torch"] is False
    np.testing.assert_allclose(np.asarray(result["logits"]), expected, atol=1e-4)


def test_export_refuses_bad_outputs_and_foreign_onnx_files(tiny_run, tmp_path, capsys):
    checkpoint, _ = tiny_run
    assert main(["export", str(checkpoint), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "model.pt")]) == 2
    assert "ending in .onnx" in capsys.readouterr().err
    import onnx
    from onnx import TensorProto, helper

    from mobilemed.errors import MobilemedError
    from mobilemed.onnx_model import OnnxModel

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), foreign)
    with pytest.raises(MobilemedError, match="not an ONNX file written by `mobilemed export`"):
        OnnxModel(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(MobilemedError, match="not a loadable ONNX model"):
        OnnxModel(garbage)


def test_export_checkpoint_is_a_library_verb(tiny_run, tmp_path):
    from mobilemed.export.exporter import export_checkpoint

    checkpoint, _ = tiny_run
    result = export_checkpoint(checkpoint, tmp_path / "verb.onnx")
    assert result.path == tmp_path / "verb.onnx" and result.path.is_file() and result.parity_path.is_file()
    assert result.parity["precision"] == "fp32" and result.parity["fp32_max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize("float_tail", [True, False])
def test_int8_keeps_the_tail_float_when_asked(tiny_run, tmp_path, float_tail):
    """With float_tail the last Conv of every copy of the network (the model averages over test-time shifts,
    so there are five) and what follows keep float weights; the rest of the network runs int8 either way."""
    import onnx

    from mobilemed.export.quantize import quantize_int8

    checkpoint, _ = tiny_run
    fp32 = tmp_path / "model.onnx"
    assert main(["--quiet", "export", str(checkpoint), "--out", str(fp32)]) == 0
    calibration = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    int8 = tmp_path / "int8.onnx"
    done = quantize_int8(fp32, int8, calibration, float_tail=float_tail)
    # This tiny model gives noise images near-constant activations: ONNX Runtime's percentile histogram
    # cannot be built for them, and the ranges fall back to min-max instead of failing the export.
    assert done == (16, "minmax")
    graph = onnx.load(str(int8)).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}

    def int8_weights(node) -> bool:
        return made_by.get(node.input[1]) == "DequantizeLinear"

    convs = [node for node in graph.node if node.op_type == "Conv"]
    def module(node) -> str:  # the copies' node names differ by a "_1" suffix on the module path
        return re.sub(r"_\d+(?=/)", "", node.name)

    last_convs = [node for node in convs if module(node) == module(convs[-1])]
    gemms = [node for node in graph.node if node.op_type == "Gemm"]
    assert len(last_convs) == 5 and len(gemms) == 10  # the image and 4 shifts; pre-logits and head Linear
    assert all(int8_weights(node) is not float_tail for node in last_convs + gemms)
    assert all(int8_weights(node) for node in convs if node not in last_convs)
