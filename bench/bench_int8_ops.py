"""Which ops to quantise: ONNX Runtime throughput of an exported fp32 model and two int8 copies of it, side by side.

    python bench/bench_int8_ops.py --onnx runs/kermany/best.onnx

The int8 copies differ only in op_types_to_quantize: Conv/Gemm/MatMul alone, or every op ONNX Runtime can
quantise (what export/quantize.py uses). Calibration images are random here: this measures speed only; the
accuracy of the shipped setting is in every export's parity report and in bench_forward.py.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def images_per_second(path: str, batch: np.ndarray, seconds: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, {"pixels": batch})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"pixels": batch})
        done += len(batch)
    return done / (time.perf_counter() - start)


def quantised_copy(prepared: str, out: str, calibration: np.ndarray, ops, exclude: list[str]) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(prepared, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                        nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax)


def main() -> None:
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, help="an fp32 file written by `mobilemed export`")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    shape = [d.dim_value for d in onnx.load(args.onnx).graph.input[0].type.tensor_type.shape.dim[1:]]
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (64, *shape), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = str(Path(tmp) / "prepared.onnx")
        quant_pre_process(args.onnx, prepared, skip_symbolic_shape=True)
        exclude = [n.name for n in onnx.load(prepared).graph.node if n.name.startswith("/ood/")]
        rows = {"fp32": args.onnx}
        for name, ops in (("int8, Conv/Gemm/MatMul only", ["Conv", "Gemm", "MatMul"]), ("int8, every op", None)):
            rows[name] = str(Path(tmp) / f"{len(rows)}.onnx")
            quantised_copy(prepared, rows[name], calibration, ops, exclude)
        batch = calibration[:32]
        print(f"\n{Path(args.onnx).name}, batch 32, {args.seconds:.0f} s each, measured one after the other\n")
        print("| model | images/s |\n|---|---:|")
        for name, path in rows.items():
            print(f"| {name} | {images_per_second(path, batch, args.seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
