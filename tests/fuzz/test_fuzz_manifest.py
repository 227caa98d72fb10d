"""Fuzz the CSV manifest reader (data.manifest through data.sources.load_table): random bytes, random CSV
text built from hostile cells, and mutations of a valid manifest, under random reading options. Every
input gives a complete ImageTable or a MobilemedError; nothing else escapes."""
import csv
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from mobilemed.data.sources import DataOptions, load_table
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError
from tests.fuzz.strategies import fuzz_settings, mutated_bytes, note_outcome, truncations

IMAGES = [f"img_{i}.png" for i in range(8)]
COLUMNS = ["path", "label", "split", "group", "findings", "mass", "effusion", "Image Index", "Finding Labels",
           "Patient ID", "", "path", "x,y", "ünïcode"]
CELLS = st.one_of(
    st.sampled_from(IMAGES), st.sampled_from(["a", "b", "c", "0", "1", "Mass|Effusion", "No Finding", "Mass|"]),
    st.sampled_from(["train", "val", "test", "TEST", "holdout", ""]),
    st.sampled_from(["NaN", "nan", "NA", "N/A", "None", "null", "-", " ", '"', "\n", "\x00"]),
    st.sampled_from(["../outside.png", "/etc/passwd", "~/x.png", "sub/../img_0.png", "img_0.png ", "."]),
    st.text(max_size=12))
OPTIONS = st.builds(
    DataOptions, image_column=st.sampled_from([None, "path", "Image Index", "nope"]),
    label_column=st.sampled_from([None, "label", "findings", "split"]),
    label_columns=st.sampled_from([None, ["mass", "effusion"], ["mass"], ["nope"]]),
    label_sep=st.sampled_from([None, "|", ","]), group_column=st.sampled_from([None, "group", "Patient ID"]),
    split_column=st.sampled_from([None, "split"]), val_fraction=st.sampled_from([0.0, 0.1, 0.5]),
    test_fraction=st.sampled_from([0.0, 0.2, 0.4]), resplit=st.booleans(), allow_outside_root=st.booleans())


def valid_manifests() -> list[bytes]:
    """Manifests that read: single label with splits and groups, multi-hot columns, joined findings."""
    rows = [(name, "ab"[i % 2], ("train", "train", "val", "test")[i % 4], f"p{i // 2}", int(i % 3 == 0), int(i % 2))
            for i, name in enumerate(IMAGES)]
    single = "path,label,split,group\n" + "".join(f"{n},{lab},{s},{g}\n" for n, lab, s, g, _, _ in rows)
    multi = "path,mass,effusion\n" + "".join(f"{n},{m},{e}\n" for n, _, _, _, m, e in rows)
    joined = "path,findings\n" + "".join(f"{n},{'Mass|Effusion' if m else 'Mass'}\n" for n, _, _, _, m, _ in rows)
    return [text.encode() for text in (single, multi, joined)]


SEEDS = valid_manifests()


@st.composite
def csv_texts(draw) -> bytes:
    columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CELLS, min_size=len(columns), max_size=len(columns)), max_size=12))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_manifest")
    for i, name in enumerate(IMAGES):
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(folder / name)
    return folder


def check(root, data: bytes, options: DataOptions):
    path = root / "manifest.csv"
    path.write_bytes(data)
    try:
        table = load_table(str(path), options)
    except MobilemedError as err:
        assert str(err)
        note_outcome("refused")
        return "refused"
    assert isinstance(table, ImageTable) and len(table) > 0
    assert len(table.paths) == len(table.labels) == len(table.splits)
    assert set(table.splits) <= {"train", "val", "test"} and (table.splits == "train").any()
    assert len(table.class_names) >= 1 and not {"nan", "NaN", "None", ""} & set(table.class_names)
    note_outcome("read")
    return "read"


# How each seed is meant to be read (8 images: fractions large enough to leave a val split).
SEED_OPTIONS = [DataOptions(split_column="split", group_column="group"),
                DataOptions(label_columns=["mass", "effusion"], val_fraction=0.3),
                DataOptions(label_column="findings", label_sep="|", val_fraction=0.3)]


def seed_edits(edit):
    """An edited seed, read with that seed's own options half of the time and random ones otherwise."""
    return st.integers(0, len(SEEDS) - 1).flatmap(
        lambda i: st.tuples(edit([SEEDS[i]]), st.one_of(st.just(SEED_OPTIONS[i]), OPTIONS)))


def test_the_seeds_read(root):
    assert [check(root, data, opts) for data, opts in zip(SEEDS, SEED_OPTIONS)] == ["read"] * 3


@fuzz_settings(max_examples=250)
@given(data=st.binary(max_size=300), options=OPTIONS)
def test_random_bytes(root, data, options):
    check(root, data, options)


@fuzz_settings(max_examples=400)
@given(data=csv_texts(), options=OPTIONS)
def test_random_csv_text(root, data, options):
    check(root, data, options)


@fuzz_settings(max_examples=200)
@given(case=seed_edits(truncations))
def test_truncated_manifests(root, case):
    check(root, *case)


@fuzz_settings(max_examples=250)
@given(case=seed_edits(lambda seeds: mutated_bytes(seeds, header=64)))
def test_mutated_manifests(root, case):
    check(root, *case)
