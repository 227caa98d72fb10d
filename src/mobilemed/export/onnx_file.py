"""Write and read self-describing ONNX files: the graph plus the ModelSpec in its metadata."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mobilemed.errors import MissingExtraError
from mobilemed.export.graph import ExportModule, example_input, output_names
from mobilemed.export.metadata import INPUT_NAME, set_metadata
from mobilemed.fsutil import atomic_write
from mobilemed.spec import ModelSpec

OPSET = 17


def write_onnx(model: torch.nn.Module, spec: ModelSpec, path, *, detector=None,
               extra_metadata: dict | None = None) -> Path:
    """Export model + preprocessing (+ the OOD detector when given) to `path` atomically, with the spec in the
    file's metadata.

    Uses torch's TorchScript-based exporter (dynamo=False): the dynamo exporter needs onnxscript, which is
    not a dependency, and MobileNet's plain conv graph exports exactly through the TorchScript path."""
    onnx = _require_onnx()
    module = ExportModule(model, spec, detector).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        buffer = _export_to_bytes(module, spec, output_names(detector))
    proto = onnx.load_from_string(buffer)
    set_metadata(proto, spec, extra_metadata or {})
    with atomic_write(path, "wb") as handle:
        handle.write(proto.SerializeToString())
    return Path(path)


def _export_to_bytes(module: ExportModule, spec: ModelSpec, outputs: tuple[str, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    dynamic = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(module, (example_input(spec),), buffer, dynamo=False, input_names=[INPUT_NAME],
                          output_names=list(outputs), dynamic_axes=dynamic, opset_version=OPSET)
    return buffer.getvalue()


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "fast", "ONNX export") from None
    return onnx
