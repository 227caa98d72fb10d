"""Fuzz io.dicom through read_image: random bytes, truncations, byte mutations and attribute mutations of
real DICOMs (pydicom's own test files, which ship in its wheel, and ../shared's when present). Every input
gives uint8 pixels or a MobilemedError; nothing else escapes."""
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from mobilemed.io.images import read_image
from mobilemed.io.limits import ENV_VAR
from tests.conftest import SHARED
from tests.fuzz.strategies import (assert_info_or_mobilemed_error, assert_pixels_or_mobilemed_error, fuzz_settings,
                                   mutated_bytes, truncations)

# Native, RLE, JPEG baseline, JPEG 2000, big endian, colour, YBR 4:2:2, a non-image and a truncated file.
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm",
                 "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", "JPEG2000.dcm",
                 "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_small_odd.dcm", "rtplan.dcm", "MR_truncated.dcm")
SHARED_FILES = ("abdomen_ct_bigendian.dcm", "chest_cr_monochrome1.dcm")


def seed_paths() -> list[Path]:
    paths = [Path(get_testdata_file(name, download=False)) for name in PYDICOM_FILES]
    shared = [SHARED / "data" / "dicom" / name for name in SHARED_FILES]
    paths += [path for path in shared if path.is_file()]
    return paths


SEED_PATHS = seed_paths()
SEED_BYTES = [path.read_bytes() for path in SEED_PATHS]

# Attributes a reader trusts, and values a broken or hostile file may carry.
ATTRIBUTES = {
    "Rows": st.integers(0, 70_000), "Columns": st.integers(0, 70_000),
    "BitsAllocated": st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 70), "HighBit": st.integers(0, 70), "PixelRepresentation": st.integers(0, 3),
    "SamplesPerPixel": st.integers(0, 5), "NumberOfFrames": st.integers(-2, 40),
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422",
                                                  "PALETTE COLOR", "", "monochrome2", "CMYK"]),
    "RescaleSlope": st.sampled_from([0, -1, 1e-30, 1e30, float("nan"), float("inf"), "x"]),
    "RescaleIntercept": st.sampled_from([-1e30, 0, 1024, float("nan")]),
    "WindowCenter": st.sampled_from([0, -5000, 40, 1e30, float("nan")]),
    "WindowWidth": st.sampled_from([0, -1, 1, 400, 1e-30, float("inf"), float("nan")]),
    "VOILUTFunction": st.sampled_from(["LINEAR", "SIGMOID", "LINEAR_EXACT", "BOGUS"]),
    "PlanarConfiguration": st.integers(0, 3),
}


@st.composite
def attribute_mutations(draw) -> bytes:
    """A real DICOM re-saved with 1-3 attributes set to edge values (or deleted)."""
    ds = pydicom.dcmread(io.BytesIO(draw(st.sampled_from(SEED_BYTES[:10]))))
    for _ in range(draw(st.integers(1, 3))):
        keyword = draw(st.sampled_from(sorted(ATTRIBUTES)))
        if draw(st.integers(0, 5)) == 0:
            if keyword in ds:
                delattr(ds, keyword)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on out-of-range values; that is the point
            try:
                setattr(ds, keyword, draw(ATTRIBUTES[keyword]))
            except (TypeError, ValueError, OverflowError):  # a value pydicom refuses to hold at all
                pass
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds.save_as(buffer, enforce_file_format=True)
        except Exception:  # a value pydicom cannot even write: write the seed instead
            return draw(st.sampled_from(SEED_BYTES))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_dicom")


@pytest.fixture(autouse=True)
def small_pixel_limit(monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(4_000_000))  # a mutated Rows x Columns stays fast to refuse


def check(folder, data: bytes, size, suffix: str = ".dcm"):
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about what it repairs; the outcome is what counts
        assert_info_or_mobilemed_error(path)
        return assert_pixels_or_mobilemed_error(lambda: read_image(path, size=size), size)


def test_the_image_seeds_read(folder):
    outcomes = [check(folder, data, 16) for data in SEED_BYTES]
    assert outcomes.count("refused") == 2  # rtplan.dcm (no image) and MR_truncated.dcm


@fuzz_settings(max_examples=200)
@given(data=st.binary(max_size=400).map(lambda b: b"\0" * 128 + b"DICM" + b), size=st.sampled_from([None, 16]))
def test_random_bytes_after_the_dicom_marker(folder, data, size):
    check(folder, data, size, suffix="")  # suffix-less: found by the marker, as UID-named files are


@fuzz_settings(max_examples=250)
@given(data=truncations(SEED_BYTES), size=st.sampled_from([None, 16]))
def test_truncated_files(folder, data, size):
    check(folder, data, size)


@fuzz_settings(max_examples=350)
@given(data=mutated_bytes(SEED_BYTES, header=1024), size=st.sampled_from([None, 16]))
def test_mutated_bytes(folder, data, size):
    check(folder, data, size)


@fuzz_settings(max_examples=300)
@given(data=attribute_mutations(), size=st.sampled_from([None, 16]))
def test_mutated_attributes(folder, data, size):
    check(folder, data, size)
