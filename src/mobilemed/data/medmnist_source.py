"""MedMNIST by name, through the medmnist package's metadata (official splits, label names, task)."""
from __future__ import annotations

import numpy as np

from mobilemed.assets.medmnist_files import ensure_medmnist, medmnist_info
from mobilemed.data.table import ImageTable

# medmnist's task strings -> ours. Ordinal grades (RetinaMNIST) are trained as multi-class.
_TASKS = {"binary-class": "binary", "multi-class": "multiclass", "ordinal-regression": "multiclass",
          "multi-label, binary-class": "multilabel"}
# The clinical finding of each binary 2D set, which becomes class_names[1]. MedMNIST numbers BreastMNIST's
# classes 0 "malignant", 1 "normal, benign": taken as given, every sensitivity would describe detecting benign.
FINDINGS = {"breastmnist": "malignant", "pneumoniamnist": "pneumonia"}


def is_medmnist_name(name: str) -> bool:
    from medmnist import INFO

    return name.lower().split("@")[0] in INFO


def load_medmnist(name: str, size: int = 28) -> ImageTable:
    """The official train/val/test split of a 2D MedMNIST set, pixels in memory."""
    name = name.lower()
    info = medmnist_info(name)
    task = _TASKS[info["task"]]
    path = ensure_medmnist(name, size)
    with np.load(path) as npz:
        parts = {split: (npz[f"{split}_images"], npz[f"{split}_labels"]) for split in ("train", "val", "test")}
    images = np.concatenate([parts[s][0] for s in parts])
    labels = np.concatenate([parts[s][1] for s in parts])
    splits = np.concatenate([[s] * len(parts[s][0]) for s in parts])
    paths = np.array([f"{name}:{s}:{i}" for s in parts for i in range(len(parts[s][0]))], dtype=object)
    labels = labels.astype(np.float32) if task == "multilabel" else labels[:, 0].astype(np.int64)
    class_names = [info["label"][str(i)] for i in range(len(info["label"]))]
    if task == "binary" and class_names.index(FINDINGS.get(name, class_names[1])) == 0:
        class_names, labels = class_names[::-1], 1 - labels
    return ImageTable(paths=paths, labels=labels, class_names=class_names, task=task, splits=splits,
                      images=images, source=f"medmnist:{name}@{size}")
