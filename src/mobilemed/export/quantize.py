"""Static int8 quantisation with ONNX Runtime: QDQ format, per-channel weights, calibrated on images the
caller chooses (export passes the run's validation images, never test)."""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from mobilemed.errors import MissingExtraError
from mobilemed.export.metadata import INPUT_NAME
from mobilemed.fsutil import atomic_write

# None: every op ONNX Runtime can quantise (Conv, Gemm, Add, Clip, pooling ...), so the int8 graph runs int8
# end to end. Quantising Conv and Gemm alone left a dequantise / requantise pair around every residual Add:
# bench/bench_int8_ops.py measures the two settings side by side on an exported model.
QUANTISED_OPS = None
PERCENTILE = 99.99


def quantize_int8(fp32_path, out_path, calibration: np.ndarray, *, batch_size: int = 16) -> int:
    """Write an int8 (QDQ, per-channel, uint8 activations / int8 weights) copy of fp32_path to out_path.

    calibration: inputs of the graph (an exported model's (N, S, S, C) uint8 pixels; the training feature
    pass's (N, C, S, S) normalised float32) whose activation histograms set the scales: each range is the
    99.99th percentile, not the maximum, so a few extreme activations do not coarsen every other value
    (each export's parity report gives the validation AUROC this costs).
    Returns the number of calibration images used (whole batches only: the histogram collector needs
    equal batch sizes)."""
    try:
        from onnxruntime.quantization import CalibrationDataReader
    except ImportError:
        raise MissingExtraError("onnxruntime", "fast", "int8 export") from None

    size = min(batch_size, len(calibration))
    used = len(calibration) // size * size

    class Reader(CalibrationDataReader):
        """Batch by batch; set_range lets the calibrator take one batch per pass (see _quantize)."""

        def __init__(self):
            self.starts = list(range(0, used, size))
            self.set_range(0, len(self.starts))

        def __len__(self):
            return len(self.starts)

        def set_range(self, start_index: int, end_index: int):
            self.batches = iter([{INPUT_NAME: calibration[i:i + size]} for i in self.starts[start_index:end_index]])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantised = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            _quantize(fp32_path, prepared, quantised, Reader())
        with atomic_write(out_path, "wb") as handle:
            handle.write(quantised.read_bytes())
    return used


def _quantize(fp32_path, prepared: Path, quantised: Path, reader) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    # The OOD detector's distance stays in float: its threshold was set on float scores.
    detector_nodes = [node.name for node in onnx.load(str(prepared)).graph.node if node.name.startswith("/ood/")]
    quantize_static(str(prepared), str(quantised), reader, quant_format=QuantFormat.QDQ,
                    nodes_to_exclude=detector_nodes, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=QUANTISED_OPS, calibrate_method=CalibrationMethod.Percentile,
                    # One batch per collection pass, histograms merged across passes: otherwise the calibrator
                    # keeps every intermediate tensor of every calibration image (~40 MB per 224 px image).
                    extra_options={"CalibPercentile": PERCENTILE, "CalibStridedMinMax": 1})


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantiser logs one INFO line per tensor on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)
