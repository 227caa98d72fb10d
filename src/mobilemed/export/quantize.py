"""Static int8 quantisation with ONNX Runtime: QDQ format, per-channel weights, calibrated on images the
caller chooses (export passes the run's validation images, never test)."""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mobilemed.errors import MissingExtraError
from mobilemed.export.metadata import INPUT_NAME
from mobilemed.fsutil import atomic_write

# None: every op ONNX Runtime can quantise (Conv, Gemm, Add, Clip, pooling ...), so the int8 graph runs int8
# end to end. Quantising Conv and Gemm alone left a dequantise / requantise pair around every residual Add:
# bench/bench_int8_ops.py measures the two settings side by side on an exported model.
QUANTISED_OPS = None
PERCENTILE = 99.99
# Whether the last Conv and every node after it (pooling, pre-logits, head) stay float. Measured on the README's
# Kermany probe (bench/bench_int8_accuracy.py): no gain (test decisions equal to fp32's: 98.08% either way; max
# |logit diff| 3.15 against 3.20; test AUROC 0.9528 against 0.9530), at 12% of the int8 speed. The logits' error
# comes from the whole network, not its tail, so the tail is quantised too.
FLOAT_TAIL = False
log = logging.getLogger(__name__)


class Quantised(NamedTuple):
    calibration_images: int  # whole batches only: the histogram collector needs equal batch sizes
    calibration_method: str  # "percentile 99.99", or "minmax" where the histogram could not be built


def quantize_int8(fp32_path, out_path, calibration: np.ndarray, *, batch_size: int = 16,
                  float_tail: bool = FLOAT_TAIL, percentile: bool = True) -> Quantised:
    """Write an int8 (QDQ, per-channel, uint8 activations / int8 weights) copy of fp32_path to out_path.

    calibration: inputs of the graph (an exported model's (N, S, S, C) uint8 pixels; the training feature
    pass's (N, C, S, S) normalised float32) whose activation histograms set the scales: each range is the
    99.99th percentile, not the maximum, so a few extreme activations do not coarsen every other value
    (each export's parity report gives the validation AUROC this costs).
    float_tail: keep the last Conv and what follows it in float (FLOAT_TAIL). percentile=False takes min-max
    ranges: about 6x quicker to calibrate (no histogram of every tensor), for the probe's feature pass, which
    checks the accuracy it gets on validation before using it.
    ONNX Runtime's histogram fails on a tensor that is constant to float32 precision over the calibration
    images (a model that gives every image the same output does that); such a model falls back to min-max
    ranges, and the returned method says so."""
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
        method = f"percentile {PERCENTILE}" if percentile else "minmax"
        with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            try:
                _quantize(fp32_path, prepared, quantised, Reader(), float_tail, percentile=percentile)
            except ValueError as err:
                if not percentile or "bins" not in str(err):
                    raise
                method = "minmax"
                _quantize(fp32_path, prepared, quantised, Reader(), float_tail, percentile=False)
        if method == "minmax" and percentile:
            log.warning("int8 calibration: a tensor is constant over the %d calibration images, so the ranges "
                        "are min-max, not the %s percentile", used, PERCENTILE)
        with atomic_write(out_path, "wb") as handle:
            handle.write(quantised.read_bytes())
    return Quantised(used, method)


def _quantize(fp32_path, prepared: Path, quantised: Path, reader, float_tail: bool, *, percentile: bool) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(quantised), reader, quant_format=QuantFormat.QDQ,
                    nodes_to_exclude=float_nodes(onnx.load(str(prepared)).graph, float_tail),
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=QUANTISED_OPS,
                    calibrate_method=CalibrationMethod.Percentile if percentile else CalibrationMethod.MinMax,
                    # One batch per collection pass, histograms merged across passes: otherwise the calibrator
                    # keeps every intermediate tensor of every calibration image (~40 MB per 224 px image).
                    extra_options={"CalibPercentile": PERCENTILE, "CalibStridedMinMax": 1})


def float_nodes(graph, float_tail: bool) -> list[str]:
    """Names of the nodes quantize_static must leave in float: the OOD detector's (its threshold was set on
    float scores) and, with float_tail, the tail: every node from which no Conv can be reached (the last
    Conv of each copy of the network, test-time augmentation makes several, and all that follows it)."""
    nodes = list(graph.node)
    keep = {node.name for node in nodes if node.name.startswith("/ood/")}
    if float_tail:
        keep |= {node.name for node, feeds in zip(nodes, _feeds_a_conv(nodes)) if not feeds}
    return sorted(keep)


def _feeds_a_conv(nodes) -> list[bool]:
    """Per node (in the graph's topological order): does any path from its outputs reach a Conv?"""
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(index)
    feeds = [False] * len(nodes)
    for index in reversed(range(len(nodes))):  # every consumer comes later, so it is decided already
        feeds[index] = any(nodes[j].op_type == "Conv" or feeds[j]
                           for tensor in nodes[index].output for j in consumers.get(tensor, ()))
    return feeds


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
