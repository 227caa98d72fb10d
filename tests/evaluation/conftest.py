"""A synthetic run folder with real arrays, JSON and PNGs (no torch): what training would write."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mobilemed.evaluation.calibration import probabilities_from_logits
from mobilemed.evaluation.metrics import compute_metrics
from mobilemed.evaluation.thresholds import choose_thresholds

CLASSES = {"binary": ["NORMAL", "PNEUMONIA"], "multiclass": ["grade 0", "grade 1", "grade 2"],
           "multilabel": ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                          "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
                          "Pleural_Thickening", "Hernia"]}
SIZES = {"binary": (4708, 524, 624), "multiclass": (300, 90, 120), "multilabel": (600, 200, 200)}


def synthetic_split(task: str, n: int, rng, separation: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits) with the package's conventions; larger separation = a better model."""
    k = len(CLASSES[task])
    if task == "binary":
        y = (rng.random(n) < 0.62).astype(int)
        return y, separation * (2 * y - 1) / 2 + rng.normal(0, 1.0, n)
    if task == "multiclass":
        y = rng.integers(0, k, n)
        return y, separation * np.eye(k)[y] + rng.normal(0, 1.0, (n, k))
    prevalence = np.linspace(0.02, 0.3, k)
    prevalence[-1] = 0.0  # a finding with no positives at all: AUROC undefined, never a crash
    y = (rng.random((n, k)) < prevalence).astype(int)
    return y, separation * (2 * y - 1) / 2 - 1.0 + rng.normal(0, 1.0, (n, k))


def make_run(run_dir: Path, *, task: str = "binary", seed: int = 0, separation: float = 2.0,
             test_logits: np.ndarray | None = None, gallery: bool = True, history: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = CLASSES[task]
    n_train, n_val, n_test = SIZES[task]
    data_rng = np.random.default_rng(1234)  # the same images and labels in every run of a task
    y_train = synthetic_split(task, n_train, data_rng)[0]
    y_val, val_logits = synthetic_split(task, n_val, data_rng, separation)
    y_test, logits = synthetic_split(task, n_test, data_rng, separation)
    val_logits = val_logits + rng.normal(0, 0.3, val_logits.shape)  # runs differ by seed
    logits = logits + rng.normal(0, 0.3, logits.shape) if test_logits is None else test_logits
    val_prob = probabilities_from_logits(val_logits, task)
    thresholds = choose_thresholds(y_val, val_prob, task=task, rule="youden")
    spec = {"arch": "mobilenet_v2", "class_names": names, "task": task, "image_size": 64, "in_chans": 1,
            "mean": [0.449], "std": [0.226], "thresholds": thresholds, "threshold_rule": "youden",
            "temperature": 1.0, "dropout": 0.2, "tta": False}
    files = {s: [f"{s}/img_{i:04d}.png" for i in range(n)] for s, n in
             (("train", n_train), ("val", n_val), ("test", n_test))}
    metrics = {"train_seconds": 12.5}
    for split, y, z in (("val", y_val, val_logits), ("test", y_test, logits)):
        prob = probabilities_from_logits(z, task)
        np.savez(run_dir / f"predictions_{split}.npz", files=np.asarray(files[split]), y_true=y, y_prob=prob,
                 logits=z, class_names=np.asarray(names), task=np.asarray(task))
        metrics[split] = compute_metrics(y, prob, task=task, class_names=names, thresholds=thresholds,
                                         n_bootstrap=200 if split == "test" else 0, seed=0).to_dict()
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "spec.json").write_text(json.dumps(spec))
    config = {"data": "pneumoniamnist" if task == "binary" else f"synthetic-{task}", "mode": "linear-probe",
              "epochs": 8, "seed": seed, "note": "<script>alert('x')</script> & friends"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"config": config, "spec": spec}))
    (run_dir / "versions.json").write_text(json.dumps({"mobilemed": "0.1.0", "numpy": np.__version__, "seed": seed}))
    _write_split(run_dir / "split.csv", task, names, files, (y_train, y_val, y_test))
    if history:
        hist = [{"epoch": e, "train_loss": 0.7 / e ** 0.5, "val_loss": 0.6 / e ** 0.4 + 0.01 * e,
                 "val_auroc": 0.8 + 0.1 * (1 - np.exp(-e / 2)), "lr": 1e-3, "seconds": 1.5} for e in range(1, 9)]
        (run_dir / "history.json").write_text(json.dumps(hist))
    if gallery:
        _write_gallery(run_dir / "gallery", rng)
    return run_dir


def _write_split(path: Path, task: str, names, files, labels) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", "group", *(names if task == "multilabel" else ["label"])])
        for split, y in zip(("train", "val", "test"), labels):
            for i, file in enumerate(files[split]):
                group = f"patient{i // 2}" if task == "multilabel" else ""
                row = [int(v) for v in y[i]] if task == "multilabel" else [names[int(y[i])]]
                writer.writerow([file, split, group, *row])


def _write_gallery(folder: Path, rng) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for kind in ("TP", "FP", "TN", "FN"):
        for rank in range(2):
            pixels = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
            png = f"{kind}_{rank}.png"
            Image.fromarray(pixels).save(folder / png)
            entries.append({"file": f"test/<b>img</b>_{kind}{rank}.png", "png": png, "kind": kind,
                            "true_label": "PNEUMONIA", "predicted_label": "NORMAL", "probability": 0.87,
                            "cam_target": "PNEUMONIA"})
    (folder / "gallery.json").write_text(json.dumps(entries))


@pytest.fixture
def binary_run(tmp_path) -> Path:
    return make_run(tmp_path / "run-binary")


@pytest.fixture
def restore_logging():
    """main() points logging at the captured stderr; put the root logger back so later tests do not
    log into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
