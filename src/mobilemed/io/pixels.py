"""Channel matching of uint8 pixels: numpy only, shared by the torch path and the torch-free ONNX path."""
from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights: how a colour image becomes the gray image a 1-channel model expects.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def match_channels(images: np.ndarray, in_chans: int) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, H, W, in_chans): gray is repeated for RGB models,
    colour is averaged (ITU-R 601 luma) for gray models."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == in_chans:
        return images
    if in_chans == 3 and images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    if in_chans == 1 and images.shape[-1] == 3:
        luma = images.astype(np.float32) @ LUMA
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"cannot map {images.shape[-1]} image channels to {in_chans}")


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, size, size[, C]) uint8, bilinear (PIL), as image files are read at a
    model's size. Batches already at that size are returned as they are."""
    from PIL import Image

    images = np.asarray(images)
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)) for img in images])
