"""Wall time per epoch of `mobilemed train` on 1 process and on N processes (torchrun via --nproc).

    python bench/bench_ddp.py                              # here: CPU, 1 vs 2 processes
    python bench/bench_ddp.py --device cuda --nproc 8      # a machine with 8 GPUs: the same script

Fine-tunes ImageNet MobileNetV2 at 64 px on PneumoniaMNIST (4,708 training images; `mobilemed assets` must
hold the dataset and the weights, as for any offline run) with the same global batch on every row, so the
rows do the same arithmetic and differ only in how it is split. The time per epoch is history.json's
"seconds": one epoch's training plus its validation pass, without start-up, the decode cache or the final
evaluation. Each row runs in its own child process with a fresh run folder; the first epoch pays one-off
costs (allocator warm-up, oneDNN kernel choice), so the table shows the first and the mean of the others.

On a CPU the ratio says how well N processes with 1 thread each use the cores compared with one process
using all of them (torchrun sets OMP_NUM_THREADS=1 per process; the 1-process row keeps torch's default
threads). It is not a GPU scaling figure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run_epochs(nproc: int, args) -> list[float]:
    """Seconds of each epoch of one `mobilemed train` run on `nproc` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "mobilemed", "--quiet", "train", args.data, "--mode", "finetune",
                "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--batch-size",
                str(args.batch_size), "--device", args.device, "--patience", "0", "--n-bootstrap", "0",
                "--no-gallery", "--out", str(out), "--nproc", str(nproc), *args.extra]
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        code = subprocess.run(argv, env=env).returncode
        if code != 0:
            raise SystemExit(f"mobilemed train --nproc {nproc} failed with exit code {code}")
        return [row["seconds"] for row in json.loads((out / "history.json").read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="pneumoniamnist")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the second row")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, the same on every row")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("extra", nargs="*", help="more `mobilemed train` options, after --")
    args = parser.parse_args()
    rows = {n: run_epochs(n, args) for n in (1, args.nproc)}
    print(f"\nfinetune, {args.data} at {args.image_size} px, global batch {args.batch_size}, device {args.device}, "
          f"{os.cpu_count()} CPU cores")
    print("| processes | epoch 1 (s) | later epochs, mean (s) | speed-up vs 1 process |")
    print("|---:|---:|---:|---:|")
    base = _steady(rows[1])
    for n, seconds in rows.items():
        print(f"| {n} | {seconds[0]:.1f} | {_steady(seconds):.1f} | {base / _steady(seconds):.2f}x |")


def _steady(seconds: list[float]) -> float:
    later = seconds[1:] or seconds
    return sum(later) / len(later)


if __name__ == "__main__":
    main()
