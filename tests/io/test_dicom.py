"""Each DICOM pixel step against real files: ../shared/data/dicom and pydicom's bundled test files."""
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mobilemed.errors import MobilemedError
from mobilemed.io.dicom import (_apply_rescale, _apply_voi, _invert_monochrome1, _mask_bits_stored,
                                _scale_to_unit, dicom_info, is_dicom, read_dicom)


def pydicom_file(name: str) -> str:
    """A file bundled with pydicom; never downloaded (tests stay off the network)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return path


@pytest.fixture(scope="module")
def dicom_dir(shared):
    return shared / "data" / "dicom"


def write_copy(ds, path, **changes):
    """Save an uncompressed copy of ds with attributes changed (pixel values via PixelArray=...)."""
    ds = ds.copy()
    pixels = changes.pop("PixelArray", None)
    if pixels is not None:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()  # -> explicit VR little endian
        order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder(order)).tobytes()
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


# --- is_dicom ---------------------------------------------------------------------------------------------

def test_is_dicom_by_suffix_or_marker(tmp_path):
    no_suffix = tmp_path / "IM0001"
    no_suffix.write_bytes(open(pydicom_file("CT_small.dcm"), "rb").read())
    text = tmp_path / "notes.txt"
    text.write_text("not an image " * 20)
    assert is_dicom(pydicom_file("CT_small.dcm")) and is_dicom(no_suffix) and is_dicom(tmp_path / "x.DCM")
    assert not is_dicom(text) and not is_dicom(tmp_path / "missing")


# --- bits stored ------------------------------------------------------------------------------------------

def test_mask_bits_stored_drops_high_bits_and_sign_extends():
    stored = np.array([0xF000 | 0x0ABC, 0x0FFF, 0x0800, 0x07FF], dtype=np.uint16)
    assert _mask_bits_stored(stored, 12, signed=False).tolist() == [0x0ABC, 0x0FFF, 0x0800, 0x07FF]
    assert _mask_bits_stored(stored, 12, signed=True).tolist() == [0x0ABC - 4096, -1, -2048, 2047]


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "CT_small.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_mask_bits_stored_is_idempotent_on_decoded_files(name):
    ds = pydicom.dcmread(pydicom_file(name))
    pixels = ds.pixel_array
    masked = _mask_bits_stored(pixels, ds.BitsStored, signed=ds.PixelRepresentation == 1)
    np.testing.assert_array_equal(masked, pixels)


def test_garbage_above_bits_stored_does_not_change_the_image(dicom_dir, tmp_path):
    """The 12-bit CT with its 4 unused high bits set (as overlays once were) reads the same."""
    ds = pydicom.dcmread(dicom_dir / "abdomen_ct_bigendian.dcm")
    dirty = ds.pixel_array.astype(np.uint16) | np.uint16(0xF000)
    path = write_copy(ds, tmp_path / "dirty.dcm", PixelArray=dirty)
    np.testing.assert_array_equal(read_dicom(path), read_dicom(dicom_dir / "abdomen_ct_bigendian.dcm"))


# --- rescale ----------------------------------------------------------------------------------------------

def test_apply_rescale_gives_hounsfield_units(dicom_dir):
    ds = pydicom.dcmread(dicom_dir / "abdomen_ct_bigendian.dcm")  # 12-bit, slope 1, intercept -1024
    hu = _apply_rescale(ds.pixel_array, ds)
    np.testing.assert_array_equal(hu, ds.pixel_array.astype(np.float64) - 1024)
    assert hu[:20, :20].mean() == pytest.approx(-1017, abs=10)  # air outside the patient
    assert np.median(hu) == pytest.approx(-983, abs=5)


def test_apply_rescale_uses_slope_and_leaves_plain_images_alone():
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.RescaleSlope, ds.RescaleIntercept = 2.5, -100
    np.testing.assert_allclose(_apply_rescale(ds.pixel_array, ds), ds.pixel_array * 2.5 - 100)
    mr = pydicom.dcmread(pydicom_file("MR_small.dcm"))  # no rescale tags
    np.testing.assert_array_equal(_apply_rescale(mr.pixel_array, mr), mr.pixel_array)


# --- VOI --------------------------------------------------------------------------------------------------

def test_window_center_width_maps_the_window_onto_unit(dicom_dir):
    path = dicom_dir / "abdomen_ct_bigendian.dcm"  # window 60 / 400: soft tissue
    ds = pydicom.dcmread(path)
    hu = _apply_rescale(ds.pixel_array, ds)
    unit = read_dicom(path)
    expected = np.clip((hu - 59.5) / 399 + 0.5, 0, 1)  # the standard's LINEAR window
    np.testing.assert_allclose(unit, expected, atol=1e-6)
    assert (unit[hu <= -140] == 0).all() and (unit[hu > 260] == 1).all()
    _, value_range = _apply_voi(hu, ds)
    assert value_range == (-1024.0, 3071.0)  # the 12-bit range after rescale


def test_voi_lut_sequence_is_applied_and_preferred(tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    item = pydicom.Dataset()
    item.add_new(0x00283002, "SS", [2048, -1024, 16])  # LUT Descriptor: HU -1024..1023 -> 16-bit entries
    item.add_new(0x00283006, "US", list(range(0, 4096, 2)))  # LUT Data
    ds.VOILUTSequence = pydicom.Sequence([item])
    ds.WindowCenter, ds.WindowWidth = 0, 10  # a window that would look very different
    path = write_copy(ds, tmp_path / "lut.dcm")
    hu = _apply_rescale(ds.pixel_array, ds)
    expected = np.clip((hu + 1024) * 2, 0, 4094) / 4094
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_use_voi_false_keeps_the_whole_value_range(dicom_dir):
    path = dicom_dir / "abdomen_ct_bigendian.dcm"
    ds = pydicom.dcmread(path)
    hu = _apply_rescale(ds.pixel_array, ds)
    unit = read_dicom(path, use_voi=False)
    np.testing.assert_allclose(unit, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)
    assert not np.allclose(unit, read_dicom(path))


# --- scale to unit ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "693_J2KI.dcm"])
def test_scale_to_unit_clips_no_signal_of_16_bit_images(name):
    ds = pydicom.dcmread(pydicom_file(name))
    values = _apply_rescale(ds.pixel_array, ds)
    unit = _scale_to_unit(values)
    assert unit.min() == 0 and unit.max() == 1
    assert (unit == 1).sum() == (values == values.max()).sum()  # only the brightest value saturates
    assert len(np.unique(unit)) == len(np.unique(values))  # every grey level survives


def test_scale_to_unit_range_and_constant_image():
    values = np.array([[-100.0, 0.0], [100.0, 300.0]])
    np.testing.assert_allclose(_scale_to_unit(values, (-100, 100)), [[0, 0.5], [1, 1]])
    np.testing.assert_allclose(_scale_to_unit(values, (100, -100)), [[0, 0.5], [1, 1]])  # negative slope
    assert (_scale_to_unit(np.full((3, 3), 7.0)) == 0).all()


# --- MONOCHROME1 ------------------------------------------------------------------------------------------

def test_invert_monochrome1_mirrors_within_the_range():
    np.testing.assert_array_equal(_invert_monochrome1(np.array([0, 64, 255]), (0, 255)), [255, 191, 0])
    np.testing.assert_array_equal(_invert_monochrome1(np.array([10.0, 30.0, 50.0])), [50, 30, 10])  # own min..max


def test_monochrome1_copy_of_the_chest_is_inverted(dicom_dir):
    """The shared MONOCHROME1 file holds the MONOCHROME2 file's exact pixels re-tagged: read correctly,
    it is the negative of the MONOCHROME2 image."""
    mono1 = read_dicom(dicom_dir / "chest_cr_monochrome1.dcm")
    mono2 = read_dicom(dicom_dir / "chest_cr_monochrome2.dcm")
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono2[:50, :50].mean() < 0.1  # air is dark


def test_true_monochrome1_encoding_reads_like_monochrome2(dicom_dir, tmp_path):
    """The same chest stored the MONOCHROME1 way (values inverted, tag MONOCHROME1) reads bit-identically."""
    ds = pydicom.dcmread(dicom_dir / "chest_cr_monochrome2.dcm")
    inverted = (255 - ds.pixel_array).astype(np.uint8)
    path = write_copy(ds, tmp_path / "mono1.dcm", PixelArray=inverted, PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_array_equal(read_dicom(path), read_dicom(dicom_dir / "chest_cr_monochrome2.dcm"))


# --- transfer syntaxes and colour -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_lossless_transfer_syntaxes_decode_to_the_same_image(name):
    np.testing.assert_allclose(read_dicom(pydicom_file(name)), read_dicom(pydicom_file("MR_small.dcm")), atol=1e-6)


def test_jpeg_baseline_and_extended_decode(dicom_dir):
    chest = read_dicom(dicom_dir / "chest_cr_monochrome2.dcm")  # JPEG baseline, 8-bit
    extended = read_dicom(pydicom_file("JPGExtended.dcm"))  # JPEG extended, 12-bit
    assert chest.shape == (1024, 1024) and chest.dtype == np.float32
    assert extended.shape == (1024, 256) and extended.min() == 0 and extended.max() == 1


@pytest.mark.parametrize("name", ["SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_colour_is_rgb_in_unit_range(name):
    rgb = read_dicom(pydicom_file(name))
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[5, 50], [1, 0, 0], atol=0.01)  # the red band
    np.testing.assert_allclose(rgb[95, 50], [1, 1, 1], atol=0.01)  # the white band


def test_dicom_info_reads_the_header_only(dicom_dir):
    assert dicom_info(dicom_dir / "abdomen_ct_bigendian.dcm") == {
        "width": 512, "height": 512, "mode": "MONOCHROME2", "bit_depth": 12, "frames": 1}


# --- refusals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [("SC_rgb_rle_2frame.dcm", "has 2 frames"),
                                            ("examples_ybr_color.dcm", "has 30 frames"),
                                            ("examples_palette.dcm", "PhotometricInterpretation PALETTE COLOR"),
                                            ("rtplan.dcm", "holds no image"),
                                            ("MR_truncated.dcm", "is truncated: its Pixel Data holds"),
                                            ("JPEG-lossy.dcm", "JPEG Extended")])
def test_refusals_name_the_file_and_the_reason(name, expected):
    with pytest.raises(MobilemedError, match=expected) as err:
        read_dicom(pydicom_file(name))
    assert name in str(err.value)


@pytest.mark.parametrize("keep", [100, 400, 5000])  # inside the preamble, inside the header, inside the pixels
def test_truncated_file_is_refused_by_name(tmp_path, keep):
    path = tmp_path / f"cut_{keep}.dcm"
    path.write_bytes(open(pydicom_file("MR_small.dcm"), "rb").read()[:keep])
    reason = "not a DICOM file" if keep < 132 else "truncated"  # cut inside the preamble: no DICM marker
    with pytest.raises(MobilemedError, match=f"cut_{keep}.dcm.*{reason}"):
        read_dicom(path)


def test_text_file_named_dcm_and_missing_file(tmp_path):
    fake = tmp_path / "report.dcm"
    fake.write_text("Patient: anonymous\nFindings: none\n" * 10)
    with pytest.raises(MobilemedError, match="report.dcm is not a DICOM file"):
        read_dicom(fake)
    with pytest.raises(MobilemedError, match="missing.dcm does not exist"):
        read_dicom(tmp_path / "missing.dcm")


def test_unusable_window_is_refused_with_the_way_out(tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    path = write_copy(ds, tmp_path / "zero_window.dcm", WindowCenter=40, WindowWidth=0)
    with pytest.raises(MobilemedError, match="zero_window.dcm.*use_voi=False"):
        read_dicom(path)
    assert read_dicom(path, use_voi=False).max() == 1


def test_prediction_is_the_same_for_either_monochrome_encoding(dicom_dir, tmp_path, imagenet_cache):
    """Done-criterion of the DICOM issue, end to end through Predictor.predict_files.

    The model has ImageNet features (a random network is nearly constant and would pass anything): the
    MONOCHROME1 encoding of the chest (values inverted, tag MONOCHROME1) predicts like the MONOCHROME2 file
    to 1e-4, while the shared re-tagged file, whose pixels are NOT inverted and so really are the negative
    image, predicts clearly differently, which shows the model sees the inversion at all."""
    import torch

    from mobilemed.assets import load_imagenet_state
    from mobilemed.inference import Predictor
    from mobilemed.models import build_model
    from mobilemed.spec import GRAY_MEAN, GRAY_STD, ModelSpec

    ds = pydicom.dcmread(dicom_dir / "chest_cr_monochrome2.dcm")
    mono1 = write_copy(ds, tmp_path / "mono1.dcm", PixelArray=(255 - ds.pixel_array).astype(np.uint8),
                       PhotometricInterpretation="MONOCHROME1")
    torch.manual_seed(0)
    spec = ModelSpec(arch="mobilenet_v2", class_names=["normal", "abnormal"], task="binary",
                     image_size=224, in_chans=1, mean=GRAY_MEAN, std=GRAY_STD)
    model = build_model(spec, load_imagenet_state("mobilenet_v2", download=False))
    files = [dicom_dir / "chest_cr_monochrome2.dcm", mono1, dicom_dir / "chest_cr_monochrome1.dcm"]
    result = Predictor(model, spec).predict_files(files)
    p_mono2, p_mono1, p_retagged = result.probabilities.ravel()
    assert abs(p_mono2 - p_mono1) < 1e-4
    assert abs(result.logits[0] - result.logits[1]).max() < 1e-4
    assert abs(result.logits[0] - result.logits[2]).max() > 0.05 and abs(p_mono2 - p_retagged) > 1e-3
