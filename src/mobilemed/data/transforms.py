"""The one place that knows image size, channels and mean/std.

Images travel as uint8 arrays already resized to spec.image_size (see data/cache.py); these
functions turn them into normalised model input. Evaluation, explanation, export and prediction
all go through `to_model_input`, so preprocessing cannot drift from the model.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mobilemed.io.pixels import match_channels  # noqa: F401  (re-exported: callers import it from here)
from mobilemed.spec import ModelSpec


def to_model_input(images: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> (N, in_chans, S, S) float32 normalised by spec.mean / spec.std."""
    pixels = match_channels(np.ascontiguousarray(images), spec.in_chans)
    if not pixels.flags.writeable:  # memory-mapped caches are read-only; torch wants a writable buffer
        pixels = pixels.copy()
    return normalise_pixels(torch.from_numpy(pixels), spec)


def normalise_pixels(pixels: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """(N, H, W, in_chans) uint8 tensor -> (N, in_chans, S, S) float32 normalised by spec.mean / spec.std.

    Pure tensor ops, so the exported ONNX graph runs exactly this on its uint8 input."""
    x = pixels.permute(0, 3, 1, 2).float() / 255.0  # (N, C, H, W) in [0, 1]
    if x.shape[-1] != spec.image_size or x.shape[-2] != spec.image_size:
        x = F.interpolate(x, size=(spec.image_size, spec.image_size), mode="bilinear",
                          antialias=True, align_corners=False)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x - mean) / std


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, hflip: bool = False,
                  max_shift: float = 0.08, max_rotate: float = 10.0, max_scale: float = 0.1) -> torch.Tensor:
    """Light geometric augmentation on a normalised batch (B, C, H, W), one random affine per image.

    Chest X-rays are not mirror-symmetric (the heart sits left), so horizontal flips are off unless asked.
    Done on tensors after the decode cache, so augmentation never re-decodes an image.
    """
    b = x.shape[0]
    rand = lambda: torch.rand(b, generator=generator) * 2 - 1  # noqa: E731  uniform in [-1, 1]
    angle = rand() * max_rotate * torch.pi / 180
    scale = 1 + rand() * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, rand() * max_shift], 1),
                         torch.stack([sin, cos, rand() * max_shift], 1)], 1)  # (B, 2, 3)
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        theta[flip, 0, 0] *= -1
        theta[flip, 1, 0] *= -1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Border padding keeps the image's own edge values instead of inventing black corners.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
