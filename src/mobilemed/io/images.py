"""Read any supported image file (PNG, JPEG, TIFF, BMP, ..., DICOM) as uint8 pixels.

Grayscale sources (L, 1-bit, 16-bit, 32-bit, float, DICOM MONOCHROME) give (H, W); colour sources give
(H, W, 3) RGB. High-bit-depth pixels stay float until the very end: min-max scaled to [0, 1] (the
DICOM chain for DICOM), resized in float, and only then rounded to uint8.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilemed.errors import MobilemedError
from mobilemed.io.dicom import dicom_info, is_dicom, read_dicom
from mobilemed.io.limits import check_pixel_count

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm",
                              ".ppm", ".pbm", ".dcm", ".dicom"})
GRAY_MODES = ("L", "1", "LA", "La")
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
BIT_DEPTHS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
SKIP_HINT = "fix or remove it, or pass --skip-bad to skip unreadable images"


def is_image_file(path) -> bool:
    """A known image suffix, or a suffix-less / UID-named file (e.g. 1.2.840.1.3) with the DICOM marker."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    if suffix == "" or suffix[1:].isdigit():
        return is_dicom(path)
    return False


def read_image(path, *, size: int | None = None, use_voi: bool = True) -> np.ndarray:
    """Pixels of one image file.

    size: resize to size x size (antialiased bilinear; the aspect ratio is not kept).
    use_voi: for DICOM, apply its VOI LUT / window (see io.dicom.read_dicom).
    Returns: uint8 (H, W) for grayscale sources, (H, W, 3) for colour ones.
    Raises: MobilemedError naming the file when it is missing, unreadable, larger than the pixel limit
        (io.limits) or refused.
    """
    path = Path(path)
    if not path.is_file():
        raise MobilemedError(f"image {path} does not exist; check the path, or pass --skip-bad to skip it")
    pixels = _read_dicom_file(path, use_voi) if is_dicom(path) else _read_pil(path)
    if size is not None:
        pixels = _resize(pixels, size)
    return _to_uint8(pixels)


def image_info(path) -> dict:
    """Cheap header facts for the audit: width, height, mode and bit_depth (pixels are not decoded)."""
    path = Path(path)
    if is_dicom(path):
        info = dicom_info(path)
        return {key: info[key] for key in ("width", "height", "mode", "bit_depth")}
    with _open_pil(path) as img:
        return {"width": img.width, "height": img.height, "mode": img.mode, "bit_depth": bit_depth_of(img.mode)}


def bit_depth_of(mode: str) -> int:
    """Bits per channel of a PIL mode: 1 for '1', 16 for 'I;16*', 32 for 'I' / 'F', else 8."""
    return BIT_DEPTHS.get(mode, 8)


def pixels_from_pil(img) -> np.ndarray:
    """A loaded PIL image -> uint8 (H, W) / (H, W, 3), or float32 in [0, 1] for 16-bit, 32-bit and float modes."""
    if img.mode in HIGH_DEPTH_MODES:
        return _min_max(np.asarray(img, dtype=np.float64))
    if img.mode in GRAY_MODES:
        return np.asarray(img.convert("L"))
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def _read_dicom_file(path: Path, use_voi: bool) -> np.ndarray:
    try:
        return read_dicom(path, use_voi=use_voi)
    except MobilemedError as err:
        raise MobilemedError(f"{err}; or pass --skip-bad to skip unreadable images") from None


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with _open_pil(path) as img:
        try:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # phone photos store their rotation in EXIF
            return pixels_from_pil(img)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            raise MobilemedError(f"cannot read image {path} ({err}); {SKIP_HINT}") from None


def _open_pil(path: Path):
    """The opened (not yet decoded) image, once its declared size is within the pixel limit."""
    from PIL import Image, UnidentifiedImageError

    # mobilemed checks every header against its own, configurable limit (io.limits) before decoding, so
    # PIL's fixed one (a warning at 89 MP, an uncaught DecompressionBombError at 179 MP) is switched off.
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise MobilemedError(f"image {path} does not exist; check the path, or pass --skip-bad to skip it") from None
    except UnidentifiedImageError:
        raise MobilemedError(f"{path} is not an image file PIL can read; {SKIP_HINT}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise MobilemedError(f"cannot open image {path} ({err}); {SKIP_HINT}") from None
    try:
        check_pixel_count(path, img.width, img.height)
    except MobilemedError:
        img.close()
        raise
    return img


def _min_max(values: np.ndarray) -> np.ndarray:
    """Map the image's own min..max onto [0, 1] (constant images become 0): no signal is clipped."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize to size x size; uint8 stays uint8, float is resized per channel in float."""
    from PIL import Image

    if pixels.shape[:2] == (size, size):
        return pixels
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR))
    channels = pixels[..., None] if pixels.ndim == 2 else pixels
    resized = [np.asarray(Image.fromarray(np.ascontiguousarray(channels[..., c], np.float32), "F")
                          .resize((size, size), Image.BILINEAR)) for c in range(channels.shape[-1])]
    return np.stack(resized, axis=-1) if pixels.ndim == 3 else resized[0]


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
