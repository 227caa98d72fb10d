"""Models the Grad-CAM sanity tests (and scripts/cam_sanity.py) explain: one trained to find a bright
patch, so the right answer is known, and a linear probe of ImageNet MobileNetV2 on real PneumoniaMNIST."""
from __future__ import annotations

import numpy as np
import torch

from mobilemed.data.transforms import to_model_input
from mobilemed.models import build_model
from mobilemed.spec import GRAY_MEAN, GRAY_STD, ModelSpec

PATCH = 16  # side of the bright square that makes an image class "patch"
SIZE = 64   # the input size the issue names: the last map of a MobileNet is 2x2 there


def gray_spec(arch: str, class_names, dropout: float = 0.0) -> ModelSpec:
    return ModelSpec(arch=arch, class_names=list(class_names), task="binary", image_size=SIZE, in_chans=1,
                     mean=GRAY_MEAN, std=GRAY_STD, dropout=dropout)


def patch_images(n: int, seed: int, size: int = SIZE, corners: np.ndarray | None = None):
    """Noise images; odd-numbered ones get a bright PATCH x PATCH square at a random place. Each image has
    its own background level, so mean brightness does not give the class away: only the patch does."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(0, 20, (n, size, size)) + rng.uniform(50, 130, (n, 1, 1))
    labels = np.arange(n) % 2
    corners = rng.integers(0, size - PATCH + 1, (n, 2)) if corners is None else np.asarray(corners)
    for image, label, (r, c) in zip(pixels, labels, corners):
        image[r:r + PATCH, c:c + PATCH] += 100 * label
    return np.clip(pixels, 0, 255).astype(np.uint8), labels, corners


def train_patch_model(epochs: int = 16):
    """mobilenet_v2_035 from scratch at 64 px, fresh images every epoch (nothing to memorise)."""
    spec = gray_spec("mobilenet_v2_035", ["plain", "patch"])
    torch.manual_seed(0)
    model = build_model(spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    order = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        images, labels, _ = patch_images(200, seed=epoch)
        x, y = to_model_input(images, spec), torch.tensor(labels, dtype=torch.float32)
        model.train()
        for batch in torch.randperm(len(y), generator=order).split(32):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[batch])[:, 0], y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), spec


def pneumonia_images(npz_path, split: str, n: int, seed: int = 0):
    """n images of one official PneumoniaMNIST split (28 px uint8; to_model_input resizes them to 64 px)
    with labels 1 = pneumonia, drawn with a fixed seed."""
    with np.load(npz_path) as npz:
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"][:, 0]
    pick = np.random.default_rng(seed).permutation(len(images))[:n]
    return images[pick], labels[pick].astype(int)


def train_pneumonia_probe(npz_path, backbone_state: dict, n_train: int = 1000):
    """A linear probe of ImageNet MobileNetV2 at 64 px on n_train PneumoniaMNIST training images: the
    frozen backbone's pooled features, the head fitted by full-batch Adam (the tutorial's method)."""
    spec = gray_spec("mobilenet_v2", ["normal", "pneumonia"])
    torch.manual_seed(0)
    model = build_model(spec, backbone_state).freeze_backbone().eval()
    images, labels = pneumonia_images(npz_path, "train", n_train)
    with torch.no_grad():
        features = torch.cat([model.forward_features(b) for b in to_model_input(images, spec).split(100)])
    head = model.head[1]
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    y = torch.tensor(labels, dtype=torch.float32)
    for _ in range(300):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features)[:, 0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), spec


def inside_outside_ratio(heatmaps, corners) -> np.ndarray:
    """Mean heat inside the patch over mean heat outside it, per image (1 = no preference)."""
    ratios = []
    for heat, (r, c) in zip(heatmaps, corners):
        inside = np.zeros(heat.shape, bool)
        inside[r:r + PATCH, c:c + PATCH] = True
        ratios.append(heat[inside].mean() / max(heat[~inside].mean(), 1e-6))
    return np.array(ratios)


def border_peak_fraction(heatmaps) -> float:
    """Fraction of heatmaps that peak in the outer eighth of the image on any side (explain/edge_heat.py)."""
    from mobilemed.explain.edge_heat import edge_heat

    return float(np.mean([edge_heat(h).peak_at_edge for h in heatmaps]))
