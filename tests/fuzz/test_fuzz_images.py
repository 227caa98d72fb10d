"""Fuzz io.images.read_image: random bytes, truncations and mutations of real PNG / JPEG / TIFF / BMP / GIF
files. Every input gives uint8 pixels or a MobilemedError; nothing else escapes."""
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from mobilemed.io.images import read_image
from mobilemed.io.limits import ENV_VAR
from tests.fuzz.strategies import (assert_info_or_mobilemed_error, assert_pixels_or_mobilemed_error, fuzz_settings,
                                   mutated_bytes, truncations)

SUFFIXES = (".png", ".jpg", ".tif", ".bmp", ".gif", ".webp", ".pgm")


def encode(pixels: np.ndarray, fmt: str, mode: str | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, fmt, **options)
    return buffer.getvalue()


def seed_files() -> list[tuple[str, bytes]]:
    """Small valid files of every kind read_image meets: 8/16-bit gray, RGB, palette, EXIF-rotated JPEG."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    deep = (rng.integers(0, 4096, (20, 24))).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated 90 degrees
    rotated = io.BytesIO()
    Image.fromarray(rgb).save(rotated, "JPEG", exif=exif.tobytes())
    palette = io.BytesIO()
    Image.fromarray(gray).convert("P").save(palette, "PNG", transparency=bytes(range(8)))
    return [(".png", encode(gray, "PNG")), (".png", encode(rgb, "PNG")), (".png", encode(deep, "PNG")),
            (".png", palette.getvalue()), (".jpg", encode(rgb, "JPEG")), (".jpg", encode(gray, "JPEG")),
            (".jpg", rotated.getvalue()), (".tif", encode(deep, "TIFF")), (".tif", encode(rgb, "TIFF")),
            (".bmp", encode(rgb, "BMP")), (".gif", encode(gray, "GIF")), (".pgm", encode(gray, "PPM"))]


SEEDS = seed_files()
SEED_BYTES = [data for _, data in SEEDS]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_images")


@pytest.fixture(autouse=True)
def small_pixel_limit(monkeypatch):
    """A mutated header may declare any size: a 4 MP limit keeps every example fast (and tests the limit)."""
    monkeypatch.setenv(ENV_VAR, str(4_000_000))


def check(folder, data: bytes, suffix: str, size):
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    assert_info_or_mobilemed_error(path)
    return assert_pixels_or_mobilemed_error(lambda: read_image(path, size=size), size)


def test_every_seed_reads(folder):
    for suffix, data in SEEDS:
        assert check(folder, data, suffix, 16) == "read"


@fuzz_settings(max_examples=300)
@given(data=st.binary(max_size=600), suffix=st.sampled_from(SUFFIXES), size=st.sampled_from([None, 16]))
def test_random_bytes(folder, data, suffix, size):
    check(folder, data, suffix, size)


@fuzz_settings(max_examples=300)
@given(data=truncations(SEED_BYTES), suffix=st.sampled_from(SUFFIXES), size=st.sampled_from([None, 16]))
def test_truncated_files(folder, data, suffix, size):
    check(folder, data, suffix, size)


@fuzz_settings(max_examples=600)
@given(data=mutated_bytes(SEED_BYTES, header=128), suffix=st.sampled_from(SUFFIXES),
       size=st.sampled_from([None, 16]))
def test_mutated_files(folder, data, suffix, size):
    check(folder, data, suffix, size)
