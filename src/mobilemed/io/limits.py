"""The largest image mobilemed decodes, checked from the header before any pixel is decoded.

A file whose header declares a huge size (a "decompression bomb": a few KB that inflate to GBs) would
exhaust memory. The default, 12,000 x 12,000 = 144 megapixels, is well above real radiographs (a
4,000 x 5,000 mammogram is 20 MP; a large digital radiograph 3,000 x 3,000). MOBILEMED_MAX_PIXELS
(set by the CLI's --max-image-pixels) raises or lowers it.
"""
from __future__ import annotations

import os

from mobilemed.errors import MobilemedError

DEFAULT_MAX_PIXELS = 12_000 * 12_000
ENV_VAR = "MOBILEMED_MAX_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit: MOBILEMED_MAX_PIXELS when set (a positive integer), else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(ENV_VAR, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise MobilemedError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a positive whole number of pixels; "
                             f"unset it for the default {DEFAULT_MAX_PIXELS:,}")
    return int(raw)


def check_pixel_count(path, width: int, height: int, frames: int = 1) -> None:
    """Refuse an image whose declared width x height (x frames) exceeds the limit, naming all three numbers."""
    limit = max_image_pixels()
    pixels = int(width) * int(height) * max(int(frames), 1)
    if pixels > limit:
        raise MobilemedError(f"image {path} declares {width} x {height}"
                             f"{f' x {frames} frames' if frames > 1 else ''} = {pixels:,} pixels, more than the "
                             f"limit of {limit:,}; if the image is genuine, raise the limit with --max-image-pixels "
                             f"or {ENV_VAR}, else remove it or pass --skip-bad to skip it")
