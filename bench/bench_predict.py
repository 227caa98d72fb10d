"""`mobilemed predict` on a whole folder, two ways, one after the other: a checkpoint in torch and an export.

    python bench/bench_predict.py --checkpoint runs/kermany/best.pt --onnx runs/kermany/best.int8.onnx \
        --inputs ../shared/data/kermany_cxr_224

Each command runs in its own process under /usr/bin/time -v; the table gives wall time, images/s, peak RSS
and the share of files whose decision agrees with the torch run.
"""
from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def timed_predict(model: str, inputs: str, out: Path, engine: str) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "mobilemed", "--quiet", "predict", model, inputs,
               "--out", str(out), "--engine", engine]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return {"seconds": hours * 3600 + minutes * 60 + seconds, "rss_gb": rss_kb / 1024 ** 2}


def decisions(path: Path) -> dict[str, str]:
    with open(path, newline="") as handle:
        return {row["file"]: row["predicted"] for row in csv.DictReader(handle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--inputs", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"best.pt, --engine torch": (args.checkpoint, "torch"), f"{Path(args.onnx).name}": (args.onnx, "auto")}
        rows, answers = {}, {}
        for name, (model, engine) in runs.items():
            out = Path(tmp) / f"{len(rows)}.csv"
            rows[name] = timed_predict(model, args.inputs, out, engine)
            answers[name] = decisions(out)
    reference = next(iter(answers.values()))
    print(f"\n{len(reference)} files in {args.inputs}\n")
    print("| model, engine | wall time (s) | images/s | peak RSS (GB) | same decision as torch |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        same = sum(answers[name][f] == d for f, d in reference.items()) / len(reference)
        print(f"| {name} | {row['seconds']:.1f} | {len(reference) / row['seconds']:.1f} | {row['rss_gb']:.2f} | "
              f"{same:.2%} |")
    names = list(rows)
    print(f"\nspeed-up: {rows[names[0]]['seconds'] / rows[names[1]]['seconds']:.2f}x")


if __name__ == "__main__":
    main()
