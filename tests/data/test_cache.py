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


def test_rgb_files_of_gray_pictures_are_stored_as_one_channel_and_a_colour_file_makes_the_set_rgb(tmp_path):
    """Kermany's JPEGs are RGB files with R == G == B: they cost a third of the bytes as one channel, and a
    1-channel model sees what it would from the same picture saved gray. One real colour image makes the
    whole set RGB, its gray images repeated into three channels."""
    from PIL import Image

    from mobilemed.data.cache import as_gray_if_equal

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (3, 24, 24), dtype=np.uint8)
    for split in ("train", "val", "test"):
        for label in ("normal", "pneumonia"):
            folder = tmp_path / "rgb_of_gray" / split / label
            folder.mkdir(parents=True)
            for i, g in enumerate(gray):  # PNG: lossless, so equal channels stay equal
                Image.fromarray(np.stack([g] * 3, -1), "RGB").save(folder / f"{i}.png")
    images, _ = decoded_images(load_table(str(tmp_path / "rgb_of_gray")), 24, progress=False)
    assert images.shape == (18, 24, 24)
    assert {g.tobytes() for g in np.asarray(images)} == {g.tobytes() for g in gray}
    colour = np.stack([gray[0], gray[1], gray[2]], -1)
    Image.fromarray(colour, "RGB").save(tmp_path / "rgb_of_gray" / "train" / "normal" / "colour.png")
    mixed, _ = decoded_images(load_table(str(tmp_path / "rgb_of_gray")), 24, progress=False)
    assert mixed.shape == (19, 24, 24, 3)
    rows = {m.tobytes() for m in np.asarray(mixed)}
    assert colour.tobytes() in rows and np.repeat(gray[0][..., None], 3, -1).tobytes() in rows
    assert as_gray_if_equal(colour) is colour


def test_take_splits_gathers_each_split_and_lets_the_mapped_cache_go(tmp_path):
    from mobilemed.data.cache import GATHER_ROWS, take_splits

    def resident_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    rng = np.random.default_rng(0)
    n = 4 * GATHER_ROWS + 7
    np.save(tmp_path / "cache.npy", rng.integers(0, 256, (n, 128, 128), dtype=np.uint8))  # 66 MB
    splits = rng.choice(np.array(["train", "val", "test"], dtype=object), n)
    mapped = np.load(tmp_path / "cache.npy", mmap_mode="r")
    before = resident_mb()
    parts = take_splits(mapped, splits)
    grew = resident_mb() - before
    full = np.load(tmp_path / "cache.npy")
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(parts[name], full[splits == name])
    # the copies (66 MB) are resident; the mapped pages they were read from are not (else ~132 MB)
    assert grew < 66 * 1.3
