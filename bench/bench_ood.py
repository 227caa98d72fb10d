"""Share of images the OOD check flags: a model's own test split versus images from another source.

    python bench/bench_ood.py            # both pairs; trains the two linear probes first (or reuses --runs)

Pairs: (a) a Kermany paediatric chest X-ray linear probe (the README recipe) on the NIH adult chest X-rays,
(b) a PneumoniaMNIST linear probe on BreastMNIST (ultrasound). Needs ../shared (and the MedMNIST files in
the cache: `mobilemed assets add ../shared/data/medmnist/{pneumonia,breast}mnist.npz`).

Methods, each thresholded at the 0.99 quantile of the VALIDATION scores (so ~1% of in-distribution images
are flagged by construction):
  mahalanobis_l2 (product)  the detector stored in best.pt: class-conditional Gaussians with a shared
                         Ledoit-Wolf covariance (Lee et al. 2018) on L2-normalised features (Mueller & Hein
                         2025), computed through Predictor on the other source
  mahalanobis (raw)      the same on raw features: Lee et al.'s baseline
  relative mahalanobis   minus the distance to one class-agnostic background Gaussian (Ren et al. 2021)
  knn (k=50)             distance to the 50th nearest training feature after L2 normalisation (Sun et al. 2022)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAIRS = {
    "kermany -> nih": (str(SHARED / "data/kermany_cxr_224"), str(SHARED / "data/nih_cxr14_1000")),
    "pneumoniamnist -> breastmnist": ("pneumoniamnist", "breastmnist"),
}
QUANTILE = 0.99


def train_probe(data: str, run_dir: Path) -> Path:
    from mobilemed.cli.main import main

    if not (run_dir / "best.pt").exists():
        code = main(["--quiet", "train", data, "--mode", "linear-probe", "--weights",
                     str(SHARED / "weights/mobilenet_v2_imagenet.pth"), "--out", str(run_dir), "--no-gallery",
                     "--n-bootstrap", "0"])
        if code != 0:
            raise SystemExit(f"training on {data} failed with exit code {code}")
    return run_dir / "best.pt"


def split_features(model, spec, data: str) -> tuple[dict, dict]:
    """Features and labels per split of the source as training split it (same options, same seed)."""
    from mobilemed.data.cache import decoded_images
    from mobilemed.data.sources import load_table
    from mobilemed.training.features import frozen_features

    table = load_table(data)
    images, keep = decoded_images(table, spec.image_size, progress=False)
    table = table.subset(keep)
    features = {s: frozen_features(model.backbone, np.asarray(images[table.splits == s]), spec, progress=False)
                for s in ("train", "val", "test")}
    return features, {s: table.labels[table.splits == s] for s in ("train", "val", "test")}


def other_source(predictor, data: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, in_distribution by the product path) of every image of the other source, no split."""
    from mobilemed.data.cache import decoded_images
    from mobilemed.data.sources import load_table
    from mobilemed.training.features import frozen_features

    table = load_table(data)
    images, _ = decoded_images(table, predictor.spec.image_size, progress=False)
    result = predictor.predict_images(np.asarray(images), list(table.paths))
    return frozen_features(predictor.model.backbone, np.asarray(images), predictor.spec), result.in_distribution


def alternative_scores(features: dict, labels: dict, other: np.ndarray) -> dict:
    """{method: (val, test, other) scores} for the published alternatives."""
    from mobilemed.ood import MahalanobisDetector

    classwise = MahalanobisDetector(normalize=False).fit(features["train"], labels["train"])
    background = MahalanobisDetector(normalize=False).fit(features["train"])
    unit = {s: f / np.linalg.norm(f, axis=1, keepdims=True) for s, f in {**features, "other": other}.items()}

    def knn(x, k=50):
        distances = np.sqrt(np.maximum(2 - 2 * x @ unit["train"].T, 0))  # unit vectors: |a-b|^2 = 2 - 2 a.b
        return np.partition(distances, k - 1, axis=1)[:, k - 1]

    parts = {"val": features["val"], "test": features["test"], "other": other}
    return {
        "mahalanobis (raw)": tuple(classwise.score(parts[p]) for p in parts),
        "relative mahalanobis": tuple(classwise.score(parts[p]) - background.score(parts[p]) for p in parts),
        "knn (k=50)": tuple(knn(unit[p]) for p in parts),
    }


def flagged_share(val: np.ndarray, *scores: np.ndarray) -> list[float]:
    threshold = np.quantile(val, QUANTILE)
    return [float((s > threshold).mean()) for s in scores]


def run_pair(name: str, source: str, target: str, runs: Path) -> list[dict]:
    from mobilemed.checkpoint import load_checkpoint
    from mobilemed.inference import Predictor

    checkpoint = train_probe(source, runs / name.split()[0])
    predictor = Predictor.from_checkpoint(checkpoint)
    test_ood = json.loads((checkpoint.parent / "metrics.json").read_text())["test"]["ood"]
    other, in_distribution = other_source(predictor, target)
    rows = [{"pair": name, "method": f"{predictor.ood.method} (product)", "test": test_ood["fraction_flagged"],
             "other": float(1 - in_distribution.mean()), "n_test": test_ood["n"], "n_other": len(other)}]
    model, spec = load_checkpoint(checkpoint)
    features, labels = split_features(model, spec, source)
    for method, (val, test, far) in alternative_scores(features, labels, other).items():
        test_share, other_share = flagged_share(val, test, far)
        rows.append({"pair": name, "method": method, "test": test_share, "other": other_share,
                     "n_test": len(test), "n_other": len(far)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/bench-ood", help="run folders of the two probes (reused)")
    parser.add_argument("--pair", choices=sorted(PAIRS), help="only this pair")
    args = parser.parse_args()
    rows = []
    for name, (source, target) in PAIRS.items():
        if args.pair in (None, name):
            rows += run_pair(name, source, target, Path(args.runs))
    print(f"\n| pair | method | own test flagged | other source flagged | n test | n other |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pair']} | {r['method']} | {r['test']:.1%} | {r['other']:.1%} | {r['n_test']} | {r['n_other']} |")


if __name__ == "__main__":
    main()
