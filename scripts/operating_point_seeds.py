"""Test accuracy of the README PneumoniaMNIST recipe over 3 seeds: the strict Youden maximum against the plateau rule.

    MOBILEMED_ASSETS=../shared python scripts/operating_point_seeds.py [--recipe finetune|probe] [--seeds 0 1 2]

Offline, MOBILEMED_ASSETS names a folder holding data/medmnist/pneumoniamnist.npz and
weights/mobilenet_v2_imagenet.pth, added to the asset cache first (as scripts/quickstart.sh does).

Trains the README's 12-epoch 64-px fine-tune (or --recipe probe: the linear probe at 64 px) once per seed
(a finished run in ROOT/<recipe>-seed<k> is reused; one training at a time, each waiting while
/work/notes/QUIET or $MOBILEMED_QUIET_FILE exists), then chooses the
threshold on each run's VALIDATION predictions with both rules (`youden_max`, the rule before; `youden`, the
middle of the near-best plateau) and only then scores the test predictions at each threshold. The two rules
see the same trained model, so the difference is the rule's alone. Prints one row per seed and the spread.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mobilemed.evaluation.thresholds import choose_thresholds
from mobilemed.run_files import BEST, read_split_predictions

RECIPES = {  # the README's 12-epoch fine-tune, and its linear probe at the same size (minutes on a loaded CPU)
    "finetune": ["pneumoniamnist", "--mode", "finetune", "--image-size", "64", "--batch-size", "64", "--lr", "1e-3",
                 "--scheduler", "onecycle", "--backbone-lr-scale", "1.0", "--tta", "--patience", "0", "--epochs", "12"],
    "probe": ["pneumoniamnist", "--mode", "linear-probe", "--image-size", "64"],
    # the same probe, its operating point chosen on the pooled out-of-fold predictions of 5 folds of train+val
    "probe-cv5": ["pneumoniamnist", "--mode", "linear-probe", "--image-size", "64", "--cv", "5"],
}
RULES = ("youden_max", "youden")


def wait_for_quiet() -> None:
    flag = Path(os.environ.get("MOBILEMED_QUIET_FILE", "/work/notes/QUIET"))
    while flag.exists():
        time.sleep(20)


def add_assets(medmnist: tuple[str, ...] = ("pneumoniamnist",)) -> None:
    """Offline: add MOBILEMED_ASSETS's MedMNIST files and ImageNet weights to the asset cache (also used by
    scripts/recipe_seeds.py)."""
    assets = os.environ.get("MOBILEMED_ASSETS")
    if not assets:
        return
    files = [[f"data/medmnist/{name}.npz"] for name in medmnist]
    for args in files + [["weights/mobilenet_v2_imagenet.pth", "--weights-for", "mobilenet_v2"]]:
        subprocess.run([sys.executable, "-m", "mobilemed", "assets", "add", str(Path(assets) / args[0]), *args[1:]],
                       check=True)


def train(run_dir: Path, seed: int, recipe: str) -> None:
    if (run_dir / BEST).is_file() and (run_dir / "predictions_test.npz").is_file():
        return
    wait_for_quiet()
    command = [sys.executable, "-m", "mobilemed", "train", *RECIPES[recipe], "--seed", str(seed),
               "--no-gallery", "--n-bootstrap", "0", "--quiet", "--out", str(run_dir),
               *(["--overwrite"] if run_dir.exists() else [])]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def score(run_dir: Path) -> dict:
    """Per rule: the threshold chosen on validation (a --cv run: its pooled out-of-fold predictions, which it
    saves as predictions_val.npz), and test accuracy at it; plus accuracy at 0.5."""
    val, test = read_split_predictions(run_dir, "val"), read_split_predictions(run_dir, "test")
    row = {"acc@0.5": float(np.mean((test.y_prob >= 0.5) == (test.y_true == 1)))}
    for rule in RULES:
        (t,) = choose_thresholds(val.y_true, val.y_prob, task="binary", rule=rule)
        row[f"{rule} t"] = t
        row[f"{rule} acc"] = float(np.mean((test.y_prob >= t) == (test.y_true == 1)))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/op-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="finetune")
    args = parser.parse_args(argv)
    add_assets()
    rows = {}
    for seed in args.seeds:
        run_dir = Path(args.root) / f"{args.recipe}-seed{seed}"
        train(run_dir, seed, args.recipe)
        rows[seed] = score(run_dir)
    columns = ["acc@0.5", *(f"{r} {c}" for r in RULES for c in ("t", "acc"))]
    print(f"\nPneumoniaMNIST test accuracy, recipe {args.recipe}, threshold chosen on validation by each rule")
    print("| seed | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for seed, row in rows.items():
        print(f"| {seed} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    for rule in RULES:
        acc = [row[f"{rule} acc"] for row in rows.values()]
        print(f"{rule}: test accuracy mean {np.mean(acc):.3f}, range {min(acc):.3f}-{max(acc):.3f} "
              f"(spread {max(acc) - min(acc):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
