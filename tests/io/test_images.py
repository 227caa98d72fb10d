"""read_image over every PIL mode, DICOM, resizing and the unreadable-file messages."""
import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from mobilemed.errors import MobilemedError
from mobilemed.io.images import image_info, is_image_file, read_image


def save(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def ramp(width=64, height=32, high=255):
    return np.tile(np.linspace(0, high, width), (height, 1))


@pytest.mark.parametrize("mode, shape", [("L", (32, 64)), ("1", (32, 64)), ("LA", (32, 64)), ("P", (32, 64, 3)),
                                         ("RGB", (32, 64, 3)), ("RGBA", (32, 64, 3)), ("CMYK", (32, 64, 3))])
def test_eight_bit_modes_become_gray_or_rgb(tmp_path, mode, shape):
    img = Image.fromarray(ramp().astype(np.uint8), "L").convert(mode)
    suffix = "tif" if mode == "CMYK" else "png"
    pixels = read_image(save(tmp_path, f"x.{suffix}", img))
    assert pixels.shape == shape and pixels.dtype == np.uint8


def test_rgba_drops_alpha_and_keeps_colour(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10  # red, nearly transparent
    pixels = read_image(save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    assert pixels[0, 0].tolist() == [200, 0, 0]


def test_sixteen_bit_uses_its_whole_range_without_clipping(tmp_path):
    """A 12-bit signal in a 16-bit PNG (values 1000..3000) fills 0..255; PIL's own 'L' conversion would
    clip it all to 255."""
    values = (1000 + ramp(high=2000)).astype(np.uint16)
    path = save(tmp_path, "x16.png", Image.fromarray(values))
    pixels = read_image(path)
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    np.testing.assert_array_equal(pixels[0], np.rint((values[0] - 1000.0) / 2000 * 255).astype(np.uint8))
    assert image_info(path)["bit_depth"] == 16


def test_float_and_32_bit_images_are_min_max_scaled(tmp_path):
    floats = Image.fromarray((ramp() / 255 * 3.0 - 1.0).astype(np.float32), "F")
    ints = Image.fromarray((ramp() * 1000).astype(np.int32), "I")
    for path in (save(tmp_path, "f.tif", floats), save(tmp_path, "i.tif", ints)):
        pixels = read_image(path)
        assert pixels.shape == (32, 64) and pixels.min() == 0 and pixels.max() == 255


def test_resize_is_antialiased_bilinear_to_a_square(tmp_path):
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    path = save(tmp_path, "c.png", Image.fromarray(checker))
    small = read_image(path, size=32)
    assert small.shape == (32, 32)
    assert np.abs(small.astype(int) - 128).max() <= 2  # averaged, not sampled
    colour = save(tmp_path, "r.png", Image.fromarray(np.zeros((30, 50, 3), np.uint8)))
    assert read_image(colour, size=24).shape == (24, 24, 3)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((20, 40), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = save(tmp_path, "phone.jpg", img, exif=exif.tobytes())
    assert read_image(path).shape == (40, 20)


def test_dicom_reads_through_read_image(shared):
    path = shared / "data/dicom/chest_cr_monochrome2.dcm"
    pixels = read_image(path, size=224)
    assert pixels.shape == (224, 224) and pixels.dtype == np.uint8
    assert image_info(path) == {"width": 1024, "height": 1024, "mode": "MONOCHROME2", "bit_depth": 8}


def test_monochrome1_encoding_gives_the_same_pixels(shared, tmp_path):
    ds = pydicom.dcmread(shared / "data/dicom/chest_cr_monochrome2.dcm")
    ds.decompress()
    ds.PixelData = (255 - ds.pixel_array).astype(np.uint8).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    a = read_image(tmp_path / "mono1.dcm", size=224)
    np.testing.assert_array_equal(a, read_image(shared / "data/dicom/chest_cr_monochrome2.dcm", size=224))


def test_twelve_bit_dicom_keeps_precision_until_quantised(shared):
    """Resizing happens on floats: the result equals rounding the float-resized image, once."""
    path = shared / "data/dicom/abdomen_ct_bigendian.dcm"
    from mobilemed.io.dicom import read_dicom

    exact = np.asarray(Image.fromarray(read_dicom(path, use_voi=False), "F").resize((128, 128), Image.BILINEAR))
    np.testing.assert_array_equal(read_image(path, size=128, use_voi=False), np.rint(exact * 255).astype(np.uint8))


def test_unreadable_files_are_named_with_the_skip_hint(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(good, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (tmp_path / "noise.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "fake.dcm").write_text("hello")
    for name in ("cut.jpg", "noise.png", "fake.dcm", "missing.png"):
        with pytest.raises(MobilemedError, match="--skip-bad") as err:
            read_image(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_is_image_file(tmp_path, shared):
    uid_named = tmp_path / "1.2.840.113619.2.55"
    uid_named.write_bytes((shared / "data/dicom/abdomen_ct_bigendian.dcm").read_bytes())
    (tmp_path / "README").write_text("no image")
    assert is_image_file("a/b.PNG") and is_image_file("x.jpeg") and is_image_file("x.dcm")
    assert is_image_file(uid_named)
    assert not is_image_file(tmp_path / "README") and not is_image_file("labels.csv")
