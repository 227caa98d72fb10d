"""Issue 7 items 1, 5, 6 and 8 (weights message): a run folder is never a mix of two runs, never looks
finished when it is not, and every output path is checked before the work starts."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from torchvision import models as tvm

from mobilemed.checkpoint import read_checkpoint
from mobilemed.cli.main import main
from tests.cli.test_bad_input import assert_clean_error, run_cli
from tests.conftest import make_blob_folder, tiny_train_args

TINY = tiny_train_args()


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run and its data; tests copy the run before changing anything."""
    root = tmp_path_factory.mktemp("finished")
    data = make_blob_folder(root / "data", per_class=6, size=32)
    assert main(["--quiet", "train", str(data), "--out", str(root / "run"), *TINY]) == 0
    return root / "run", data


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished[0], copy)
    return copy


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, finished):
    """A run Ctrl-C'd after its last epoch, before the operating point was chosen."""
    from mobilemed.training import fit as fit_module

    out = tmp_path_factory.mktemp("interrupted") / "run"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    patch = pytest.MonkeyPatch()
    patch.setattr(fit_module, "finish_run", interrupt)
    patch.setattr(sys, "argv", ["mobilemed", "--quiet", "train", str(finished[1]), "--out", str(out), *TINY])
    try:
        code = main(sys.argv[1:])
    finally:
        patch.undo()
    assert code == 130
    return out


def test_finished_run_is_marked_complete(finished):
    run, _ = finished
    assert json.loads((run / "run_state.json").read_text())["state"] == "complete"
    assert read_checkpoint(run / "best.pt")["complete"] is True
    assert read_checkpoint(run / "last.pt")["complete"] is False


def test_non_empty_out_is_refused_and_left_untouched(capsys, run, finished, tmp_path):
    """The issue's worst case: a second train into a finished run replaced config, spec and split.csv."""
    before = snapshot(run)
    other = make_blob_folder(tmp_path / "other", per_class=5, size=32, seed=3)
    code, _, err = run_cli(capsys, "train", other, "--out", run, *TINY)
    assert_clean_error(code, err, str(run), "not empty", "a complete run", "--resume", "--overwrite")
    assert snapshot(run) == before


def test_failed_overwrite_leaves_the_old_run_whole(capsys, run, finished, tmp_path):
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", tmp_path / "missing", "--out", run, "--overwrite", *TINY)
    assert_clean_error(code, err, "missing", "does not exist")
    code, _, err = run_cli(capsys, "train", finished[1], "--out", run, "--overwrite", *TINY,
                           "--weights", tmp_path / "nope.pt", "--mode", "finetune")
    assert_clean_error(code, err, "nope.pt", "does not exist")
    assert snapshot(run) == before


def test_overwrite_replaces_every_file_of_the_old_run(capsys, run, finished, tmp_path):
    (run / "eval-test").mkdir()
    (run / "eval-test" / "metrics.json").write_text("{}")
    old_best = (run / "best.pt").read_bytes()
    data = make_blob_folder(tmp_path / "other", per_class=5, size=32, seed=3)
    code, _, err = run_cli(capsys, "train", data, "--out", run, "--overwrite", *tiny_train_args(epochs=1))
    assert code == 0, err
    assert not (run / "eval-test").exists() and (run / "best.pt").read_bytes() != old_best
    assert str(data) in (run / "split.csv").read_text() and str(finished[1]) not in (run / "split.csv").read_text()
    assert len(json.loads((run / "history.json").read_text())) == 1
    assert json.loads((run / "run_state.json").read_text())["state"] == "complete"


def test_a_failure_mid_run_never_leaves_a_finished_looking_folder(capsys, run, finished, monkeypatch):
    from mobilemed.errors import MobilemedError
    from mobilemed.training import fit as fit_module

    def fail(*args, **kwargs):
        raise MobilemedError("disk full while writing the report")

    monkeypatch.setattr(fit_module, "finish_run", fail)
    code, _, err = run_cli(capsys, "train", finished[1], "--out", run, "--overwrite", *TINY)
    assert_clean_error(code, err, "disk full")
    state = json.loads((run / "run_state.json").read_text())
    assert state["state"] == "failed" and "disk full" in state["error"]
    assert not (run / "metrics.json").exists() and not (run / "report.html").exists()
    assert read_checkpoint(run / "best.pt")["complete"] is False
    code, _, err = run_cli(capsys, "report", run)
    assert_clean_error(code, err, "did not finish", "failed")


def test_a_bad_operating_point_target_is_refused_before_the_run_folder(capsys, finished, tmp_path):
    # Out of (0, 1): argparse refuses it while parsing (exit 2), long before a run folder could exist.
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "train", finished[1], "--out", tmp_path / "r", *TINY, "--target-sensitivity", "1.5")
    assert exit_info.value.code == 2
    assert "--target-sensitivity: 1.5 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    # A rule whose target is missing passes the parser: the library refuses it, still before the folder.
    code, _, err = run_cli(capsys, "train", finished[1], "--out", tmp_path / "r", *TINY,
                           "--threshold-rule", "target_sensitivity")
    assert_clean_error(code, err, "target")
    assert not (tmp_path / "r").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(capsys, finished, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("precious")
    code, _, err = run_cli(capsys, "train", finished[1], "--out", notes, "--overwrite", *TINY)
    assert_clean_error(code, err, "thesis.tex", "not a mobilemed run")
    assert (notes / "thesis.tex").read_text() == "precious"


def test_a_second_process_on_the_same_folder_is_refused(capsys, run, finished):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242 otherhost'); print('locked', flush=True); "
        "time.sleep(60)"), str(run / ".mobilemed.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        code, _, err = run_cli(capsys, "train", finished[1], "--out", run, "--resume", *TINY)
        assert_clean_error(code, err, "another mobilemed process", "4242 otherhost", str(run))
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli(capsys, "train", finished[1], "--out", run, "--resume", *TINY)
    assert code == 0, err  # the kernel dropped the dead holder's lock: no stale lock to clean up


def test_a_killed_run_is_reported_not_silently_continued(capsys, run, finished):
    state = json.loads((run / "run_state.json").read_text())
    (run / "run_state.json").write_text(json.dumps({**state, "state": "running", "pid": 999999}))
    code, _, err = run_cli(capsys, "train", finished[1], "--out", run, *TINY)
    assert_clean_error(code, err, "pid 999999", "stopped without finishing", "--resume")


def test_ctrl_c_marks_the_run_interrupted_and_prints_the_resume_command(capsys, interrupted, finished):
    assert json.loads((interrupted / "run_state.json").read_text())["state"] == "interrupted"
    assert not (interrupted / "metrics.json").exists()
    assert read_checkpoint(interrupted / "best.pt")["complete"] is False


def test_ctrl_c_hint_is_this_command_with_resume(capsys, finished, tmp_path, monkeypatch):
    from mobilemed.training import fit as fit_module

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "finish_run", interrupt)
    argv = ["--quiet", "train", str(finished[1]), "--out", str(tmp_path / "r"), *TINY]
    monkeypatch.setattr(sys, "argv", ["mobilemed", *argv])
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "marked incomplete" in err
    command = err.strip().splitlines()[-1].strip()
    assert command.startswith("mobilemed --quiet train") and command.endswith("--resume")
    monkeypatch.undo()
    assert main(command.split()[1:]) == 0  # the printed command really finishes the run
    assert json.loads((tmp_path / "r" / "run_state.json").read_text())["state"] == "complete"


@pytest.mark.parametrize("command", ["predict", "evaluate", "explain"])
def test_consumers_refuse_a_checkpoint_of_an_unfinished_run(capsys, interrupted, finished, command, tmp_path):
    data = finished[1]
    copied = tmp_path / "elsewhere.pt"  # a copied best.pt still knows it is unfinished
    shutil.copy(interrupted / "best.pt", copied)
    extra = {"predict": [data / "test", "--out", tmp_path / "p.csv"], "evaluate": [data, "--out", tmp_path / "e"],
             "explain": [data / "test" / "normal" / "normal_0.png", "--out", tmp_path / "x"]}[command]
    for checkpoint in (interrupted / "best.pt", copied):
        code, _, err = run_cli(capsys, command, checkpoint, *extra)
        assert_clean_error(code, err, str(checkpoint), "did not finish", "--resume", "--allow-incomplete")
    assert not any((tmp_path / name).exists() for name in ("p.csv", "e", "x"))
    code, _, err = run_cli(capsys, command, copied, *extra, "--allow-incomplete")
    assert code == 0, err
    assert "NOT validated" in err


def test_report_refuses_an_unfinished_run(capsys, interrupted):
    code, _, err = run_cli(capsys, "report", interrupted)
    assert_clean_error(code, err, str(interrupted), "did not finish", "interrupted", "--allow-incomplete")


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "explain", "report"])
def test_output_path_that_cannot_be_used(capsys, command, finished, tmp_path):
    run, data = finished
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    kind_of_out = {"predict": "file", "report": "file"}.get(command, "folder")
    wrong = tmp_path if kind_of_out == "file" else a_file  # a folder where a file is expected, or vice versa
    head = {"train": ["train", data], "predict": ["predict", run / "best.pt", data / "test"],
            "evaluate": ["evaluate", run / "best.pt", data], "report": ["report", run],
            "explain": ["explain", run / "best.pt", data / "test" / "normal" / "normal_0.png"]}[command]
    tail = TINY if command == "train" else []
    started = time.perf_counter()
    code, _, err = run_cli(capsys, *head, "--out", wrong, *tail)
    assert_clean_error(code, err, "--out", str(wrong), "a folder" if kind_of_out == "file" else "is a file")
    code, _, err = run_cli(capsys, *head, "--out", a_file / "below", *tail)  # unwritable even for root
    assert_clean_error(code, err, "--out", "cannot be created", "is a file")
    assert time.perf_counter() - started < 30  # refused before the work, not after it


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_folder(capsys, finished, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, "train", finished[1], "--out", locked / "run", *TINY)
        assert_clean_error(code, err, "no write permission", str(locked))
    finally:
        locked.chmod(0o700)


CHANGES = {"mode": ["--mode", "finetune", "--weights", "imagenet"], "arch": ["--arch", "mobilenet_v2_035"],
           "scheduler": ["--scheduler", "onecycle"], "epochs": ["--epochs", "5"], "lr": ["--lr", "0.01"],
           "batch_size": ["--batch-size", "8"], "image_size": ["--image-size", "48"]}


@pytest.mark.parametrize("field", [*CHANGES, "data"])
def test_resume_refuses_changed_settings_before_touching_the_run(capsys, run, finished, field, tmp_path):
    before = snapshot(run)
    data = finished[1]
    if field == "data":
        data = shutil.copytree(finished[1], tmp_path / "moved")
    argv = ["train", data, "--out", run, *TINY, *CHANGES.get(field, []), "--resume"]
    code, _, err = run_cli(capsys, *argv)
    assert_clean_error(code, err, "--resume", "differs from", str(run / "config.yaml"), f"{field}:")
    assert snapshot(run) == before


def test_resume_lists_every_difference(capsys, run, finished):
    code, _, err = run_cli(capsys, "train", finished[1], "--out", run, *TINY, "--lr", "0.5", "--scheduler", "none",
                           "--resume", "--no-gallery")
    assert_clean_error(code, err, "lr: 0.001 -> 0.5", "scheduler: 'cosine' -> 'none'")


def test_wrong_architecture_weights_are_summarised_in_one_short_line(capsys, finished, tmp_path):
    weights = tmp_path / "v2.pt"
    torch.save(tvm.mobilenet_v2(width_mult=0.35).state_dict(), weights)
    code, _, err = run_cli(capsys, "train", finished[1], "--out", tmp_path / "r", "--mode", "finetune", "--weights",
                           weights, "--arch", "mobilenet_v3_small", "--epochs", "1")
    assert_clean_error(code, err, "do not fit mobilenet_v3_small", "missing keys", "unexpected keys",
                       "look like mobilenet_v2_035", "--arch")
    assert len(err) < 800
    assert not (tmp_path / "r").exists()  # the weights were loaded before anything was written
