"""Site recalibration on Kermany: operating point chosen on validation vs re-chosen on half of the test folder.

    python bench/bench_recalibrate.py [--run runs/bench-recalibrate/kermany]

Trains the README's linear probe (train folder -> train + validation) unless --run holds one, splits the
official test folder into two halves stratified by class (seed 0; the images have no patient ids, so
class stratification is all a split can do), writes them as CSV manifests, recalibrates on half A
(`recalibrate_checkpoint`, Youden rule and temperature) and scores both checkpoints on half B:
accuracy, sensitivity and specificity with 95% bootstrap CIs (1000 resamples of half B).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KERMANY = SHARED / "data/kermany_cxr_224"


def write_halves(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """site_a.csv / site_b.csv: each class of the test folder shuffled (seeded) and cut in two."""
    rng = np.random.default_rng(seed)
    halves = ([], [])
    for label in ("NORMAL", "PNEUMONIA"):
        # relative to the data folder, which is the manifests' --image-root (paths never leave it)
        files = sorted(str(p.relative_to(KERMANY)) for p in (KERMANY / "test" / label).glob("*.jpeg"))
        order = rng.permutation(len(files))
        for rank, index in enumerate(order):
            halves[rank % 2].append((files[index], label))
    paths = folder / "site_a.csv", folder / "site_b.csv"
    for path, rows in zip(paths, halves):
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
    return paths


def site_options():
    from mobilemed.data.sources import DataOptions

    return DataOptions(image_root=str(KERMANY))


def score(checkpoint: Path, manifest: Path) -> dict:
    from mobilemed.data.cache import decoded_images
    from mobilemed.evaluation.metrics import compute_metrics
    from mobilemed.inference import Predictor
    from mobilemed.recalibration import site_labels, site_table

    predictor = Predictor.from_checkpoint(checkpoint)
    spec = predictor.spec
    table = site_table(str(manifest), site_options(), "all")
    images, _ = decoded_images(table, spec.image_size, progress=False)
    result = predictor.predict_images(np.asarray(images), list(table.paths))
    report = compute_metrics(site_labels(table, spec, str(manifest)), result.probabilities, task=spec.task,
                             class_names=spec.class_names, thresholds=spec.thresholds, n_bootstrap=1000, seed=0)
    return {"threshold": spec.thresholds[0], "temperature": spec.temperature, "n": report.n,
            **{m: report.overall[m] for m in ("accuracy", "sensitivity_macro", "specificity_macro")}}


def main() -> None:
    from mobilemed.cli.main import main as cli
    from mobilemed.recalibration import recalibrate_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-recalibrate/kermany", help="linear-probe run folder (reused)")
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "best.pt").exists():
        assert cli(["--quiet", "train", str(KERMANY), "--mode", "linear-probe", "--weights",
                    str(SHARED / "weights/mobilenet_v2_imagenet.pth"), "--out", str(run), "--no-gallery",
                    "--n-bootstrap", "0"]) == 0
    site_a, site_b = write_halves(run)
    recalibrated = recalibrate_checkpoint(run / "best.pt", str(site_a), run / "site.pt", split="all",
                                          data_options=site_options()).path
    rows = {"chosen on validation (training)": score(run / "best.pt", site_b),
            "recalibrated on test half A": score(recalibrated, site_b)}
    n = next(iter(rows.values()))["n"]
    print(f"\nKermany linear probe scored on test half B (n = {n}); 95% bootstrap CIs")
    print("| operating point | threshold | temperature | accuracy | sensitivity | specificity |")
    print("|---|---:|---:|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['threshold']:.3f} | {r['temperature']:.3f} | {r['accuracy'].format()} | "
              f"{r['sensitivity_macro'].format()} | {r['specificity_macro'].format()} |")


if __name__ == "__main__":
    main()
