"""Shared fixtures: an isolated cache per test session, real data from ../shared when present."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def mobilemed_home(tmp_path_factory):
    """Tests never write into the user's cache and never download: MOBILEMED_OFFLINE is set."""
    home = tmp_path_factory.mktemp("mobilemed_home")
    os.environ["MOBILEMED_HOME"] = str(home)
    os.environ["MOBILEMED_OFFLINE"] = "1"
    return home


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (real-data tests run only where it exists)")
    return SHARED


@pytest.fixture(scope="session")
def imagenet_cache(shared, mobilemed_home):
    """The cache filled from ../shared as an offline site would: PneumoniaMNIST + ImageNet MobileNetV2."""
    from mobilemed import assets

    if not assets.weights_path("mobilenet_v2").exists():
        assets.add_weights_file(shared / "weights/mobilenet_v2_imagenet.pth", "mobilenet_v2")
    for name in ("pneumoniamnist", "breastmnist"):
        if not (mobilemed_home / "medmnist" / f"{name}.npz").exists():
            assets.add_medmnist_file(shared / f"data/medmnist/{name}.npz")
    return mobilemed_home


def make_blob_folder(root: Path, *, per_class: int = 12, size: int = 40, splits=("train", "val", "test"),
                     seed: int = 0) -> Path:
    """A tiny ImageFolder whose classes differ visibly: class 'pneumonia' has a bright blob."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label in ("normal", "pneumonia"):
            folder = root / split / label if split else root / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.normal(80, 20, (size, size))
                if label == "pneumonia":
                    y, x = rng.integers(5, size - 15, 2)
                    pixels[y:y + 10, x:x + 10] += 120
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(folder / f"{label}_{i}.png")
    return root


def tiny_train_args(*, image_size: int = 32, epochs: int | None = 1, n_bootstrap: int = 20) -> list[str]:
    """`mobilemed train` arguments for a seconds-long scratch run of the smallest backbone: for tests of the
    plumbing, not of learning. epochs=None leaves --epochs to the caller."""
    args = ["--mode", "scratch", "--weights", "none", "--arch", "mobilenet_v3_small", "--image-size", str(image_size),
            "--batch-size", "16", "--no-gallery", "--n-bootstrap", str(n_bootstrap)]
    return args if epochs is None else [*args, "--epochs", str(epochs)]


def train_tiny_checkpoint(root: Path, *, image_px: int, image_size: int, extra=()) -> tuple[Path, Path]:
    """A blob folder of image_px images under root/data and a model trained on it (extra: more train
    arguments): (best.pt, data folder)."""
    from mobilemed.cli.main import main

    data = make_blob_folder(root / "data", per_class=8, size=image_px)
    assert main(["--quiet", "train", str(data), "--out", str(root / "run"),
                 *tiny_train_args(image_size=image_size), *extra]) == 0
    return root / "run" / "best.pt", data


@pytest.fixture
def blob_folder(tmp_path) -> Path:
    return make_blob_folder(tmp_path / "blobs")
