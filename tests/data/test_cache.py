"""The decode cache: each image decoded once per (files, size, DICOM window choice)."""
import argparse

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from mobilemed.data.cache import decoded_images
from mobilemed.data.sources import DataOptions, load_table


def write_windowed_ct(path):
    """CT_small (12-bit, no window) with a narrow soft-tissue window added."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = 40, 400  # Hounsfield units, after the rescale
    ds.save_as(path)
    return path


def test_dicom_window_choice_reaches_the_pixels_and_the_cache_key(tmp_path, blob_folder):
    for i in range(3):
        write_windowed_ct(blob_folder / "train" / "normal" / f"ct_{i}.dcm")
    table = load_table(str(blob_folder))
    dicom = np.array([str(p).endswith(".dcm") for p in table.paths])
    windowed, _ = decoded_images(table, 32, progress=False)
    full_range, _ = decoded_images(table, 32, progress=False, use_voi=False)
    a, b = np.asarray(windowed)[dicom], np.asarray(full_range)[dicom]
    assert a.shape == b.shape == (3, 32, 32)
    # The soft-tissue window clips air and bone to black and white; the full 12-bit range clips almost nothing.
    clipped = lambda x: ((x == 0) | (x == 255)).mean()  # noqa: E731
    assert clipped(a) > 0.15 and clipped(b) < 0.02
    assert np.abs(a.astype(int) - b).mean() > 20
    np.testing.assert_array_equal(np.asarray(windowed)[~dicom], np.asarray(full_range)[~dicom])


def test_ignore_dicom_window_flag_is_stored_in_the_spec():
    from mobilemed.cli.common import data_options
    from mobilemed.cli.main import build_parser
    from mobilemed.cli.train import config_from_args
    from mobilemed.data.table import ImageTable
    from mobilemed.spec import ModelSpec
    from mobilemed.training.fit import make_spec

    parser, _ = build_parser(["train", "data", "--ignore-dicom-window"])
    args = parser.parse_args(["train", "data", "--ignore-dicom-window"])
    assert data_options(args).use_voi is False
    config = config_from_args(args)
    table = ImageTable(paths=np.array(["a.dcm", "b.dcm"], dtype=object), labels=np.array([0, 1]),
                       class_names=["a", "b"], task="binary", splits=np.array(["train", "val"], dtype=object),
                       source="data")
    spec = make_spec(config, table, in_chans=1, image_size=64)
    assert spec.dicom_voi is False and ModelSpec.from_dict(spec.to_dict()).dicom_voi is False
    assert DataOptions().use_voi is True


def test_skip_bad_skips_a_decompression_bomb_and_otherwise_names_it(tmp_path, blob_folder):
    import pytest

    from mobilemed.errors import MobilemedError
    from tests.io.test_limits import write_declared_png

    write_declared_png(blob_folder / "train" / "normal" / "bomb.png", 30_000, 30_000)
    table = load_table(str(blob_folder))
    with pytest.raises(MobilemedError, match="bomb.png declares 30000 x 30000 = 900,000,000 pixels"):
        decoded_images(table, 32, progress=False)
    images, keep = decoded_images(table, 32, progress=False, skip_bad=True)
    assert keep.sum() == len(table) - 1 and not keep[[p.endswith("bomb.png") for p in table.paths]].any()
    assert images.shape == (len(table) - 1, 32, 32)
