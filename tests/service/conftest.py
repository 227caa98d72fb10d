"""A tiny trained model and the files a reading room (and an attacker) would upload."""
from __future__ import annotations

import io

import pytest

from tests.conftest import train_tiny_checkpoint

pytest.importorskip("fastapi")


@pytest.fixture(scope="package")
def served_run(tmp_path_factory):
    """(best.pt, data folder) of a tiny blob model trained at 64 px, so Grad-CAM has a map to show."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("service"), image_px=64, image_size=64)


@pytest.fixture(scope="package")
def png_bytes(served_run) -> bytes:
    _, data = served_run
    return next((data / "test" / "pneumonia").glob("*.png")).read_bytes()


@pytest.fixture(scope="package")
def dicom_path():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's bundled CT_small.dcm is absent")
    return path


@pytest.fixture(scope="package")
def bad_uploads(png_bytes, dicom_path, tmp_path_factory) -> dict:
    """name -> (file name, bytes, expected status): each must be refused with JSON and a 4xx."""
    import pydicom

    ds = pydicom.dcmread(dicom_path)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    multi = io.BytesIO()
    ds.save_as(multi, enforce_file_format=True)
    return {
        "truncated png": ("xray.png", png_bytes[: len(png_bytes) // 3], 422),
        "text named .png": ("xray.png", b"this is not an image\n" * 10, 415),
        "60 MB file": ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (60 * 1024 * 1024), 413),
        "multi-frame dicom": ("cine.dcm", multi.getvalue(), 422),
        "empty file": ("empty.png", b"", 400),
    }
