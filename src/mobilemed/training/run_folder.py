"""The run folder is the lab notebook: config, split, versions, history, metrics, checkpoints, plots.

Its file names, and the saved predictions' writer next to their reader, live in mobilemed/run_files.py
(a floor every reader can import); this module writes the parts that need yaml, torch or the image table."""
from __future__ import annotations

import csv
import io
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import yaml

from mobilemed.data.table import ImageTable
from mobilemed.fsutil import atomic_write
from mobilemed.run_files import CONFIG, SPEC, SPLIT, VERSIONS, write_json

PACKAGES = ("mobilemed", "torch", "torchvision", "numpy", "scikit-learn", "scipy", "pydicom", "medmnist",
            "onnxruntime", "pillow", "matplotlib")


def default_run_dir(data: str, mode: str) -> Path:
    name = Path(data).name.removesuffix(".csv") or "data"
    return Path("runs") / f"{name}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_config(run_dir: Path, config: dict, spec: dict) -> None:
    with atomic_write(run_dir / CONFIG) as handle:
        yaml.safe_dump({"config": config, "spec": spec}, handle, sort_keys=False)
    write_json(run_dir / SPEC, spec)


def write_versions(run_dir: Path, seed: int, **extra) -> None:
    """versions.json: packages, platform, seed, threads, git sha, command, and `extra` (e.g. distributed:
    world size and backend)."""
    import torch

    versions = {name: _version(name) for name in PACKAGES}
    versions.update(python=sys.version.split()[0], platform=platform.platform(), seed=seed,
                    torch_threads=torch.get_num_threads(), git_sha=_git_sha(), command=" ".join(sys.argv), **extra)
    write_json(run_dir / VERSIONS, versions)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_split(run_dir: Path, table: ImageTable) -> None:
    """split.csv: one row per image with its split, group and label(s)."""
    with atomic_write(run_dir / SPLIT) as handle:
        handle.write(split_csv_text(table))


def split_csv_text(table: ImageTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if table.is_multilabel:
        writer.writerow(["path", "split", "group", *table.class_names])
        for i in range(len(table)):
            writer.writerow([table.paths[i], table.splits[i], _group(table, i),
                             *[int(v) for v in table.labels[i]]])
    else:
        writer.writerow(["path", "split", "group", "label"])
        for i in range(len(table)):
            writer.writerow([table.paths[i], table.splits[i], _group(table, i),
                             table.class_names[int(table.labels[i])]])
    return buffer.getvalue()


def _group(table: ImageTable, i: int) -> str:
    return "" if table.groups is None else str(table.groups[i])
