"""Each audit finding on small fixtures built here: exact and near duplicates, patient overlap,
label conflicts, unreadable files; and the cheap cross-split checks training runs."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mobilemed.data.audit import audit_table, cross_split_checks
from mobilemed.data.duplicates import close_pairs, popcount
from mobilemed.data.table import ImageTable


def smooth_image(seed: int, size: int = 64) -> np.ndarray:
    """A distinct, smooth gray image (random 8 x 8 field upsampled): like anatomy, unlike noise."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


def write_images(root, specs):
    """specs: (name, seed). Returns the paths."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, seed in specs:
        Image.fromarray(smooth_image(seed)).save(root / name)
        paths.append(str(root / name))
    return paths


def make_table(paths, labels, splits, groups=None, class_names=("normal", "sick")):
    return ImageTable(paths=np.array(paths, dtype=object), labels=np.array(labels, dtype=np.int64),
                      class_names=list(class_names), task="binary", splits=np.array(splits, dtype=object),
                      groups=None if groups is None else np.array(groups, dtype=object), source="fixture")


@pytest.fixture
def clean_paths(tmp_path):
    return write_images(tmp_path / "img", [(f"{i}.png", i) for i in range(8)])


def audit(table, **kwargs):
    return audit_table(table, progress=False, **kwargs)


def test_clean_data_is_clean_and_counted(clean_paths):
    table = make_table(clean_paths, [0, 1] * 4, ["train"] * 4 + ["val"] * 2 + ["test"] * 2,
                       groups=[f"p{i}" for i in range(8)])
    report = audit(table)
    assert report.is_clean and not report.has_leakage
    assert report.counts["train"] == {"images": 4, "patients": 4, "classes": {
        "normal": {"count": 2, "prevalence": 0.5}, "sick": {"count": 2, "prevalence": 0.5}}}
    assert report.image_stats == {"sizes": {"64x64": 8}, "modes": {"L": 8}, "bit_depths": {"8": 8}}
    assert report.exact_duplicates == [] and report.near_duplicates == [] and report.label_conflicts == []
    assert report.format_text().rstrip().endswith("CLEAN: no leakage, label conflicts or unreadable files")


def test_exact_duplicate_across_splits_is_leakage(clean_paths, tmp_path):
    copy = tmp_path / "img" / "copy_of_0.png"
    shutil.copy(clean_paths[0], copy)
    table = make_table(clean_paths + [str(copy)], [0] * 9, ["train"] * 8 + ["test"])
    report = audit(table)
    [group] = report.exact_duplicates
    assert group.paths == [clean_paths[0], str(copy)] and group.splits == ["train", "test"]
    assert group.crosses_splits and report.has_leakage and not report.label_conflicts
    assert report.near_duplicates == []  # an identical copy is exact, not also near


def test_duplicate_within_a_split_is_noted_but_not_leakage(clean_paths, tmp_path):
    shutil.copy(clean_paths[1], tmp_path / "img" / "again.png")
    table = make_table(clean_paths + [str(tmp_path / "img" / "again.png")], [0] * 9, ["train"] * 9)
    report = audit(table)
    assert len(report.exact_duplicates) == 1 and not report.has_leakage and report.is_clean
    assert "(note: 1 duplicate groups within a split)" in report.verdict()


def test_near_duplicate_brightened_and_reencoded(clean_paths, tmp_path):
    brighter = np.clip(smooth_image(2).astype(int) + 6, 0, 255).astype(np.uint8)
    near = tmp_path / "img" / "2_brighter.jpg"
    Image.fromarray(brighter).save(near, quality=90)
    table = make_table(clean_paths + [str(near)], [0] * 9, ["train"] * 8 + ["val"])
    report = audit(table)
    assert report.exact_duplicates == []
    [group] = report.near_duplicates
    assert sorted(group.paths) == sorted([clean_paths[2], str(near)]) and 0 <= group.distance <= 20
    assert group.crosses_splits and report.has_leakage
    assert audit(table, near_duplicate_distance=None).near_duplicates == []


def test_patient_in_two_splits(clean_paths):
    table = make_table(clean_paths, [0] * 8, ["train"] * 6 + ["test"] * 2,
                       groups=["p1", "p2", "p3", "p4", "p5", "p6", "p1", "p7"])
    report = audit(table)
    assert report.patients_across_splits == {"p1": ["train", "test"]}
    assert report.has_leakage and "patient p1: train, test" in report.format_text()


def test_label_conflict_same_image_two_labels(clean_paths, tmp_path):
    shutil.copy(clean_paths[3], tmp_path / "img" / "relabelled.png")
    table = make_table(clean_paths + [str(tmp_path / "img" / "relabelled.png")], [0] * 8 + [1], ["train"] * 9)
    report = audit(table)
    [conflict] = report.label_conflicts
    assert conflict.labels == ["normal", "sick"] and not report.has_leakage and not report.is_clean


def test_multilabel_labels_are_compared_as_finding_sets(clean_paths, tmp_path):
    shutil.copy(clean_paths[0], tmp_path / "img" / "same.png")
    labels = np.zeros((9, 3), np.float32)
    labels[0, [0, 2]] = 1
    labels[8, 0] = 1
    table = ImageTable(paths=np.array(clean_paths + [str(tmp_path / "img" / "same.png")], dtype=object),
                       labels=labels, class_names=["Mass", "Nodule", "Edema"], task="multilabel",
                       splits=np.array(["train"] * 9, dtype=object))
    [conflict] = audit(table).label_conflicts
    assert conflict.labels == ["Mass|Edema", "Mass"]


def test_unreadable_files_are_listed_and_the_rest_audited(clean_paths, tmp_path):
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    table = make_table(clean_paths + [str(bad), str(tmp_path / "gone.png")], [0] * 10, ["train"] * 10)
    report = audit(table)
    assert [item["path"] for item in report.unreadable] == [str(bad), str(tmp_path / "gone.png")]
    assert "broken.png" in report.unreadable[0]["error"] and not report.is_clean
    assert sum(report.image_stats["sizes"].values()) == 8


def test_in_memory_images_are_hashed_by_pixels():
    images = np.stack([smooth_image(i) for i in range(6)] + [smooth_image(0)])
    table = ImageTable(paths=np.array([f"mnist:{i}" for i in range(7)], dtype=object), labels=np.zeros(7, np.int64),
                       class_names=["a", "b"], task="binary", splits=np.array(["train"] * 6 + ["test"], dtype=object),
                       images=images)
    report = audit(table)
    assert report.exact_duplicates[0].paths == ["mnist:0", "mnist:6"] and report.has_leakage
    assert cross_split_checks(table).has_leakage


def test_cross_split_checks_find_only_what_crosses(clean_paths, tmp_path):
    shutil.copy(clean_paths[0], tmp_path / "img" / "in_test.png")  # crosses
    shutil.copy(clean_paths[1], tmp_path / "img" / "in_train.png")  # stays inside train
    paths = clean_paths + [str(tmp_path / "img" / "in_test.png"), str(tmp_path / "img" / "in_train.png")]
    table = make_table(paths, [0] * 10, ["train"] * 7 + ["test"] * 2 + ["train"],
                       groups=["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p6", "p8", "p9"])
    report = cross_split_checks(table)
    assert [g.paths for g in report.exact_duplicates] == [[clean_paths[0], paths[8]]]
    assert report.patients_across_splits == {"p6": ["train", "test"]} and report.has_leakage
    text = report.format_text()
    assert "Identical images across splits: 1 groups" in text and "Patients in more than one split: 1" in text
    assert "Audit of" not in text and "Near duplicates" not in text  # only the checks that ran


def test_report_json_round_trip(clean_paths, tmp_path):
    shutil.copy(clean_paths[0], tmp_path / "img" / "dup.png")
    table = make_table(clean_paths + [str(tmp_path / "img" / "dup.png")], [0] * 9, ["train"] * 8 + ["test"])
    data = json.loads(json.dumps(audit(table).to_dict()))
    assert data["has_leakage"] is True and data["is_clean"] is False
    assert data["summary"]["exact_duplicate_groups"] == 1 and data["summary"]["duplicate_groups_across_splits"] == 1
    assert data["exact_duplicates"][0]["splits"] == ["train", "test"]
    assert data["verdict"].startswith("LEAKAGE: 1 duplicate images across splits")


def test_close_pairs_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, (300, 4), dtype=np.uint64)
    hashes[7] = hashes[3]
    hashes[7, 0] ^= np.uint64(0b1011)  # 3 bits apart
    i, j, distance = close_pairs(hashes, 3, block=64)
    assert list(zip(i, j, distance)) == [(3, 7, 3)]
    brute = {(a, b) for a in range(300) for b in range(a + 1, 300)
             if sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(hashes[a], hashes[b])) <= 112}
    i, j, _ = close_pairs(hashes, 112, block=64)
    assert set(zip(i.tolist(), j.tolist())) == brute and len(brute) > 10
    assert popcount(np.array([2**64 - 1, 5], dtype=np.uint64)).tolist() == [64, 2]


def test_course_subset_audit_reports_30_patients(shared):
    from mobilemed.data.nih import read_nih_table

    root = shared / "data" / "nih_cxr14_1000"
    report = audit(read_nih_table(root / "Data_Entry_subset.csv", root))
    assert len(report.patients_across_splits) == 30 and report.has_leakage
    assert report.exact_duplicates == [] and report.near_duplicates == [] and report.unreadable == []
    assert report.image_stats["sizes"] == {"64x64": 1000}
