"""The one place that knows image size, channels and mean/std.

Images travel as uint8 arrays already resized to spec.image_size (see data/cache.py); these
functions turn them into normalised model input. Evaluation, explanation, export and prediction
all go through `to_model_input`, so preprocessing cannot drift from the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Augmentation:
    """The training augmentation a run asked for (--crop-scale, --hflip); called on a normalised batch."""

    crop_scale: float = 1.0  # < 1: random zoomed crops of [crop_scale, 1] of the area, else the light affine
    hflip: bool = False      # mirror half the images: fundus, skin, ultrasound; never chest X-rays
    intensity: float = 0.0   # > 0: random gamma, contrast and brightness of up to this much per image

    @property
    def is_plain(self) -> bool:
        """True when it is the default light affine (a plain view of an image stays meaningful)."""
        return self.crop_scale == 1 and not self.hflip and self.intensity == 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = augment_batch(x, generator, hflip=self.hflip, crop_scale=self.crop_scale)
        return jitter_intensity(x, generator, self.intensity) if self.intensity > 0 else x


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, hflip: bool = False,
                  max_shift: float = 0.08, max_rotate: float = 10.0, max_scale: float = 0.1,
                  crop_scale: float = 1.0) -> torch.Tensor:
    """Geometric augmentation on a normalised batch (B, C, H, W), one random affine per image.

    Default: a light affine (shift, rotation, scale by up to 10%). crop_scale < 1: random zoomed crops
    instead, as torchvision's RandomResizedCrop draws them (a crop covering [crop_scale, 1] of the image's
    area, aspect ratio 3/4 to 4/3, anywhere inside the image), plus the small rotation. Crops matter for
    chest X-rays: how tightly an image is framed differs between classes and hospitals (Kermany's
    pneumonia images are framed tighter than its normals), and a model learns the framing unless crops
    hide it. Chest X-rays are not mirror-symmetric (the heart sits left), so horizontal flips are off
    unless asked. Done on tensors after the decode cache, so augmentation never re-decodes an image.
    """
    b = x.shape[0]
    rand = lambda: torch.rand(b, generator=generator) * 2 - 1  # noqa: E731  uniform in [-1, 1]
    angle = rand() * max_rotate * torch.pi / 180
    if crop_scale < 1:
        half_x, half_y, shift_x, shift_y = _random_crops(b, generator, crop_scale)
        zoom_x, zoom_y = 1 / half_x, 1 / half_y  # as zooms, so the default path below divides exactly as before
    else:
        zoom_x = zoom_y = 1 + rand() * max_scale
        shift_x, shift_y = rand() * max_shift, rand() * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / zoom_x, -sin / zoom_y, shift_x], 1),
                         torch.stack([sin / zoom_x, cos / zoom_y, shift_y], 1)], 1)  # (B, 2, 3)
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        theta[flip, 0, 0] *= -1
        theta[flip, 1, 0] *= -1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Border padding keeps the image's own edge values instead of inventing black corners.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _random_crops(b: int, generator: torch.Generator, min_area: float):
    """Half-widths and centres, in affine_grid's [-1, 1] units, of b crops inside the image whose area
    is uniform in [min_area, 1] of it and whose aspect ratio is log-uniform in [3/4, 4/3]."""
    area = min_area + (1 - min_area) * torch.rand(b, generator=generator)
    log_ratio = (torch.rand(b, generator=generator) * 2 - 1) * math.log(4 / 3)
    half_x = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    half_y = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    shift_x = (torch.rand(b, generator=generator) * 2 - 1) * (1 - half_x)
    shift_y = (torch.rand(b, generator=generator) * 2 - 1) * (1 - half_y)
    return half_x, half_y, shift_x, shift_y


def jitter_intensity(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Random exposure per image of a normalised batch (B, C, H, W): gamma exp(U(-s, s)), contrast 1 + U(-s, s)
    about mid-grey, brightness U(-s/2, s/2) of the range, s = strength, saturating at the image's own range.

    Why: X-rays from another machine, hospital or protocol differ in exposure and post-processing (the
    intensity curve), and a model should not read disease from the film's grey levels. Each image and channel
    is mapped to [0, 1] by its own minimum and maximum first: the curve then acts on the image's grey levels
    whatever the normalisation's mean and std (per channel, so three copies of a grey image stay equal), and
    the result goes back to the same range."""
    b = x.shape[0]
    rand = lambda: (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * strength  # noqa: E731  U(-s, s)
    gamma, contrast, brightness = torch.exp(rand()), 1 + rand(), rand() / 2
    low = x.amin(dim=(2, 3), keepdim=True)
    span = (x.amax(dim=(2, 3), keepdim=True) - low).clamp(min=1e-6)
    unit = ((x - low) / span).clamp(0, 1)
    unit = ((unit ** gamma - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
    return low + unit * span
