"""Tutorial loop vs mobilemed's linear probe on the same ImageFolder data and the same epochs.

    python bench/bench_linear_probe.py --data ../shared/data/kermany_cxr_224 \
        --weights ../shared/weights/mobilenet_v2_imagenet.pth --epochs 10

Prints one table: wall time, test accuracy, test AUROC for each, mobilemed's peak resident memory,
and the time ratio. mobilemed runs as a child process (`python -m mobilemed`) with an empty cache (a
fresh MOBILEMED_HOME), so its time includes starting Python, decoding every image, the feature pass,
head training, evaluation with bootstrap CIs, plots and report.html; its peak RSS is the child's
ru_maxrss, the number `/usr/bin/time -v` reports as "Maximum resident set size".
`--feature-precision` is passed through (default: the CLI's default).
`--only tutorial|mobilemed` runs one row (results are kept in --results to assemble the table).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))


def run_mobilemed(data: str, weights: str, epochs: int, run_dir: str, precision: str | None) -> dict:
    argv = [sys.executable, "-m", "mobilemed", "--quiet", "train", data, "--mode", "linear-probe", "--weights",
            weights, "--epochs", str(epochs), "--out", run_dir, "--patience", "0", "--overwrite"]
    argv += ["--feature-precision", precision] if precision else []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MOBILEMED_HOME": home}  # cold caches: nothing decoded or extracted beforehand
        start = time.perf_counter()
        code = subprocess.run(argv, env=env).returncode
        seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"mobilemed train failed with exit code {code}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    test = json.loads((Path(run_dir) / "metrics.json").read_text())["test"]
    features = json.loads((Path(run_dir) / "feature_pass.json").read_text())
    return {"seconds": seconds, "accuracy": test["accuracy"]["value"], "auroc": test["auroc_macro"]["value"],
            "peak_rss_mb": peak_mb, "feature_pass": features}


def run_tutorial_row(data: str, weights: str, epochs: int) -> dict:
    from tutorial_loop import run_tutorial

    result = run_tutorial(data, weights, epochs)
    return {"seconds": result["seconds"], "accuracy": result["accuracy"],
            "auroc": float(roc_auc_score(result["targets"], result["probs"]))}


def print_table(rows: dict, epochs: int) -> None:
    print(f"\n| method ({epochs} epochs) | wall time (s) | test accuracy | test AUROC | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        peak = f"{row['peak_rss_mb']:.0f}" if "peak_rss_mb" in row else "-"
        print(f"| {name} | {row['seconds']:.1f} | {row['accuracy']:.4f} | {row['auroc']:.4f} | {peak} |")
    if "feature_pass" in rows.get("mobilemed linear probe", {}):
        print(f"\nmobilemed feature pass: {rows['mobilemed linear probe']['feature_pass']}")
    if "tutorial loop" in rows and "mobilemed linear probe" in rows:
        ratio = rows["tutorial loop"]["seconds"] / rows["mobilemed linear probe"]["seconds"]
        print(f"\ntime ratio (tutorial / mobilemed): {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kermany_cxr_224")
    parser.add_argument("--weights", default="../shared/weights/mobilenet_v2_imagenet.pth")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", choices=("tutorial", "mobilemed"))
    parser.add_argument("--results", default="bench/results_linear_probe.json")
    parser.add_argument("--run-dir", default="runs/bench-linear-probe")
    parser.add_argument("--feature-precision", choices=("fp32", "auto", "int8"))
    args = parser.parse_args()
    results = Path(args.results)
    rows = json.loads(results.read_text()) if results.exists() and args.only else {}
    if args.only in (None, "mobilemed"):
        rows["mobilemed linear probe"] = run_mobilemed(args.data, args.weights, args.epochs, args.run_dir,
                                                       args.feature_precision)
    if args.only in (None, "tutorial"):
        rows["tutorial loop"] = run_tutorial_row(args.data, args.weights, args.epochs)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(rows, indent=2))
    print_table(rows, args.epochs)


if __name__ == "__main__":
    main()
