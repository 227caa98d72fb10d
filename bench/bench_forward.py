"""Forward throughput of one model three ways, side by side in one run: torch eager, ONNX fp32, ONNX int8.

    python bench/bench_forward.py --run runs/bench-linear-probe \
        --test-data ../shared/data/kermany_cxr_224

--run is a finished run folder (e.g. the README's Kermany linear probe, which bench_linear_probe.py writes);
its best.pt is exported to fp32 and int8 ONNX (int8 calibrated on the run's validation split) unless the
files exist. Prints images/s at batch 1 and 32 for each engine, and test AUROC / accuracy of each on the
data's test split, so speed and what it costs are read from one table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def throughput(forward, images: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second of forward() on batches of `batch`, after one warm-up call, for ~`seconds`."""
    x = images[:batch]
    forward(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        forward(x)
        done += batch
    return done / (time.perf_counter() - start)


def engines(run: Path):
    """name -> (logits(images uint8 at the model size) -> (N, num_outputs)) for the three engines."""
    import torch

    from mobilemed.batch_predict import predict_logits
    from mobilemed.checkpoint import load_checkpoint
    from mobilemed.export.exporter import export_checkpoint
    from mobilemed.onnx_model import OnnxModel

    model, spec = load_checkpoint(run / "best.pt")
    model = model.to(memory_format=torch.channels_last)
    for int8, name in ((False, "best.onnx"), (True, "best.int8.onnx")):
        if not (run / name).exists():
            export_checkpoint(run / "best.pt", run / name, int8=int8, progress=True)
    fp32, int8 = OnnxModel(run / "best.onnx"), OnnxModel(run / "best.int8.onnx")
    return spec, {
        "torch eager (channels_last)": lambda x: predict_logits(model, x, spec, batch_size=64, tta=spec.tta),
        "ONNX Runtime fp32": lambda x: fp32.logits(x, batch_size=64),
        "ONNX Runtime int8 (QDQ, per-channel)": lambda x: int8.logits(x, batch_size=64),
    }


def test_split(data: str, spec):
    from mobilemed.data.cache import decoded_images
    from mobilemed.data.sources import load_table

    part = load_table(data).split("test")
    images, keep = decoded_images(part, spec.image_size, progress=True, use_voi=spec.dicom_voi)
    return np.asarray(images), part.labels[keep]


def scores(logits: np.ndarray, labels: np.ndarray, spec) -> tuple[float, float]:
    from mobilemed.decision import probabilities
    from mobilemed.evaluation.metrics import compute_metrics

    report = compute_metrics(labels, probabilities(logits, spec), task=spec.task, class_names=spec.class_names,
                             thresholds=spec.thresholds, n_bootstrap=0).to_dict()
    return report["auroc_macro"]["value"], report["accuracy"]["value"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-linear-probe")
    parser.add_argument("--test-data", default="../shared/data/kermany_cxr_224")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per engine and batch size")
    args = parser.parse_args()
    spec, runners = engines(Path(args.run))
    images, labels = test_split(args.test_data, spec)
    print(f"\n{len(images)} test images at {spec.image_size} px; {args.seconds:.0f} s per measurement\n")
    print("| engine | images/s, batch 1 | images/s, batch 32 | test AUROC | test accuracy |")
    print("|---|---:|---:|---:|---:|")
    rates = {}
    for name, forward in runners.items():
        one, many = (throughput(forward, images, b, args.seconds) for b in (1, 32))
        auroc, accuracy = scores(forward(images), labels, spec)
        rates[name] = many
        print(f"| {name} | {one:.1f} | {many:.1f} | {auroc:.4f} | {accuracy:.4f} |", flush=True)
    eager, fp32, int8 = rates.values()
    print(f"\nbatch 32: int8 / fp32 = {int8 / fp32:.2f}x, int8 / torch eager = {int8 / eager:.2f}x")


if __name__ == "__main__":
    main()
