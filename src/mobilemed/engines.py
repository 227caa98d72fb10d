"""load_predictor(MODEL, engine): one object that predicts, whatever the model file and the engine.

A checkpoint (.pt) runs in torch, or in ONNX Runtime after an in-memory export of the same graph `mobilemed
export` writes (the same logits to ~1e-5, several times faster on a CPU); an exported .onnx runs in ONNX Runtime
only. Both answer predict_images(images, files) -> predictions.Predictions and read_image(file), with the
model's own operating point, temperature, DICOM window and out-of-distribution detector.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)
ENGINES = ("auto", "torch", "onnx")


def load_predictor(path, *, engine: str = "auto", allow_incomplete: bool = False):
    """inference.Predictor (torch) or onnx_model.OnnxModel for a best.pt or an exported .onnx.

    engine: "auto" runs ONNX Runtime when onnx and onnxruntime are installed, else torch; "torch" and "onnx"
    choose explicitly (for comparison and debugging). An .onnx file has no torch engine."""
    if engine not in ENGINES:
        raise MobilemedError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if engine == "torch":
            raise MobilemedError(f"{path} is an exported ONNX model: it runs in ONNX Runtime only; drop "
                                 "--engine torch, or pass the run's best.pt")
        from mobilemed.onnx_model import OnnxModel

        return OnnxModel(path)
    from mobilemed.inference import Predictor

    predictor = Predictor.from_checkpoint(path, allow_incomplete=allow_incomplete)
    if engine == "auto":
        engine = "onnx" if onnx_available() else "torch"
    return predictor if engine == "torch" else as_onnx(predictor, path)


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def as_onnx(predictor, checkpoint: Path):
    """The checkpoint's model, detector and spec exported to ONNX in a temp folder and loaded in ONNX Runtime."""
    from mobilemed.export.onnx_file import write_onnx
    from mobilemed.onnx_model import OnnxModel

    if not onnx_available():
        raise MobilemedError("--engine onnx needs onnx and onnxruntime: pip install 'mobilemed[fast]'")
    with tempfile.TemporaryDirectory(prefix="mobilemed-engine-") as tmp:
        path = write_onnx(predictor.model, predictor.spec, Path(tmp) / f"{checkpoint.stem}.onnx",
                          detector=predictor.ood)
        model = OnnxModel(path)  # ONNX Runtime holds the graph in memory: the temp file can go
    model.path = checkpoint
    log.info("running %s in ONNX Runtime (--engine torch to use torch)", checkpoint)
    return model
