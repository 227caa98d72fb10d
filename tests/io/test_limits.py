"""The pixel limit: a header that declares a huge image is refused by name before anything is decoded."""
import struct
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from mobilemed.errors import MobilemedError
from mobilemed.io.dicom import read_dicom
from mobilemed.io.images import read_image
from mobilemed.io.limits import DEFAULT_MAX_PIXELS, ENV_VAR, max_image_pixels


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_declared_png(path, width: int, height: int):
    """A valid PNG header declaring width x height 8-bit gray, with one tiny IDAT: a 'decompression bomb'
    header as an attacker or a broken exporter writes it (a few dozen bytes on disk)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                     + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height", [(20_000, 20_000), (13_000, 12_000)])  # above PIL's 179 MP error; between
def test_declared_size_above_the_limit_is_refused_by_name(tmp_path, width, height):
    path = write_declared_png(tmp_path / "bomb.png", width, height)
    with pytest.raises(MobilemedError) as err:
        read_image(path)
    message = str(err.value)
    assert "bomb.png" in message and f"{width * height:,} pixels" in message
    assert f"limit of {DEFAULT_MAX_PIXELS:,}" in message and "--max-image-pixels" in message


def test_a_mammogram_sized_image_is_read(tmp_path):
    path = tmp_path / "mammo.png"
    Image.fromarray(np.full((5000, 4000), 7, np.uint16)).save(path)  # 20 MP, 16-bit like a real mammogram
    assert read_image(path, size=64).shape == (64, 64)


def test_the_limit_follows_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(path)
    monkeypatch.setenv(ENV_VAR, "1999")
    with pytest.raises(MobilemedError, match="50 x 40 = 2,000 pixels, more than the limit of 1,999"):
        read_image(path)
    monkeypatch.setenv(ENV_VAR, "2000")
    assert read_image(path).shape == (40, 50)
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(MobilemedError, match=f"{ENV_VAR}='lots' is not a positive whole number"):
        max_image_pixels()


def test_dicom_rows_and_columns_are_checked_before_decoding(monkeypatch):
    path = get_testdata_file("CT_small.dcm")  # 128 x 128
    monkeypatch.setenv(ENV_VAR, str(128 * 128 - 1))
    with pytest.raises(MobilemedError, match="CT_small.dcm declares 128 x 128 = 16,384 pixels"):
        read_dicom(path)
    monkeypatch.setenv(ENV_VAR, str(128 * 128))
    assert read_dicom(path).shape == (128, 128)


def test_dicom_declaring_a_huge_image_is_refused(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 30_000, 30_000  # the header lies; the pixel data stays 32 KB
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(MobilemedError, match="huge.dcm declares 30000 x 30000 = 900,000,000 pixels"):
        read_image(tmp_path / "huge.dcm")


def test_dicom_cut_before_its_pixel_data_is_called_truncated(tmp_path):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:data.find(b"\xe0\x7f\x10\x00") - 3])  # ends just before the Pixel Data tag
    with pytest.raises(MobilemedError, match="cut.dcm describes a 128 x 128 image but ends .* truncated"):
        read_dicom(cut)
    no_image = get_testdata_file("rtplan.dcm")
    with pytest.raises(MobilemedError, match="holds no image"):
        read_dicom(no_image)
