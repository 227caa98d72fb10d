"""audit_data, the library verb behind `mobilemed audit`: the data as given, or a fresh split."""
import json
import shutil

from mobilemed.data.audit import audit_data
from mobilemed.data.sources import DataOptions
from tests.conftest import make_blob_folder


def test_audit_data_finds_a_copy_across_splits_and_writes_both_files(tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=4, size=32)
    shutil.copy(data / "train/normal/normal_0.png", data / "test/normal/copied.png")
    report = audit_data(str(data), progress=False)
    assert report.num_images == 25 and report.has_leakage and len(report.duplicates_across_splits) == 1
    json_path, text_path = report.write(tmp_path / "out" / "a.json")
    assert json.loads(json_path.read_text())["summary"]["duplicate_groups_across_splits"] == 1
    assert text_path.name == "a.txt" and "LEAKAGE" in text_path.read_text()


def test_audit_data_keeps_the_given_splits_unless_resplit(tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=5, size=32, splits=("",))  # no split at all
    as_given = audit_data(str(data), near_duplicate_distance=None, progress=False)
    assert list(as_given.counts) == ["unassigned"] and as_given.counts["unassigned"]["images"] == 10
    fresh = audit_data(str(data), DataOptions(resplit=True, val_fraction=0.2, test_fraction=0.2),
                       near_duplicate_distance=None, progress=False)
    assert {s: c["images"] for s, c in fresh.counts.items()} == {"train": 6, "val": 2, "test": 2}
