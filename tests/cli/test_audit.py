"""`mobilemed audit`: summary, audit.json, and the --strict exit codes."""
import json
import shutil

from mobilemed.cli.main import main
from tests.conftest import make_blob_folder


def run_audit(capsys, *argv):
    code = main(["--quiet", "audit", *map(str, argv)])
    return code, capsys.readouterr().out


def test_clean_folder_exits_0_even_when_strict(capsys, tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=4, size=32)
    code, out = run_audit(capsys, data, "--out", tmp_path / "out", "--strict")
    assert code == 0 and "CLEAN" in out
    report = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert report["num_images"] == 24 and report["is_clean"] is True
    assert (tmp_path / "out" / "audit.txt").read_text().startswith("Audit of")


def test_copy_across_splits_exits_1_only_when_strict(capsys, tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=4, size=32)
    shutil.copy(data / "train/normal/normal_0.png", data / "test/normal/copied.png")
    code, out = run_audit(capsys, data, "--json", tmp_path / "a.json")
    assert code == 0 and "LEAKAGE: 1 duplicate images across splits" in out
    assert run_audit(capsys, data, "--json", tmp_path / "a.json", "--strict")[0] == 1
    assert json.loads((tmp_path / "a.json").read_text())["summary"]["duplicate_groups_across_splits"] == 1


def test_nih_course_split_leaks_30_patients_and_a_resplit_none(capsys, shared, tmp_path):
    root = shared / "data" / "nih_cxr14_1000"
    args = [root, "--labels", root / "Data_Entry_subset.csv", "--out", tmp_path, "--strict"]
    code, out = run_audit(capsys, *args)
    assert code == 1 and "Patients in more than one split: 30" in out
    code, out = run_audit(capsys, *args, "--resplit", "--near-threshold", "-1")
    assert code == 0 and "Patients in more than one split: none" in out
