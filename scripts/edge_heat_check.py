"""Where a trained model's Grad-CAM heat lies: on the lungs, or on the image's edge (markers, text, borders)?

    MOBILEMED_HOME=runs/home python scripts/edge_heat_check.py RUN [RUN ...] --per-class 30 --out runs/edge

For every run folder, --per-class validation images of each class (drawn with --seed from the run's split.csv,
so no test image is used) are explained with `mobilemed explain`'s own function (explain_files: the predicted
class, the run's CAM layer). Prints one table row per run and class: the mean share of heat in the outer eighth
of the image on every side (explain/edge_heat.py; a flat map puts 44% there), and how many heatmaps peak
there, then the files that peak on the edge, to be looked at in --out.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from mobilemed.explain.edge_heat import band_area, edge_heat
from mobilemed.explain.files import explain_files


def validation_rows(run: Path) -> list[dict]:
    """The validation rows of a run's split.csv; [] when it has none."""
    with open(run / "split.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["split"] == "val"]


def validation_files(run: Path, per_class: int, seed: int) -> dict[str, list[str]]:
    """{label: up to per_class validation image paths}, resolved against the folder the run was started in."""
    rows = validation_rows(run)
    rng = np.random.default_rng(seed)
    chosen = {}
    for label in sorted({r["label"] for r in rows}):
        paths = [r["path"] for r in rows if r["label"] == label]
        chosen[label] = [paths[i] for i in sorted(rng.permutation(len(paths))[:per_class])]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--per-class", type=_positive, default=30, help="validation images per class, at least 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/edge-heat"))
    args = parser.parse_args()
    for run in args.runs:  # every run is checked before the first overlay is written
        if not ((run / "split.csv").is_file() and (run / "best.pt").is_file()):
            parser.error(f"{run} is not a finished run folder (no split.csv or best.pt): pass a folder that "
                         "`mobilemed train --out` wrote")
        if not validation_rows(run):
            parser.error(f"{run / 'split.csv'} lists no validation image: this check uses validation images only")
    print(f"\n| run | true class | images | heat on the edge, mean (range) | peak on the edge |\n|---|---|---:|---|---:|")
    flagged = []
    for run in args.runs:
        for label, files in validation_files(run, args.per_class, args.seed).items():
            done = explain_files(run / "best.pt", files, args.out / run.name / label)
            heat = [edge_heat(image.heatmap) for image in done.images]
            shares = np.array([h.share for h in heat])
            peaks = [image.file for image, h in zip(done.images, heat) if h.peak_at_edge]
            flagged += [(run.name, file) for file in peaks]
            print(f"| {run.name} | {label} | {len(heat)} | {shares.mean():.2f} ({shares.min():.2f}-{shares.max():.2f}) "
                  f"| {len(peaks)} |", flush=True)
    print(f"\nA flat heatmap puts {band_area():.2f} of its heat on the edge. Heatmaps that peak there "
          f"({len(flagged)}; overlays in {args.out}):")
    for run, file in flagged:
        print(f"  {run}: {file}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, got {value}")
    return value


if __name__ == "__main__":
    main()
