"""Several processes (torchrun, gloo on the CPU) train the run one process would, and fail loudly.

The parity tests compare a 2-process run with a 1-process run of the same global batch on real
PneumoniaMNIST images, in the two settings where DDP must reproduce the single process: a linear probe, and a
fine-tune whose backbone stays frozen (head warm-up for every epoch), which goes through the network path
(sharded image batches, DDP re-wrapped each epoch, validation logits gathered). Neither has a BatchNorm in
training mode, so the only differences are float rounding: each rank's features come from differently
chunked passes (~1e-6), and DDP averages two half-batch gradients instead of one full-batch one. Probabilities
must agree to 1e-4 and AUROC to one swapped positive-negative pair. A fine-tune that trains the BatchNorm
layers would differ by more (each rank normalises its half batch; SyncBatchNorm refuses CPU tensors in torch
2.14): that is documented in training/distributed.py, not hidden behind a loose tolerance here.
Every subprocess has a timeout, so a hang fails the test instead of CI.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilemed.checkpoint import read_checkpoint
from mobilemed.cli.main import main
from mobilemed.errors import MobilemedError
from mobilemed.training.distributed import Dist, batch_rows, resolve_device, without_nproc
from tests.conftest import make_blob_folder

SRC = Path(__file__).resolve().parents[2] / "src"
SPLITS = {"train": 128, "val": 32, "test": 32}  # 128 = 4 global batches of 32, 16 rows per rank
# Loaded by every Python process started with this folder on PYTHONPATH: the process torchrun starts as rank 1
# SIGKILLs itself once rank 0 has written last.pt (epoch 1 is over), i.e. in the middle of the run.
KILLER = r"""
import os, signal, threading, time
def _die_after(path):
    while not os.path.exists(path):
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL)
if os.environ.get("RANK") == "1" and os.environ.get("KILL_AFTER"):
    threading.Thread(target=_die_after, args=(os.environ["KILL_AFTER"],), daemon=True).start()
"""


def env(**extra) -> dict:
    path = os.pathsep.join([*extra.pop("path", []), str(SRC), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def run_cli(argv: list[str], *, cwd: Path, timeout: float = 240, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilemed", *argv], cwd=cwd, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


def in_process(argv: list[str]) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each rank (torchrun sets OMP_NUM_THREADS=1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pneumonia_folder(shared, tmp_path_factory) -> Path:
    """The first PneumoniaMNIST images of each split as a real PNG folder (split/class/*.png), balanced."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pneumonia")
    npz = np.load(shared / "data/medmnist/pneumoniamnist.npz")
    for split, n in SPLITS.items():
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"].ravel()
        for label, name in enumerate(("normal", "pneumonia")):
            (root / split / name).mkdir(parents=True)
            for i in np.flatnonzero(labels == label)[:n // 2]:
                Image.fromarray(images[i]).save(root / split / name / f"{i}.png")
    return root


def train_args(data: Path, out: Path, shared: Path, *extra: str) -> list[str]:
    return ["--quiet", "train", str(data), "--out", str(out), "--weights", str(shared / "weights/mobilenet_v2_imagenet.pth"),
            "--image-size", "64", "--batch-size", "32", "--dropout", "0", "--scheduler", "none", "--no-gallery",
            "--n-bootstrap", "0", "--device", "cpu", *extra]


def outcome(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {"history": json.loads((run / "history.json").read_text()), "auroc": metrics["test"]["auroc_macro"]["value"],
            "prob": np.load(run / "predictions_test.npz")["y_prob"]}


def assert_same_run(one: dict, two: dict) -> None:
    """The tolerances of the module docstring: float rounding, nothing more."""
    assert np.abs(one["prob"] - two["prob"]).max() < 1e-4
    assert abs(one["auroc"] - two["auroc"]) <= 1 / (SPLITS["test"] // 2) ** 2 + 1e-9  # one swapped pair at most
    assert len(one["history"]) == len(two["history"])
    for a, b in zip(one["history"], two["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)


def assert_one_writer(tmp_path: Path, work: Path, run: Path) -> None:
    """Only rank 0 wrote, and only the run folder: nothing in the processes' working folder."""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "work"]
    assert list(work.iterdir()) == []
    versions = json.loads((run / "versions.json").read_text())
    assert versions["distributed"] == {"world_size": 2, "backend": "gloo", "device": "cpu", "amp": "off"}
    assert json.loads((run / "run_state.json").read_text())["state"] == "complete"


def test_linear_probe_on_two_gloo_processes_matches_one_process(pneumonia_folder, shared, tmp_path):
    """The default --feature-precision auto resolves to fp32 on several processes (int8 would be calibrated on
    one process's images), so the 2-process run equals a 1-process fp32 run."""
    args = lambda out: train_args(pneumonia_folder, out, shared, "--mode", "linear-probe", "--epochs", "2")  # noqa: E731
    assert in_process([*args(tmp_path / "one"), "--feature-precision", "fp32"]) == 0
    work = tmp_path / "work"
    work.mkdir()
    done = run_cli([*args(tmp_path / "two"), "--nproc", "2"], cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "feature_pass.json").read_text())["chosen"] == "fp32"
    assert_same_run(outcome(tmp_path / "one"), outcome(tmp_path / "two"))
    assert_one_writer(tmp_path, work, tmp_path / "two")


def test_killed_rank_ends_the_run_naming_it_and_resume_matches_one_process(pneumonia_folder, shared, tmp_path):
    """The network path (sharded image batches, DDP re-wrapped each epoch, gathered validation logits) with a
    frozen backbone, so no BatchNorm trains: rank 1 is SIGKILLed after epoch 1, the run ends at once with a
    message naming it, and --resume on two processes finishes the run a single process trains."""
    args = lambda out: train_args(pneumonia_folder, out, shared, "--mode", "finetune", "--epochs", "3",  # noqa: E731
                                  "--head-warmup-epochs", "3", "--no-augment", "--dist-timeout", "60")
    assert in_process(args(tmp_path / "one")) == 0
    work, hook, run = tmp_path / "work", tmp_path.parent / f"{tmp_path.name}-hook", tmp_path / "two"
    work.mkdir()
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    tic = time.monotonic()
    killed = run_cli([*args(run), "--nproc", "2"], cwd=work, path=[str(hook)], KILL_AFTER=str(run / "last.pt"))
    assert killed.returncode == 2, killed.stderr[-3000:]
    assert time.monotonic() - tic < 60 + 30  # the launcher stopped rank 0 at once: nobody waited for the dead rank
    assert "process 1 of 2" in killed.stderr and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert read_checkpoint(run / "last.pt")["epoch"] < 3  # killed mid-run
    resumed = run_cli([*args(run), "--nproc", "2", "--resume"], cwd=work)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(outcome(tmp_path / "one"), outcome(run))
    assert_one_writer(tmp_path, work, run)


def test_each_global_batch_is_dealt_round_robin_over_the_ranks():
    order = np.arange(70)
    one = list(batch_rows(order, 32, None))
    shards = [list(batch_rows(order, 32, Dist(rank=r, world_size=4).shard)) for r in range(4)]
    assert [len(b) for b in one] == [32, 32, 6]
    for step, batch in enumerate(one):  # together the ranks hold exactly the single process's batch
        assert sorted(np.concatenate([s[step] for s in shards])) == sorted(batch)
    # A last global batch smaller than the world is dropped on every rank, so all ranks take the same steps.
    assert {len(list(batch_rows(np.arange(66), 32, Dist(rank=r, world_size=4).shard))) for r in range(4)} == {2}


def test_single_process_agree_and_launcher_argv():
    here = Dist()
    assert here.agree(lambda x: x + 1, 1) == 2 and here.gather_rows(np.ones(3)).tolist() == [1, 1, 1]
    with pytest.raises(MobilemedError, match="bad"):
        here.agree(lambda: (_ for _ in ()).throw(MobilemedError("bad")))
    assert without_nproc(["train", "d", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == ["train", "d", "--epochs", "1"]


def test_int8_probe_features_are_refused_on_several_processes_before_any_start(tmp_path):
    data = make_blob_folder(tmp_path / "data", per_class=4, size=32)
    argv = ["train", str(data), "--out", str(tmp_path / "run"), "--feature-precision", "int8", "--nproc", "2"]
    assert main(argv) == 2  # refused by the launcher itself: no process was started, nothing written
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA")
def test_cuda_and_amp_are_refused_without_a_gpu(tmp_path):
    assert resolve_device("auto", "off") == "cpu"
    with pytest.raises(MobilemedError, match="--device cuda"):
        resolve_device("cuda", "off")
    with pytest.raises(MobilemedError, match="--amp bf16 needs a CUDA device"):
        resolve_device("auto", "bf16")
    data = make_blob_folder(tmp_path / "data", per_class=4, size=32)
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--amp", "fp16"]) == 2
    assert not (tmp_path / "run").exists()
