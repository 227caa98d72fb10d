"""--group-pattern: patients read from file names, so validation carved from a train folder takes whole patients."""
import numpy as np
import pytest
from PIL import Image

from mobilemed.cli.main import main
from mobilemed.data.sources import DataOptions, load_table
from mobilemed.errors import MobilemedError

KERMANY = r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"


def _kermany_like(root, patients: int = 12, per_patient: int = 3):
    """Kermany's naming: person<k>_bacteria_<n>.jpeg / person<k>_virus_<n>.jpeg, IM-<k>-<n>.jpeg and
    NORMAL2-IM-<k>-<n>.jpeg, several images per patient, in train/ and test/."""
    rng = np.random.default_rng(0)
    for split, first in (("train", 0), ("test", 1000)):
        for k in range(first, first + patients):
            names = {"PNEUMONIA": [f"person{k}_{'bacteria' if k % 2 else 'virus'}_{k * 10 + n}.jpeg"
                                   for n in range(per_patient)],
                     "NORMAL": [f"{'NORMAL2-' if k % 3 == 0 else ''}IM-{k:04d}-{n + 1:04d}.jpeg"
                                for n in range(per_patient)]}
            for label, files in names.items():
                (root / split / label).mkdir(parents=True, exist_ok=True)
                for name in files:
                    pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
                    Image.fromarray(pixels, "L").save(root / split / label / name)
    return root


def test_validation_carved_from_train_takes_whole_patients(tmp_path):
    data = _kermany_like(tmp_path / "kermany")
    table = load_table(str(data), DataOptions(group_pattern=KERMANY, val_fraction=0.3))
    assert len(set(table.groups)) == 4 * 12  # 12 patients per class and split
    assert {g for g in table.groups if g.startswith("NORMAL2")} == {f"NORMAL2-IM-{k:04d}" for k in
                                                                   [*range(0, 12, 3), *range(1002, 1012, 3)]}
    train, val = set(table.groups[table.splits == "train"]), set(table.groups[table.splits == "val"])
    assert val and not train & val
    for patient in val:  # all 3 images of a validation patient went there
        assert (table.groups == patient).sum() == 3 and set(table.splits[table.groups == patient]) == {"val"}


def test_without_the_pattern_the_same_folder_splits_patients_across_train_and_validation(tmp_path):
    data = _kermany_like(tmp_path / "kermany")
    table = load_table(str(data), DataOptions(val_fraction=0.3))
    grouped = load_table(str(data), DataOptions(group_pattern=KERMANY, val_fraction=0.3))
    patients = grouped.groups  # same rows in the same order
    assert table.groups is None
    assert set(patients[table.splits == "train"]) & set(patients[table.splits == "val"])


@pytest.mark.parametrize("pattern, message", [
    ("(person", "is not a regular expression"),
    (r"^person\d+", "finds no patient in 72 of 144 file names, e.g."),
    (r"^(x?)", "matches an empty patient id")])
def test_a_pattern_that_cannot_name_every_patient_is_refused_before_any_file(capsys, tmp_path, pattern, message):
    data = _kermany_like(tmp_path / "kermany")
    code = main(["train", str(data), "--group-pattern", pattern, "--weights", "none", "--mode", "scratch",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_pattern_and_a_group_column_together_are_refused(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("path,label,patient\na.png,x,p1\nb.png,y,p2\n")
    with pytest.raises(MobilemedError, match="keep one"):
        load_table(str(tmp_path / "labels.csv"), DataOptions(label_column="label", group_column="patient",
                                                             group_pattern="a"))


def test_the_real_kermany_folder_gets_a_patient_grouped_validation_split(shared):
    table = load_table(str(shared / "data/kermany_cxr_224"), DataOptions(group_pattern=KERMANY))
    train, val = table.groups[table.splits == "train"], table.groups[table.splits == "val"]
    assert len(set(train)) > 2000 and len(set(val)) > 300  # thousands of patients, several images each
    assert not set(train) & set(val)
    assert len(train) + len(val) == 5216 and len(train) > len(set(train)) * 1.5
