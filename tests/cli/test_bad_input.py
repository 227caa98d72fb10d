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
    code, _, err = run_cli(capsys, "evaluate", checkpoint, csv, "--label-columns", "effusion,mass", "--allow-outside-root")
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
    assert lines[0] == "file,prob_pneumonia,predicted,ood_score,in_distribution,ood_reason,sop_instance_uid,study_instance_uid"
    assert len(lines) == 1 + len(list((data / "test").rglob("*.png")))
    assert all(line.split(",")[2] in ("normal", "pneumonia") for line in lines[1:])


def test_predict_skip_bad_keeps_every_input_row_in_order_with_the_reason(capsys, tiny_checkpoint, tmp_path):
    from tests.io.test_limits import write_declared_png

    checkpoint, data = tiny_checkpoint
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((data / "test" / "normal").glob("*.png"))[:2]
    for i, src in enumerate(good):
        shutil.copy(src, folder / f"{2 * i}_good.png")
    (folder / "1_broken.png").write_bytes(b"not a png")
    write_declared_png(folder / "3_bomb.png", 20_000, 20_000)
    out = tmp_path / "preds.csv"
    code, _, err = run_cli(capsys, "predict", checkpoint, folder, "--out", out)
    assert_clean_error(code, err, "1_broken.png", "--skip-bad")
    code, _, err = run_cli(capsys, "predict", checkpoint, folder, "--out", out, "--skip-bad")
    assert code == 0, err
    lines = out.read_text().strip().splitlines()
    assert lines[0] == "file,prob_pneumonia,predicted,ood_score,in_distribution,ood_reason,sop_instance_uid,study_instance_uid,error"
    import csv

    rows = [[row[0], row[1], row[2], row[-1]] for row in csv.reader(lines[1:])]  # file, prob, predicted, error
    assert [Path(r[0]).name for r in rows] == ["0_good.png", "1_broken.png", "2_good.png", "3_bomb.png"]
    assert rows[0][3] == "" and rows[2][3] == "" and rows[0][2] in ("normal", "pneumonia")
    assert rows[1][1:3] == ["", ""] and "not an image file" in rows[1][3]
    assert "400,000,000 pixels" in rows[3][3]


def test_max_image_pixels_option_lets_a_large_image_through(capsys, tiny_checkpoint, tmp_path):
    checkpoint, data = tiny_checkpoint
    image = sorted((data / "test" / "normal").glob("*.png"))[0]  # 32 x 32 = 1,024 pixels
    code, _, err = run_cli(capsys, "predict", checkpoint, image, "--max-image-pixels", "1000")
    assert_clean_error(code, err, image.name, "1,024 pixels", "limit of 1,000")
    code, out, err = run_cli(capsys, "predict", checkpoint, image, "--max-image-pixels", "1024")
    assert code == 0 and image.name in out


def test_explain_skip_bad_skips_and_counts(capsys, tiny_checkpoint, tmp_path):
    checkpoint, data = tiny_checkpoint
    good = sorted((data / "test" / "pneumonia").glob("*.png"))[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = run_cli(capsys, "explain", checkpoint, good, bad, "--out", tmp_path / "cams")
    assert_clean_error(code, err, "broken.png", "--skip-bad")
    code, out, err = run_cli(capsys, "explain", checkpoint, good, bad, "--out", tmp_path / "cams", "--skip-bad")
    assert code == 0, err
    assert "skipped" in err and "broken.png" in err and "skipped 1 unreadable file(s)" in out
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == [f"{good.stem}_gradcam.png"]


def test_outputs_follow_the_umask_not_0600(capsys, tiny_checkpoint, tmp_path):
    import os

    checkpoint, data = tiny_checkpoint
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, "predict", checkpoint, data / "test", "--out", tmp_path / "preds.csv")
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "preds.csv").stat().st_mode & 0o777 == 0o644
    assert (checkpoint.parent / "report.html").stat().st_mode & 0o077 != 0  # colleagues can read the report


def test_quiet_silences_library_warnings_and_debug_keeps_them(capsys, tiny_checkpoint, tmp_path):
    import numpy as np
    from PIL import Image

    checkpoint, _ = tiny_checkpoint
    palette = tmp_path / "palette.png"  # PIL warns when it converts this to RGB
    Image.fromarray(np.arange(1024, dtype=np.uint16).reshape(32, 32).astype(np.uint8)).convert("P").save(
        palette, transparency=bytes(range(16)))
    needle = "Palette images with Transparency"
    code = main(["--quiet", "predict", str(checkpoint), str(palette)])
    assert code == 0 and needle not in capsys.readouterr().err
    code = main(["predict", str(checkpoint), str(palette), "--debug"])
    err = capsys.readouterr().err
    assert code == 0 and needle in err and "py.warnings" in err  # routed through logging


def test_label_sep_without_findings_is_refused_before_any_file_is_written(capsys, blob_folder, tmp_path):
    files = sorted(blob_folder.rglob("*.png"))
    csv = tmp_path / "labels.csv"
    csv.write_text("path,findings\n" + "\n".join(f"{p}," for p in files) + "\n")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", csv, "--label-column", "findings", "--label-sep", "|",
                           "--allow-outside-root", "--out", out, *TINY)
    assert_clean_error(code, err, "labels.csv", "lists no finding in any row")
    assert not out.exists()


def test_strict_train_stops_on_a_duplicate_within_a_split(capsys, blob_folder, tmp_path):
    normal = blob_folder / "train" / "normal"
    shutil.copy(normal / "normal_0.png", normal / "normal_0_copy.png")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", blob_folder, "--strict", "--out", out, *TINY)
    assert_clean_error(code, err, "appear more than once within a split", "normal_0_copy.png", "--strict")
    assert not out.exists()
