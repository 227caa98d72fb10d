"""NIH ChestX-ray14 tables: the 14 findings, patient groups, folder splits, the full official table."""
import time
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from mobilemed.data.nih import FINDINGS, findings_to_multihot, is_nih_table, read_nih_table
from mobilemed.data.splits import assign_splits, groups_across_splits
from mobilemed.errors import MobilemedError

HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age\n"


@pytest.fixture(scope="module")
def nih1000(shared):
    return shared / "data" / "nih_cxr14_1000"


def make_nih_fixture(root, rows):
    """rows: (image name, findings, patient, folder or None = no image)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, _, _, folder in rows:
        if folder is not None:
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / folder / name)
    lines = [f"{name},{findings},0,{patient},50" for name, findings, patient, _ in rows]
    (root / "Data_Entry.csv").write_text(HEADER + "\n".join(lines) + "\n")
    return root / "Data_Entry.csv"


def test_findings_to_multihot_in_the_official_order():
    labels = findings_to_multihot(["Effusion|Mass", "No Finding", "Hernia"])
    assert FINDINGS[0] == "Atelectasis" and FINDINGS[-1] == "Hernia" and len(FINDINGS) == 14
    assert labels.shape == (3, 14) and labels.dtype == np.float32
    assert np.flatnonzero(labels[0]).tolist() == [FINDINGS.index("Effusion"), FINDINGS.index("Mass")]
    assert labels[1].sum() == 0 and labels[2, 13] == 1
    with pytest.raises(MobilemedError, match="row 3 has finding 'Covid'"):
        findings_to_multihot(["Mass", "Covid"], "t.csv")


def test_read_fixture_with_folder_splits_groups_and_missing_images(tmp_path):
    csv = make_nih_fixture(tmp_path / "nih", [
        ("a.png", "Mass", "7", "train/1_abnormal"), ("b.png", "No Finding", "7", "valid/0_normal"),
        ("c.png", "Effusion|Edema", "8", "test/1_abnormal"), ("d.png", "No Finding", "9", "extra"),
        ("e.png", "Nodule", "10", None)])
    table = read_nih_table(csv, tmp_path / "nih")
    assert table.task == "multilabel" and table.class_names == list(FINDINGS)
    assert [p.rsplit("/", 1)[-1] for p in table.paths] == ["a.png", "b.png", "c.png", "d.png"]
    assert table.splits.tolist() == ["train", "val", "test", ""]
    assert table.groups.tolist() == ["7", "7", "8", "9"]
    assert table.labels[2, FINDINGS.index("Edema")] == 1 and table.labels[1].sum() == 0
    assert groups_across_splits(table) == {"7": ["train", "val"]}
    kept = read_nih_table(csv, tmp_path / "nih", require_images=False)
    assert len(kept) == 5 and kept.splits[-1] == ""


def test_a_file_found_twice_gives_a_row_per_copy(tmp_path):
    csv = make_nih_fixture(tmp_path / "nih", [("a.png", "Mass", "1", "train"), ("b.png", "Mass", "2", "test")])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "nih" / "test" / "a.png")
    table = read_nih_table(csv, tmp_path / "nih")
    assert sorted(table.splits[[p.endswith("a.png") for p in table.paths]]) == ["test", "train"]


def test_no_matching_image_and_wrong_table_are_clear_errors(tmp_path):
    csv = make_nih_fixture(tmp_path / "nih", [("a.png", "Mass", "1", None)])
    with pytest.raises(MobilemedError, match="none of the 1 images .* is under"):
        read_nih_table(csv, tmp_path / "nih")
    (tmp_path / "other.csv").write_text("path,label\nx.png,1\n")
    with pytest.raises(MobilemedError, match="no Image Index, Finding Labels, Patient ID column"):
        read_nih_table(tmp_path / "other.csv", tmp_path)


def test_is_nih_table_sniffs_the_header(tmp_path, nih1000, shared):
    (tmp_path / "other.csv").write_text("path,label\nx.png,1\n")
    assert is_nih_table(nih1000 / "Data_Entry_subset.csv")
    assert is_nih_table(shared / "data/nih_labels/Data_Entry_2017_v2020.csv.gz")
    assert not is_nih_table(nih1000 / "labels_multihot.csv")  # multi-hot columns, no Finding Labels
    assert not is_nih_table(tmp_path / "other.csv") and not is_nih_table(tmp_path / "missing.csv")


def test_course_subset_has_30_patients_across_its_split(nih1000):
    table = read_nih_table(nih1000 / "Data_Entry_subset.csv", nih1000)
    assert len(table) == 1000 and len(set(table.groups)) == 264
    sizes = {s: int((table.splits == s).sum()) for s in ("train", "val", "test")}
    assert sizes == {"train": 600, "val": 200, "test": 200}
    counts = dict(zip(FINDINGS, table.class_counts().tolist()))
    assert counts["Atelectasis"] == 95 and counts["Effusion"] == 170 and counts["Hernia"] == 9
    assert int((table.labels.sum(axis=1) == 0).sum()) == 499  # No Finding
    assert len(groups_across_splits(table)) == 30


def test_grouped_resplit_of_the_subset_has_no_patient_in_two_splits(nih1000):
    table = read_nih_table(nih1000 / "Data_Entry_subset.csv", nih1000)
    resplit = assign_splits(replace(table, splits=np.full(len(table), "", dtype=object)), seed=0)
    assert groups_across_splits(resplit) == {}
    overall = table.labels.mean(axis=0)
    for split, fraction in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        part = resplit.labels[resplit.splits == split]
        assert abs(len(part) / len(table) - fraction) < 0.02
        # 264 patients, some with 40-60 images: prevalence can only be this close
        assert np.abs(part.mean(axis=0) - overall).max() < 0.05


def test_load_table_with_resplit_drops_the_course_folders_and_groups_by_patient(nih1000):
    from mobilemed.data.sources import DataOptions, load_table

    data = str(nih1000 / "Data_Entry_subset.csv")
    as_given = load_table(data, DataOptions(image_root=str(nih1000)))
    assert len(groups_across_splits(as_given)) == 30
    resplit = load_table(data, DataOptions(image_root=str(nih1000), resplit=True))
    assert groups_across_splits(resplit) == {} and set(resplit.splits) == {"train", "val", "test"}
    assert resplit.task == "multilabel" and resplit.labels.shape == (1000, 14)


def test_full_official_table_parses_quickly(shared, tmp_path):
    start = time.perf_counter()
    table = read_nih_table(shared / "data/nih_labels/Data_Entry_2017_v2020.csv.gz", tmp_path, require_images=False)
    assert time.perf_counter() - start < 15  # about 1.5 s on the 2-core dev machine
    assert len(table) == 112_120 and table.labels.shape == (112_120, 14)
    assert len(set(table.groups)) == 30_805
    assert int((table.labels.sum(axis=1) == 0).sum()) == 60_361  # No Finding
    assert dict(zip(FINDINGS, table.class_counts().tolist()))["Infiltration"] == 19_894
