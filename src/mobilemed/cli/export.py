"""mobilemed export CHECKPOINT: one self-describing .onnx file (optionally int8) with a parity report."""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt inside its run folder (the run's validation split is used "
                                           "for the parity check and int8 calibration)")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default: onnx)")
    parser.add_argument("--int8", action="store_true",
                        help="static int8 quantisation (QDQ, per-channel), calibrated on validation images")
    parser.add_argument("--calibration-size", type=int, default=512,
                        help="validation images used to calibrate int8 scales (default: 512)")
    parser.add_argument("--out", help="the .onnx file to write (default: best.onnx / best.int8.onnx beside "
                                      "the checkpoint)")


def run(args) -> int:
    from mobilemed.export.exporter import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, int8=args.int8, calibration_size=args.calibration_size,
                               progress=not args.quiet)
    print(json.dumps(result.parity, indent=2))
    print(f"wrote {result.path} and {result.parity_path}")
    return 0
