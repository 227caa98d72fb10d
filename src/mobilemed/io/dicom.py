"""DICOM pixels as a model sees them: float32 in [0, 1], air dark.

The pipeline is the DICOM display chain, one named step each, in the standard's order:

    stored values -> _mask_bits_stored -> _apply_rescale (Modality LUT) -> _apply_voi (VOI LUT or
    window) -> _invert_monochrome1 (MONOCHROME1 only) -> _scale_to_unit

Without a VOI (absent, or `use_voi=False`) the image's own min..max is mapped to [0, 1], so 12- and
16-bit data keep all their signal instead of being clipped to a guessed 8-bit window. Colour
(RGB / YBR) images are scaled by their bit depth and returned as (H, W, 3). Multi-frame images and
other Photometric Interpretations (PALETTE COLOR, ...) are refused with a message naming them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mobilemed.errors import MobilemedError
from mobilemed.io.limits import check_pixel_count

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# pydicom's decoders hand these over as RGB (YBR is converted on decoding).
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")


def is_dicom(path) -> bool:
    """True for a .dcm / .dicom file name, or a file with the 'DICM' marker after its 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path, *, use_voi: bool = True) -> np.ndarray:
    """Read one DICOM image.

    use_voi: apply the file's VOI LUT or Window Center/Width (the first one when several are given);
        False maps the full rescaled value range instead.
    Returns: (H, W) float32 in [0, 1] for MONOCHROME1/2 (MONOCHROME1 inverted so air is dark), or
        (H, W, 3) float32 in [0, 1] for RGB / YBR colour.
    Raises: MobilemedError naming the file for non-DICOM, truncated, multi-frame, unsupported files, or
        Rows x Columns above the pixel limit (io.limits; checked before the pixels are decoded).
    """
    ds = _read_dataset(path)
    try:
        return _display_pixels(ds, path, use_voi)
    except HEADER_ERRORS as err:
        raise MobilemedError(f"DICOM file {path} has a corrupt header ({type(err).__name__}: {err}); "
                             "re-export it") from None


# pydicom parses element values lazily: a corrupt value (an unknown VR, text in a number) raises one of
# these only when it is read, anywhere in the chain below.
HEADER_ERRORS = (ValueError, TypeError, NotImplementedError, KeyError, AttributeError, OverflowError, IndexError)


def _display_pixels(ds, path, use_voi: bool) -> np.ndarray:
    photometric = _check_supported(ds, path)
    check_pixel_count(path, _header_int(ds, "Columns", path, minimum=1), _header_int(ds, "Rows", path, minimum=1))
    pixels = _decode_pixels(ds, path)
    if photometric in COLOUR:
        return _scale_colour(pixels, int(ds.BitsStored))
    pixels = _mask_bits_stored(pixels, int(ds.BitsStored), signed=int(ds.PixelRepresentation) == 1)
    values = _apply_rescale(pixels, ds)
    value_range = None
    if use_voi and _has_voi(ds):
        try:
            values, value_range = _apply_voi(values, ds)
        except (ValueError, NotImplementedError) as err:  # e.g. a zero window width, a 9-bit LUT
            raise MobilemedError(f"DICOM file {path} has a VOI LUT / window that cannot be applied ({err}); "
                                 "read it with use_voi=False") from None
    if photometric == "MONOCHROME1":
        values = _invert_monochrome1(values, value_range)
    return _scale_to_unit(values, value_range).astype(np.float32)


def dicom_info(path) -> dict:
    """Header facts without decoding pixels: width, height, mode (Photometric Interpretation), bit_depth, frames."""
    ds = _read_dataset(path, stop_before_pixels=True)
    try:
        return {"width": int(ds.get("Columns", 0) or 0), "height": int(ds.get("Rows", 0) or 0),
                "mode": str(ds.get("PhotometricInterpretation", "")), "bit_depth": int(ds.get("BitsStored", 0) or 0),
                "frames": int(ds.get("NumberOfFrames", 1) or 1)}
    except HEADER_ERRORS as err:
        raise MobilemedError(f"DICOM file {path} has a corrupt header ({type(err).__name__}: {err}); "
                             "re-export it") from None


def dicom_modality(path) -> tuple[str, str]:
    """(Modality, BodyPartExamined) from the header, upper-case, "" where absent (the OOD check's cheap test)."""
    ds = _read_dataset(path, stop_before_pixels=True)
    return tuple(str(ds.get(tag, "") or "").strip().upper() for tag in ("Modality", "BodyPartExamined"))


def dicom_uids(path) -> tuple[str, str]:
    """(SOPInstanceUID, StudyInstanceUID) from the header, "" where absent: what ties a prediction back to PACS."""
    ds = _read_dataset(path, stop_before_pixels=True)
    return tuple(str(ds.get(tag, "") or "").strip() for tag in ("SOPInstanceUID", "StudyInstanceUID"))


def _read_dataset(path, *, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise MobilemedError(f"DICOM file {path} does not exist") from None
    except InvalidDicomError:
        raise MobilemedError(f"{path} is not a DICOM file (no 'DICM' marker); convert it or remove it") from None
    except Exception as err:  # pydicom raises many types (EOFError, struct.error, ...) on a cut-off header
        raise MobilemedError(f"cannot read DICOM file {path}: it looks truncated or corrupt ({err})") from None


def _check_supported(ds, path) -> str:
    """The Photometric Interpretation, once the image is known to be one this module can read."""
    if "PixelData" not in ds:
        _refuse_missing_pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in MONOCHROME + COLOUR:
        raise MobilemedError(f"DICOM file {path} has PhotometricInterpretation {photometric or 'missing'}; "
                             f"mobilemed reads {', '.join(MONOCHROME + COLOUR)}")
    samples = _header_int(ds, "SamplesPerPixel", path) if "SamplesPerPixel" in ds else 1
    if samples != (1 if photometric in MONOCHROME else 3):
        raise MobilemedError(f"DICOM file {path} has SamplesPerPixel {samples}, which does not fit its "
                             f"PhotometricInterpretation {photometric}; the header is corrupt")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise MobilemedError(f"DICOM file {path} has {frames} frames; mobilemed reads single-frame images, "
                             "so save the frame you want as its own file")
    return photometric


def _refuse_missing_pixels(ds, path) -> None:
    """No Pixel Data: a header that describes an image (Rows, Columns) means the file was cut short."""
    size = Path(path).stat().st_size
    if "Rows" in ds or "Columns" in ds:
        raise MobilemedError(f"DICOM file {path} describes a {ds.get('Columns', '?')} x {ds.get('Rows', '?')} image "
                             f"but ends ({size:,} bytes) before its Pixel Data: the file is truncated; copy or "
                             "export it again")
    raise MobilemedError(f"DICOM file {path} holds no image (Modality {ds.get('Modality', '?')}, no Pixel Data, "
                         f"{size:,} bytes; if it should be an image, it is truncated)")


def _header_int(ds, keyword: str, path, *, minimum: int = 0) -> int:
    """A required integer attribute of the image pixel module (Rows, Columns, BitsStored, ...), >= minimum."""
    try:
        value = int(ds[keyword].value)
    except (KeyError, TypeError, ValueError) as err:
        raise MobilemedError(f"DICOM file {path} has no valid {keyword} ({err}); it is corrupt") from None
    if value < minimum:
        raise MobilemedError(f"DICOM file {path} has {keyword} = {value}; it is corrupt")
    return value


def _check_pixel_length(ds, path) -> None:
    """Native (uncompressed) Pixel Data shorter than Rows x Columns x samples x bytes: a cut-off file."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        if syntax is None or syntax.is_compressed:
            return
    except ValueError:  # not a transfer syntax UID at all: the decoder refuses the file
        return
    from pydicom.pixels.utils import get_expected_length

    for keyword in ("Rows", "Columns", "BitsAllocated"):
        _header_int(ds, keyword, path)
    try:
        expected = get_expected_length(ds, unit="bytes")  # knows YBR_FULL_422's subsampling
    except (AttributeError, TypeError, ValueError, KeyError):
        return  # a header pydicom cannot size: its decoder names the problem
    have = len(ds.PixelData or b"")
    if have < expected:
        raise MobilemedError(f"DICOM file {path} is truncated: its Pixel Data holds {have:,} of the {expected:,} "
                             "bytes its header describes; copy or export it again")


def _decode_pixels(ds, path) -> np.ndarray:
    """Stored pixel values, (H, W) or (H, W, 3) for colour (YBR already converted to RGB)."""
    _check_pixel_length(ds, path)
    try:
        pixels = ds.pixel_array
    except Exception as err:  # decoders raise anything from ValueError to RuntimeError
        raise MobilemedError(f"cannot decode the pixels of DICOM file {path} ({_syntax_name(ds)}): {err}") from None
    except BaseException as err:
        # Rust decoders (pylibjpeg-rle via pyo3) panic on corrupt data with a BaseException subclass.
        if type(err).__name__ != "PanicException":
            raise
        raise MobilemedError(f"cannot decode the pixels of DICOM file {path} ({_syntax_name(ds)}): the decoder "
                             f"failed on corrupt data ({err})") from None
    expected = (int(ds.Rows), int(ds.Columns)) + ((3,) if int(ds.get("SamplesPerPixel", 1)) == 3 else ())
    if pixels.shape != expected:  # e.g. pixel data long enough for more frames than the header says
        raise MobilemedError(f"DICOM file {path} decodes to shape {pixels.shape}, not the {expected} its header "
                             "describes; the header is corrupt")
    return pixels


def _syntax_name(ds) -> str:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return getattr(syntax, "name", syntax) or "unknown transfer syntax"


def _mask_bits_stored(pixels: np.ndarray, bits_stored: int, *, signed: bool) -> np.ndarray:
    """Keep only the BitsStored low bits of each value and sign-extend them when signed.

    Unused high bits may hold overlays or garbage. pydicom already does this on decoding; doing it
    explicitly here keeps it true for every decoder (and idempotent on pydicom's output).
    """
    if not np.issubdtype(pixels.dtype, np.integer) or bits_stored >= 8 * pixels.dtype.itemsize:
        return pixels
    values = pixels.astype(np.int64) & ((1 << bits_stored) - 1)
    if signed:
        sign_bit = 1 << (bits_stored - 1)
        values = np.where(values >= sign_bit, values - (1 << bits_stored), values)
    return values


def _apply_rescale(pixels: np.ndarray, ds) -> np.ndarray:
    """Modality LUT: stored values -> physical units (e.g. CT Hounsfield units = value * slope + intercept)."""
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(pixels, ds).astype(np.float64)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float64) * slope + intercept


def _has_voi(ds) -> bool:
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    return bool(ds.get("VOILUTSequence")) or has_window


def _apply_voi(values: np.ndarray, ds) -> tuple[np.ndarray, tuple[float, float]]:
    """VOI LUT sequence (preferred) or Window Center/Width, as pydicom implements the standard.

    Returns the values and their output range (low, high): the range of the LUT's entries, or the
    window's output range, so that _scale_to_unit maps the window (not the image) onto [0, 1].
    """
    from pydicom.pixels import apply_voi, apply_windowing

    if ds.get("VOILUTSequence"):
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        entries = np.arange(descriptor[1], descriptor[1] + (descriptor[0] or 2**16))
        lut = apply_voi(entries, ds)  # every entry the LUT holds
        mapped = apply_voi(np.rint(values).astype(np.int64), ds)
        return mapped.astype(np.float64), (float(lut.min()), float(lut.max()))
    with np.errstate(over="ignore"):  # the SIGMOID function overflows to its limits at +-inf
        low, high = apply_windowing(np.array([-np.inf, np.inf]), ds)  # the window's own output range
    return apply_windowing(values, ds), (float(low), float(high))


def _scale_to_unit(values: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map value_range (default: the image's own min..max) linearly onto [0, 1].

    The default keeps every value: nothing of a 12- or 16-bit signal is clipped away. A constant
    image becomes all zeros.
    """
    low, high = value_range if value_range is not None else (float(values.min()), float(values.max()))
    if high < low:  # a negative slope turns the range around
        low, high = high, low
    if high == low:
        return np.zeros(values.shape, np.float64)
    return np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _invert_monochrome1(values: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """MONOCHROME1 shows its lowest value as white: mirror the values within their range (default: the
    image's min..max) so that air is dark, as in MONOCHROME2.

    Mirroring before scaling (low + high - v) is exact for integer values, so an image stored either
    way reads bit-identically.
    """
    low, high = value_range if value_range is not None else (float(values.min()), float(values.max()))
    return (low + high) - values.astype(np.float64)


def _scale_colour(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """(H, W, 3) RGB stored values -> float32 in [0, 1] by the bit depth (colour keeps its absolute scale)."""
    return (pixels.astype(np.float64) / float((1 << bits_stored) - 1)).astype(np.float32)
