"""kill -9 a training at seeded points, then --resume: the finished run equals an uninterrupted one.

The kill is a real SIGKILL of a `mobilemed train` subprocess, raised from inside it at an exact point (a
seeded choice among: right after epoch k's last.pt was renamed into place, halfway through writing a
checkpoint, just before metrics.json lands), so the test is deterministic and needs no polling. Both runs
use one thread, so every floating-point sum is ordered the same way and the results must be bit-identical.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from mobilemed.checkpoint import read_checkpoint
from mobilemed.cli.main import main
from tests.conftest import make_blob_folder

SRC = Path(__file__).resolve().parents[2] / "src"
# Runs `mobilemed train` and SIGKILLs itself at the chosen point: "after NAME K" (just after the K-th
# rename onto NAME), "before NAME K" (just before it), "midsave - K" (halfway through the K-th torch.save).
DRIVER = r"""
import io, os, signal, sys
import torch
torch.set_num_threads(1)
kind, name, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = {"replace": 0, "save": 0}
real_replace, real_save = os.replace, torch.save
def replace(src, dst, *a, **kw):
    hit = os.path.basename(str(dst)) == name and kind in ("after", "before")
    seen["replace"] += hit
    if hit and kind == "before" and seen["replace"] == k:
        os.kill(os.getpid(), signal.SIGKILL)
    out = real_replace(src, dst, *a, **kw)
    if hit and kind == "after" and seen["replace"] == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
def save(obj, f, *a, **kw):
    seen["save"] += 1
    if kind == "midsave" and seen["save"] == k and hasattr(f, "write"):
        buffer = io.BytesIO()
        real_save(obj, buffer, *a, **kw)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **kw)
os.replace, torch.save = replace, save
from mobilemed.cli.main import main
sys.exit(main(sys.argv[4:]))
"""
EPOCHS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = make_blob_folder(root / "data", per_class=6, size=32)
    weights = root / "v3small.pt"
    torch.manual_seed(0)
    torch.save(tvm.mobilenet_v3_small().state_dict(), weights)
    return root, data, weights


def train_args(mode: str, data: Path, weights: Path, out: Path) -> list[str]:
    model = ["--mode", "finetune", "--weights", str(weights), "--augment", "--ema", "0.9"] if mode == "finetune" \
        else ["--mode", "linear-probe", "--weights", str(weights), "--feature-precision", "fp32"]  # auto times itself
    return ["--quiet", "train", str(data), "--out", str(out), "--arch", "mobilenet_v3_small", "--image-size", "32",
            "--batch-size", "8", "--epochs", str(EPOCHS), "--no-gallery", "--n-bootstrap", "20", *model]


def in_process(argv: list[str]) -> int:
    """Single-threaded like the driver, so the arithmetic matches the killed subprocess bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def kill_points(seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    return [("after", "last.pt", rng.randint(1, EPOCHS - 1)), ("midsave", "-", rng.randint(1, 2 * EPOCHS)),
            ("before", "metrics.json", 1)]


def outcome(run: Path) -> dict:
    """What must not depend on the kill: metrics, history (without wall-clock times), the chosen spec."""
    metrics = json.loads((run / "metrics.json").read_text())
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads((run / "history.json").read_text())]
    best = read_checkpoint(run / "best.pt")
    return {"val": metrics["val"], "test": metrics["test"], "history": history, "spec": best["spec"],
            "complete": best["complete"], "test_prob": np.load(run / "predictions_test.npz")["y_prob"].tolist()}


def assert_whole_files(run: Path) -> None:
    """Everything a reader can see after the kill is a whole file; only .tmp files may be partial."""
    for path in run.iterdir():
        if path.name.endswith(".tmp") or path.is_dir() or path.name.startswith(".mobilemed"):
            continue
        if path.suffix == ".pt":
            read_checkpoint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.mark.parametrize("mode", ["finetune", "linear-probe"])
def test_kill_and_resume_equals_an_uninterrupted_run(setup, mode):
    root, data, weights = setup
    reference = root / f"{mode}-reference"
    assert in_process(train_args(mode, data, weights, reference)) == 0
    expected = outcome(reference)
    assert expected["complete"] is True and len(expected["history"]) == EPOCHS
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    for point in kill_points(seed=7):
        run = root / f"{mode}-{'-'.join(map(str, point))}"
        argv = train_args(mode, data, weights, run)
        killed = subprocess.run([sys.executable, "-c", DRIVER, *map(str, point), *argv], env=env,
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        assert json.loads((run / "run_state.json").read_text())["state"] == "running"
        if point[0] == "midsave":
            assert any(p.name.endswith(".tmp") for p in run.iterdir()), "the half-written checkpoint is a temp file"
        assert_whole_files(run)
        assert in_process([*argv, "--resume"]) == 0, point
        assert not any(p.name.endswith(".tmp") for p in run.iterdir())
        assert json.loads((run / "run_state.json").read_text())["state"] == "complete"
        assert outcome(run) == expected, point


def test_fp16_loss_scale_survives_a_resume(tmp_path):
    """last.pt keeps the GradScaler's state: a resumed fp16 run goes on at the loss scale it had backed off
    to, instead of starting again at 65536 and skipping steps while it overflows down to it."""
    from mobilemed.spec import ModelSpec
    from mobilemed.training.config import OptimConfig
    from mobilemed.training.loop import build_scheduler
    from mobilemed.training.strategies import EarlyStopping, _restore, _save_last

    def parts():
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return model, optimizer, build_scheduler(optimizer, name="cosine", epochs=2, steps_per_epoch=4)

    model, optimizer, scheduler = parts()
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)  # where a run's overflows had taken it
    spec = ModelSpec(arch="mobilenet_v2", class_names=["a", "b"], task="binary", image_size=32)
    _save_last(tmp_path, model, spec, optimizer, scheduler, None, 0, [], EarlyStopping(0), model.state_dict(),
               False, scaler)
    assert read_checkpoint(tmp_path / "last.pt")["scaler"]["scale"] == 512.0

    fresh = torch.amp.GradScaler("cpu")
    assert fresh.get_scale() == 65536.0
    _restore(read_checkpoint(tmp_path / "last.pt"), *parts(), None, OptimConfig(), fresh)
    assert fresh.get_scale() == 512.0
    _restore(read_checkpoint(tmp_path / "last.pt"), *parts(), None, OptimConfig(), None)  # fp32 resume: no scaler
