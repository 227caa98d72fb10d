"""What int8 costs in accuracy and buys in speed, for each way of quantising one exported model, side by side.

    python bench/bench_int8_accuracy.py --run RUN --test-data ../shared/data/kermany_cxr_224

RUN is a run folder with best.pt (e.g. the README's Kermany linear probe). The fp32 ONNX copy is exported to
a temporary folder, then quantised as `mobilemed export --int8` does (QDQ, per-channel, percentile
calibration on the run's validation images, never test) with the tail (last Conv, pooling, head) quantised or
kept float. Each row: images/s at batch 32, max |logit - fp32 logit| on test, validation and test AUROC, test
accuracy at the int8 model's own operating point (re-chosen on validation, as export does), and the share of
test images whose decision equals the fp32 model's at its own operating point: the number `predict` users see.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def decisions_and_scores(logits: np.ndarray, labels: np.ndarray, spec) -> tuple[np.ndarray, float, float]:
    from mobilemed.decision import decisions, probabilities
    from bench_forward import scores

    auroc, accuracy = scores(logits, labels, spec)
    return decisions(probabilities(logits, spec), spec), auroc, accuracy


def main() -> None:
    from bench_forward import test_split, throughput

    from mobilemed.export.exporter import export_checkpoint, int8_operating_point
    from mobilemed.export.quantize import quantize_int8
    from mobilemed.export.run_images import run_split_images
    from mobilemed.io.pixels import match_channels
    from mobilemed.onnx_model import OnnxModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-linear-probe")
    parser.add_argument("--test-data", default="../shared/data/kermany_cxr_224")
    parser.add_argument("--calibration-size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_checkpoint(Path(args.run) / "best.pt", fp32_path, progress=False)
        fp32 = OnnxModel(fp32_path)
        spec = fp32.spec
        val_images, val_labels = run_split_images(args.run, "val", spec)
        calibration = match_channels(run_split_images(args.run, "val", spec, limit=args.calibration_size)[0],
                                     spec.in_chans)
        test_images, test_labels = test_split(args.test_data, spec)
        reference = fp32.logits(test_images, batch_size=64)
        ref_decisions, auroc, accuracy = decisions_and_scores(reference, test_labels, spec)
        val_auroc = decisions_and_scores(fp32.logits(val_images), val_labels, spec)[1]
        print(f"\n{len(val_images)} validation and {len(test_images)} test images at {spec.image_size} px; "
              f"batch 32, {args.seconds:.0f} s per model, measured one after the other\n")
        print("| model | images/s | max abs logit diff | val AUROC | test AUROC | test accuracy | same decision as fp32 |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(f"| fp32 | {throughput(lambda x: fp32.logits(x), test_images, 32, args.seconds):.1f} | 0 | "
              f"{val_auroc:.4f} | {auroc:.4f} | {accuracy:.4f} | 1 |", flush=True)
        for float_tail in (False, True):
            path = Path(tmp) / f"int8_{float_tail}.onnx"
            quantize_int8(fp32_path, path, calibration, float_tail=float_tail)
            int8 = OnnxModel(path)
            own = int8_operating_point(spec, None, int8.forward(val_images), val_labels)
            logits = int8.logits(test_images, batch_size=64)
            chosen, test_auroc, test_accuracy = decisions_and_scores(logits, test_labels, own)
            val_int8 = decisions_and_scores(int8.logits(val_images), val_labels, own)[1]
            same = float(np.mean(np.all((chosen == ref_decisions).reshape(len(chosen), -1), axis=1)))
            name = "int8, tail float" if float_tail else "int8, every node"
            print(f"| {name} | {throughput(lambda x: int8.logits(x), test_images, 32, args.seconds):.1f} | "
                  f"{np.abs(logits - reference).max():.3f} | {val_int8:.4f} | {test_auroc:.4f} | "
                  f"{test_accuracy:.4f} | {same:.4f} |", flush=True)


if __name__ == "__main__":
    main()
