"""Every bad input gets a one-line error naming what to fix, exit code 2, no traceback, no partial output."""
import shutil
from pathlib import Path

import pytest

from mobilemed.cli.main import main
from tests.conftest import tiny_train_args, train_tiny_checkpoint

TINY = tiny_train_args()


def run_cli(capsys, *argv):
    code = main(["--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("mobilemed")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return train_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), image_px=32, image_size=32)


def test_missing_data_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", tmp_path / "nowhere", *TINY)
    assert_clean_error(code, err, "nowhere", "does not exist")


def test_empty_class_folder(capsys, blob_folder):
    (blob_folder / "train" / "covid").mkdir()
    code, _, err = run_cli(capsys, "train", blob_folder, *TINY)
    assert_clean_error(code, err, "covid", "holds no images")


def test_unreadable_image_is_named_and_skip_bad_counts_it(capsys, blob_folder, tmp_path):
    bad = blob_folder / "train" / "normal" / "broken.png"
    bad.write_bytes(b"not a png at all")
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", blob_folder, "--out", out_dir, *TINY)
    assert_clean_error(code, err, "broken.png", "--skip-bad")
    assert not (out_dir / "best.pt").exists()
    code, out, err = run_cli(capsys, "train", blob_folder, "--out", out_dir, "--skip-bad", *TINY)
    assert code == 0, err
    assert "broken.png" not in (out_dir / "split.csv").read_text()


def test_csv_without_the_named_column(capsys, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,finding\na.png,x\n")
    code, _, err = run_cli(capsys, "train", csv, "--label-column", "diagnosis", *TINY)
    assert_clean_error(code, err, "labels.csv", "diagnosis", "path, finding")


def test_checkpoint_for_another_task(capsys, tiny_checkpoint, tmp_path):
    checkpoint, data = tiny_checkpoint
    csv = tmp_path / "multi.csv"
    rows = [f"{p},1,0" for p in sorted((data / "test").rglob("*.png"))]
    csv.write_text("path,effusion,mass\n" + "\n".join(rows) + "\n")
    code, _, err = run_cli(capsys, "evaluate", checkpoint, csv, "--label-columns", "effusion,mass")
    assert_clean_error(code, err, "multilabel", "binary")


def test_label_the_model_does_not_know(capsys, tiny_checkpoint, tmp_path):
    checkpoint, data = tiny_checkpoint
    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "test" / "pneumonia").rename(other / "test" / "covid")
    (other / "train" / "pneumonia").rename(other / "train" / "covid")
    (other / "val" / "pneumonia").rename(other / "val" / "covid")
    code, _, err = run_cli(capsys, "evaluate", checkpoint, other)
    assert_clean_error(code, err, "covid", "does not know", "normal, pneumonia")


def test_not_a_checkpoint(capsys, tmp_path, blob_folder):
    fake = tmp_path / "model.pt"
    fake.write_bytes(b"PK\x03\x04 garbage")
    out = tmp_path / "preds.csv"
    code, _, err = run_cli(capsys, "predict", fake, blob_folder / "test", "--out", out)
    assert_clean_error(code, err, "model.pt", "not a readable mobilemed checkpoint")
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    from mobilemed.errors import MobilemedError

    with pytest.raises(MobilemedError):
        main(["--debug", "train", str(tmp_path / "nowhere"), *TINY])


def test_predict_writes_one_row_per_file(capsys, tiny_checkpoint, tmp_path):
    checkpoint, data = tiny_checkpoint
    out = tmp_path / "preds.csv"
    code, _, err = run_cli(capsys, "predict", checkpoint, data / "test", "--out", out)
    assert code == 0, err
    lines = out.read_text().strip().splitlines()
    assert lines[0] == "file,prob_pneumonia,predicted,ood_score,in_distribution,ood_reason"
    assert len(lines) == 1 + len(list((data / "test").rglob("*.png")))
    assert all(line.split(",")[2] in ("normal", "pneumonia") for line in lines[1:])
