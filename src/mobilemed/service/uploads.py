"""Uploads are untrusted: a size limit, the content sniffed (never the file name), decoding through the same
guarded readers as the CLI, and nothing kept after the request."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mobilemed.errors import MobilemedError

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# Magic numbers of the formats a reading room sends: what the bytes are, whatever the name says.
SIGNATURES = {"png": (0, b"\x89PNG\r\n\x1a\n"), "jpeg": (0, b"\xff\xd8\xff"), "dicom": (128, b"DICM")}
SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


class UploadError(Exception):
    """A refused upload: the HTTP status and a message that says what was wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def sniff(content: bytes) -> str:
    """'png', 'jpeg' or 'dicom' from the bytes themselves; UploadError 415 for anything else."""
    for kind, (offset, magic) in SIGNATURES.items():
        if content[offset:offset + len(magic)] == magic:
            return kind
    raise UploadError(415, "unsupported file: the content is not PNG, JPEG or DICOM (Part 10, with the DICM "
                           "preamble), whatever its name says")


def check_size(size: int, limit: int) -> None:
    if size == 0:
        raise UploadError(400, "the upload is empty")
    if size > limit:
        raise UploadError(413, f"the upload is {size / 1e6:.1f} MB; this service takes at most {limit / 1e6:.0f} MB")


def decode_upload(content: bytes, read_image) -> tuple[np.ndarray, str]:
    """(pixels as the model reads them, kind). read_image(path) is the model's own reader (its size and
    DICOM window); the bytes live in a private temp folder only while they are decoded."""
    kind = sniff(content)
    with tempfile.TemporaryDirectory(prefix="mobilemed-upload-") as tmp:
        path = Path(tmp) / f"upload{SUFFIX[kind]}"
        path.write_bytes(content)
        try:
            pixels = read_image(path)
        except MobilemedError as err:
            # The reader names the temp path; the user only knows their upload.
            raise UploadError(422, str(err).replace(str(path), "the uploaded file")) from None
        except Exception as err:  # noqa: BLE001 - a decoder's own crash on hostile bytes is a bad upload too
            raise UploadError(422, f"the uploaded {kind.upper()} could not be decoded ({type(err).__name__})") from None
    return pixels, kind
