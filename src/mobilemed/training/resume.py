"""--resume: continue a run only with the choices it was started with, checked before anything is written."""
from __future__ import annotations

import logging
from pathlib import Path

import yaml

from mobilemed.checkpoint import read_checkpoint, read_spec
from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError
from mobilemed.spec import ModelSpec
from mobilemed import run_files
from mobilemed.run_config import read_config
from mobilemed.training import run_folder
from mobilemed.training.config import TrainConfig, regroup

log = logging.getLogger(__name__)
# Fields that may differ between a run and its resume, because they change no number the run computes: the
# RunOptions part (where the folder is, the flags that select resume/overwrite, progress bars (--quiet), the
# Grad-CAM gallery, --strict (the leakage audit must pass either way), --skip-bad (split.csv must still match)
# and the bootstrap size of the final confidence intervals) and the config.yaml format version (a flat
# version-1 config is regrouped before the comparison). --epochs may grow only without a scheduler, whose
# learning-rate curve would otherwise already have been stretched over the old length. The compute part
# (device, mixed precision, timeout) may differ too: a run started on 8 GPUs may be resumed on 4 or on a CPU,
# at the price of bit-exactness (training/distributed.py).
MAY_DIFFER = ("run", "version", "compute")


def check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    """Refuse a resume whose settings differ from the run's config.yaml, listing every difference."""
    path = Path(run_dir) / run_files.CONFIG
    try:
        saved = read_config(run_dir)
    except MobilemedError as err:
        raise MobilemedError(f"--resume: {err}") from None
    if saved is None:
        return  # killed before config.yaml existed: nothing was trained, the run starts afresh
    saved = _flatten(saved if saved.get("version") else regroup(saved))
    ours = _flatten(yaml.safe_load(yaml.safe_dump(config.to_dict())))  # normalised as config.yaml was
    defaults = _flatten(yaml.safe_load(yaml.safe_dump(TrainConfig().to_dict())))
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}  # a field newer than the run: its default
    differences = config_differences(saved, ours)
    if ours["optim.scheduler"] == saved.get("optim.scheduler") == "none" and \
            isinstance(saved.get("optim.epochs"), int) and ours["optim.epochs"] >= saved["optim.epochs"]:
        differences = [d for d in differences if not d.startswith("optim.epochs:")]
    if differences:
        raise MobilemedError(f"--resume: this run differs from {path}: {'; '.join(differences)}; pass the run's own "
                             "options to continue it, or use --overwrite (or another --out) for a new run")


def config_differences(saved: dict, ours: dict) -> list[str]:
    """'name: saved -> now' for every field outside MAY_DIFFER whose value changed."""
    names = [k for k in {**saved, **ours} if k.split(".")[0] not in MAY_DIFFER]
    return [f"{k}: {saved.get(k, '(absent)')!r} -> {ours.get(k, '(absent)')!r}"
            for k in names if saved.get(k, "(absent)") != ours.get(k, "(absent)")]


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_state(run_dir: Path, spec: ModelSpec, table: ImageTable) -> dict | None:
    """last.pt's contents, after checking the model and the split still match; None when the run was killed
    before its first epoch ended (it then starts from epoch 1)."""
    last = Path(run_dir) / run_files.LAST
    if not last.exists():
        log.warning("--resume: %s has no last.pt (no epoch finished); training from epoch 1", run_dir)
        return None
    payload = read_checkpoint(last)
    theirs = read_spec(last, payload)
    ours_key = (spec.task, spec.class_names, spec.arch, spec.image_size, spec.in_chans)
    if (theirs.task, theirs.class_names, theirs.arch, theirs.image_size, theirs.in_chans) != ours_key:
        raise MobilemedError(f"--resume: {last} is a {theirs.task} {theirs.arch} model at {theirs.image_size} px "
                             f"for {theirs.class_names}, but this run is {spec.task} {spec.arch} at "
                             f"{spec.image_size} px for {spec.class_names}")
    check_resume_split(run_dir, table)
    return payload


def check_resume_split(run_dir: Path, table: ImageTable) -> None:
    """Refuse a resume whose images or split differ from the run's split.csv."""
    saved_split = Path(run_dir) / run_files.SPLIT
    if saved_split.is_file() and saved_split.read_text().splitlines() != \
            run_folder.split_csv_text(table).splitlines():
        raise MobilemedError(f"--resume: the images or their split differ from {saved_split}; resume with the "
                             "same data and split options, or use --overwrite for a new run")
