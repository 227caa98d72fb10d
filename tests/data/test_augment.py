"""Random zoomed crops (--crop-scale): where they land, how big they are, and that the default is unchanged;
random exposure (--intensity): a monotone curve per image that stays in the image's own range."""
import math

import numpy as np
import pytest
import torch

from mobilemed.data.transforms import Augmentation, augment_batch, jitter_intensity


def _coordinates(n: int, size: int = 65) -> torch.Tensor:
    """A batch whose channel 0 holds each pixel's x coordinate and channel 1 its y, in affine_grid's units."""
    line = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([x, y]).expand(n, 2, size, size).clone()


def test_crops_stay_inside_the_image_and_cover_the_asked_share_of_its_area():
    n, min_area = 400, 0.35
    out = augment_batch(_coordinates(n), torch.Generator().manual_seed(0), max_rotate=0.0, crop_scale=min_area)
    left, right = out[:, 0, 32, 0], out[:, 0, 32, -1]
    top, bottom = out[:, 1, 0, 32], out[:, 1, -1, 32]
    width, height = (right - left) / 2, (bottom - top) / 2  # shares of the image's width and height
    area = width * height
    assert out.min() >= -1 and out.max() <= 1  # nothing sampled from outside the image
    assert area.min() >= min_area * 0.93 and area.max() <= 1.0  # 0.93: the outermost pixel centres
    assert area.max() - area.min() > 0.5  # areas spread over [0.35, 1], not one fixed zoom
    ratio = width / height
    assert ratio.min() >= 0.7 and ratio.max() <= 1.0 / 0.7
    centre_x = (left + right) / 2
    assert centre_x.abs().max() > 0.2  # crops move about the image, not only the centre


def test_crops_are_reproducible_from_the_generator_and_differ_between_draws():
    x = torch.randn(6, 1, 32, 32)
    first = augment_batch(x, torch.Generator().manual_seed(3), crop_scale=0.5)
    again = augment_batch(x, torch.Generator().manual_seed(3), crop_scale=0.5)
    other = augment_batch(x, torch.Generator().manual_seed(4), crop_scale=0.5)
    assert torch.equal(first, again) and not torch.allclose(first, other)


def test_the_default_light_affine_zooms_by_at_most_ten_percent():
    out = augment_batch(_coordinates(200), torch.Generator().manual_seed(1), max_rotate=0.0, max_shift=0.0)
    width = (out[:, 0, 32, -1] - out[:, 0, 32, 0]) / 2
    assert width.min() >= 1 / 1.1 * 0.96 and width.max() <= 1.0  # border padding clamps zoom-outs at the edge
    assert math.isclose(float(out[:, 0, 32, 32].abs().max()), 0.0, abs_tol=0.02)  # centred: no shift asked


@pytest.mark.parametrize("scale", [1.0, 0.999])
def test_a_crop_scale_of_one_is_the_light_affine(scale):
    x = torch.randn(4, 1, 32, 32)
    default = augment_batch(x, torch.Generator().manual_seed(0))
    explicit = augment_batch(x, torch.Generator().manual_seed(0), crop_scale=scale)
    assert torch.equal(default, explicit) == (scale == 1.0)
    assert np.isfinite(explicit.numpy()).all()


def test_hflip_mirrors_about_half_the_images_and_nothing_else_changes_their_content():
    x = _coordinates(200)
    out = Augmentation(hflip=True)(x, torch.Generator().manual_seed(2))
    mirrored = out[:, 0, 32, -1] < out[:, 0, 32, 0]  # x coordinate now falls from left to right
    assert 0.35 < mirrored.float().mean() < 0.65
    assert Augmentation().is_plain and not Augmentation(hflip=True).is_plain
    assert not Augmentation(crop_scale=0.5).is_plain


IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def _normalised_grey(n: int, size: int = 24) -> torch.Tensor:
    """n grey images (a ramp plus noise), copied to three channels and normalised as ImageNet inputs are."""
    ramp = torch.linspace(0.1, 0.9, size).expand(size, size)
    grey = (ramp + 0.05 * torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    return (grey.expand(n, 3, size, size) - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)


def test_intensity_is_a_monotone_curve_per_image_within_its_own_range():
    x = _normalised_grey(50)
    out = jitter_intensity(x, torch.Generator().manual_seed(0), 0.4)
    assert (out.amin((2, 3)) >= x.amin((2, 3)) - 1e-5).all() and (out.amax((2, 3)) <= x.amax((2, 3)) + 1e-5).all()
    for before, after in zip(x[:, 0].flatten(1), out[:, 0].flatten(1)):  # brighter stays brighter (or saturates)
        order = torch.argsort(before)
        assert (torch.diff(after[order]) >= -1e-5).all()
    change = (out - x).abs().mean((1, 2, 3))
    assert change.min() > 0.005 and change.max() > 0.1  # every image moved, some a lot


def test_intensity_keeps_the_three_copies_of_a_grey_image_equal():
    out = jitter_intensity(_normalised_grey(8), torch.Generator().manual_seed(1), 0.3)
    pixels = out * IMAGENET_STD.view(1, 3, 1, 1) + IMAGENET_MEAN.view(1, 3, 1, 1)  # back to grey levels
    torch.testing.assert_close(pixels[:, 0], pixels[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2], atol=1e-5, rtol=0)


def test_intensity_varies_gamma_contrast_and_brightness_reproducibly():
    x = _normalised_grey(200)
    out = jitter_intensity(x, torch.Generator().manual_seed(2), 0.3)
    again = jitter_intensity(x, torch.Generator().manual_seed(2), 0.3)
    assert torch.equal(out, again)
    spread = out.std((1, 2, 3)) / x.std((1, 2, 3))  # contrast: some images flatter, some steeper
    assert spread.min() < 0.85 and spread.max() > 1.15
    shift = (out - x).mean((1, 2, 3))  # brightness and gamma: some darker, some brighter
    assert shift.min() < -0.1 and shift.max() > 0.1


def test_no_intensity_leaves_the_geometric_augmentation_as_it_was():
    x = torch.randn(4, 1, 32, 32)
    plain = Augmentation(crop_scale=0.5)(x, torch.Generator().manual_seed(0))
    assert torch.equal(plain, augment_batch(x, torch.Generator().manual_seed(0), crop_scale=0.5))
    assert not Augmentation(intensity=0.2).is_plain
    assert not torch.equal(Augmentation(crop_scale=0.5, intensity=0.2)(x, torch.Generator().manual_seed(0)), plain)
