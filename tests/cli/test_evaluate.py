"""mobilemed evaluate scores the images the run held out, whatever split flags the user repeats."""
import csv
import json

from mobilemed.cli.main import main
from tests.conftest import tiny_train_args

TINY = tiny_train_args()


def test_evaluate_uses_the_split_the_run_saved(blob_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--quiet", "train", str(blob_folder), "--resplit", "--out", str(run), *TINY]) == 0
    with open(run / "split.csv", newline="") as handle:
        held_out = sum(row["split"] == "test" for row in csv.DictReader(handle))
    assert held_out != 24  # the folders' own test split has 24 images: the resplit differs

    assert main(["--quiet", "evaluate", str(run / "best.pt"), str(blob_folder), "--n-bootstrap", "20",
                 "--out", str(tmp_path / "saved")]) == 0
    assert json.loads((tmp_path / "saved" / "metrics.json").read_text())["n"] == held_out

    other = tmp_path / "other-data"  # data the run never saw: its own folders decide
    (other / "test").mkdir(parents=True)
    for name in ("normal", "pneumonia"):
        (blob_folder / "test" / name).rename(other / "test" / name)
    (blob_folder / "train").rename(other / "train")
    assert main(["--quiet", "evaluate", str(run / "best.pt"), str(other), "--n-bootstrap", "20",
                 "--out", str(tmp_path / "own")]) == 0
    assert json.loads((tmp_path / "own" / "metrics.json").read_text())["n"] == 24
