"""Checkpoints that say how to use themselves: weights plus the ModelSpec, loaded with weights_only=True.

A checkpoint also says whether it is finished: training saves best.pt and last.pt every epoch with
complete=False (the operating threshold is still the untuned default), and only the best.pt written after
the operating point was chosen on validation carries complete=True. Consumers refuse the others unless
told --allow-incomplete, so a copied best.pt of a killed run cannot predict with exit 0 and no word.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write
from mobilemed.models import MobileNetClassifier, build_model
from mobilemed.models.build import load_state_checked
from mobilemed.ood import MahalanobisDetector
from mobilemed.spec import ModelSpec

FORMAT = "mobilemed-checkpoint-1"
from mobilemed.run_files import METRICS, RUN_STATE  # noqa: F401  (RUN_STATE is read from here too)
log = logging.getLogger(__name__)


def save_checkpoint(path, model: torch.nn.Module, spec: ModelSpec, **extra) -> Path:
    """Atomically write {"format", "model", "spec", **extra}; extra holds optimizer, scheduler, epoch,
    history, complete... (plain Python values and tensors only, so weights_only loading works)."""
    payload = {"format": FORMAT, "model": model.state_dict(), "spec": spec.to_dict(), **extra}
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return Path(path)


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise MobilemedError(f"checkpoint {path} does not exist")
    try:
        payload = _safe_load(path)
    except Exception as err:  # noqa: BLE001 - corrupt zip, pickle with objects, not a torch file ...
        raise MobilemedError(f"{path} is not a readable mobilemed checkpoint ({type(err).__name__}); "
                             "pass a best.pt or last.pt written by mobilemed train") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MobilemedError(f"{path} is not a mobilemed checkpoint (no spec inside); pass a best.pt or "
                             "last.pt from a mobilemed run folder, or plain weights via --weights")
    return payload


def read_spec(path, payload: dict) -> ModelSpec:
    """The checkpoint's spec, validated: a bad field is named, never a traceback from deep in torch."""
    try:
        return ModelSpec.from_dict(payload.get("spec"))
    except (ValueError, TypeError) as err:
        raise MobilemedError(f"{path} has an invalid model spec: {err}; it was edited or written by another "
                             "tool: retrain, or restore the best.pt of its run folder") from None


def load_checkpoint(path, *, allow_incomplete: bool = False) -> tuple[MobileNetClassifier, ModelSpec]:
    """(model in eval mode, spec) from a checkpoint file; refuses one from an unfinished run unless
    allow_incomplete (then it warns)."""
    payload = read_checkpoint(path)
    spec = read_spec(path, payload)
    require_complete(path, payload, allow_incomplete=allow_incomplete)
    try:
        model = build_model(spec)
    except MobilemedError as err:  # e.g. an architecture this version does not know
        raise MobilemedError(f"{path}: {err}") from None
    load_state_checked(model, payload.get("model"), f"{path}: the weights do not fit its spec ({spec.arch})",
                       "the checkpoint is inconsistent: retrain, or restore the best.pt of its run folder")
    return model.eval(), spec


def is_complete(payload: dict) -> bool:
    """Only a literal True counts; checkpoints from before the flag: the finished best.pt was the one
    saved without an epoch."""
    flag = payload.get("complete")
    return "epoch" not in payload if flag is None else flag is True


def require_complete(path, payload: dict | None = None, *, allow_incomplete: bool = False) -> None:
    """The one check every consumer makes. `path` is a checkpoint (payload: its contents, read when None)
    or a run folder (its run_state.json). Raises MobilemedError for an unfinished run,
    or only warns when allow_incomplete."""
    path = Path(path)
    if not path.exists():
        raise MobilemedError(f"{path} does not exist")
    if path.is_dir():
        state = _run_state(path)
        # A run folder from before run_state.json: metrics.json is written only when training finished.
        complete = state == "complete" if state is not None else (path / METRICS).is_file()
        what = f"run folder {path} is from a training run that did not finish ({state or 'no metrics.json'})"
        run_dir = path
    else:
        complete = is_complete(read_checkpoint(path) if payload is None else payload)
        what = f"{path} is from a training run that did not finish: its operating threshold was never chosen"
        run_dir = path.parent
    if complete:
        return
    if allow_incomplete:
        log.warning("%s; using it anyway (--allow-incomplete): its predictions are NOT validated", what)
        return
    raise MobilemedError(f"{what}; finish it with `mobilemed train DATA --out {run_dir} --resume` and the run's "
                         "options, or pass --allow-incomplete to use it anyway")


def _run_state(run_dir: Path) -> str | None:
    try:
        return str(json.loads((run_dir / RUN_STATE).read_text())["state"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return "unreadable run_state.json"


def load_state_dict_file(path) -> dict:
    """A user's plain state_dict (e.g. --weights PATH); a mobilemed checkpoint's model part also works."""
    path = Path(path)
    if not path.is_file():
        raise MobilemedError(f"weights file {path} does not exist")
    try:
        state = _safe_load(path)
    except Exception as err:  # noqa: BLE001
        raise MobilemedError(f"{path} is not a state_dict that loads safely ({type(err).__name__}); "
                             "save weights with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MobilemedError(f"{path} does not hold a state_dict (a mapping of parameter names to tensors)")
    return state


def _safe_load(path: Path):
    """torch.load with weights_only; its warnings about a corrupt file's pickle protocol are dropped, since
    the caller turns the failure into one clear error of its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def ood_payload(detector: MahalanobisDetector) -> dict:
    """The detector as checkpoint["ood"]: arrays as tensors, so weights_only loading reads it."""
    return {k: torch.from_numpy(v) if hasattr(v, "shape") else v for k, v in detector.to_state().items()}


def load_ood_detector(source) -> MahalanobisDetector | None:
    """The OOD detector stored in a checkpoint (a path or a read_checkpoint payload); None when it has none."""
    payload = read_checkpoint(source) if not isinstance(source, dict) else source
    state = payload.get("ood")
    if not state:
        return None
    try:
        return MahalanobisDetector.from_state({k: v.numpy() if isinstance(v, torch.Tensor) else v
                                               for k, v in state.items()})
    except (KeyError, ValueError) as err:
        raise MobilemedError(f"the checkpoint's OOD detector cannot be read ({err}); retrain the model "
                             "with this version of mobilemed") from None
