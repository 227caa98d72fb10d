"""Wall time per epoch of `mobilemed train` on 1 process and on N processes (torchrun via --nproc).

    python bench/bench_ddp.py                              # here: CPU, 1 vs 2 processes
    python bench/bench_ddp.py --device cuda --nproc 8      # a machine with 8 GPUs: the same script

Fine-tunes ImageNet MobileNetV2 at 64 px on PneumoniaMNIST (4,708 training images; `mobilemed assets` must
hold the dataset and the weights, as for any offline run) with the same global batch on every row, so the
rows do the same arithmetic and differ only in how it is split. The time per epoch is history.json's
"seconds": one epoch's training plus its validation pass, without start-up, the decode cache or the final
evaluation. Each row runs in its own child process with a fresh run folder; the first epoch pays one-off
costs (allocator warm-up, oneDNN kernel choice), so the table shows the first and the mean of the others.

On a CPU, torchrun gives each of the N processes 1 thread (OMP_NUM_THREADS=1), while one process uses torch's
default threads (one per core); so with --device cpu the table also has a row of one process on 1 thread, which
separates what DDP gains from what OpenMP threads lose when other jobs share the cores (their barriers then
wait for descheduled threads). None of this is a GPU scaling figure.
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


def run_epochs(nproc: int, args, threads: int | None = None) -> list[float]:
    """Seconds of each epoch of one `mobilemed train` run on `nproc` processes (`threads`: OMP_NUM_THREADS)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "mobilemed", "--quiet", "train", args.data, "--mode", "finetune",
                "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--batch-size",
                str(args.batch_size), "--device", args.device, "--patience", "0", "--n-bootstrap", "0",
                "--no-gallery", "--out", str(out), "--nproc", str(nproc), *args.extra]
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop("OMP_NUM_THREADS", None)
        env.update({"OMP_NUM_THREADS": str(threads)} if threads else {})
        code = subprocess.run(argv, env=env).returncode
        if code != 0:
            raise SystemExit(f"mobilemed train --nproc {nproc} failed with exit code {code}")
        return [row["seconds"] for row in json.loads((out / "history.json").read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="pneumoniamnist")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the second row")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, the same on every row")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("extra", nargs="*", help="more `mobilemed train` options, after --")
    args = parser.parse_args()
    plan = [("1 (default threads)", 1, None)] + ([("1 (1 thread)", 1, 1)] if args.device == "cpu" else [])
    rows = {}
    for name, nproc, threads in [*plan, (f"{args.nproc} (torchrun)", args.nproc, None)]:
        load = os.getloadavg()[0]  # other jobs on the machine, as the row starts
        rows[name] = (run_epochs(nproc, args, threads), load)
    print(f"\nfinetune, {args.data} at {args.image_size} px, global batch {args.batch_size}, device {args.device}, "
          f"{os.cpu_count()} CPU cores")
    print("| processes | epoch 1 (s) | later epochs, mean (s) | speed-up vs 1 process | load average at start |")
    print("|---|---:|---:|---:|---:|")
    base = _steady(rows["1 (default threads)"][0])
    for name, (seconds, load) in rows.items():
        print(f"| {name} | {seconds[0]:.1f} | {_steady(seconds):.1f} | {base / _steady(seconds):.2f}x | {load:.1f} |")


def _steady(seconds: list[float]) -> float:
    later = seconds[1:] or seconds
    return sum(later) / len(later)


if __name__ == "__main__":
    main()
