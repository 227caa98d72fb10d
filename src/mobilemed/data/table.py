"""ImageTable: the one in-memory description of a labelled image collection.

Every source (ImageFolder tree, CSV manifest, NIH table, MedMNIST) is read into this shape;
splitting, auditing, caching and training all consume it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class ImageTable:
    """Labelled images.

    paths: (N,) file paths, or MedMNIST ids like "pneumoniamnist:train:17" when `images` is set.
    labels: (N,) int64 class index (binary, multiclass) or (N, K) float32 multi-hot (multilabel).
    splits: (N,) str, one of "train" / "val" / "test", or "" where not yet assigned.
    groups: (N,) str patient / group id, or None when the source has none.
    images: (N, H, W) or (N, H, W, C) uint8 pixels already in memory (MedMNIST), else None.
    """

    paths: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    task: str
    splits: np.ndarray
    groups: np.ndarray | None = None
    images: np.ndarray | None = None
    source: str = ""

    def __post_init__(self):
        self.paths = np.asarray(self.paths, dtype=object)
        self.splits = np.asarray(self.splits, dtype=object)
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=object)
        n = len(self.paths)
        for name in ("labels", "splits", "groups", "images"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"ImageTable.{name} has {len(value)} rows, paths has {n}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def is_multilabel(self) -> bool:
        return self.task == "multilabel"

    def subset(self, index) -> "ImageTable":
        """Rows selected by a boolean mask or integer index, as a new table."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return replace(self, paths=self.paths[index], labels=self.labels[index], splits=self.splits[index],
                       groups=pick(self.groups), images=pick(self.images))

    def split(self, name: str) -> "ImageTable":
        return self.subset(self.splits == name)

    def class_counts(self) -> np.ndarray:
        """(K,) positives per class (multilabel) or images per class."""
        if self.is_multilabel:
            return self.labels.sum(axis=0).astype(np.int64)
        return np.bincount(self.labels.astype(np.int64), minlength=len(self.class_names))
