"""Checkpoints that say how to use themselves: weights plus the ModelSpec, loaded with weights_only=True."""
from __future__ import annotations

from pathlib import Path

import torch

from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write
from mobilemed.models import MobileNetClassifier, build_model
from mobilemed.ood import MahalanobisDetector
from mobilemed.spec import ModelSpec

FORMAT = "mobilemed-checkpoint-1"


def save_checkpoint(path, model: torch.nn.Module, spec: ModelSpec, **extra) -> Path:
    """Atomically write {"format", "model", "spec", **extra}; extra holds optimizer, scheduler, epoch,
    history... (plain Python values and tensors only, so weights_only loading works)."""
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
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt zip, pickle with objects, not a torch file ...
        raise MobilemedError(f"{path} is not a readable mobilemed checkpoint ({type(err).__name__}); "
                             "pass a best.pt or last.pt written by mobilemed train") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MobilemedError(f"{path} is not a mobilemed checkpoint (no spec inside); pass a best.pt or "
                             "last.pt from a mobilemed run folder, or plain weights via --weights")
    return payload


def load_checkpoint(path) -> tuple[MobileNetClassifier, ModelSpec]:
    """(model in eval mode, spec) from a checkpoint file."""
    payload = read_checkpoint(path)
    spec = ModelSpec.from_dict(payload["spec"])
    model = build_model(spec)
    model.load_state_dict(payload["model"])
    return model.eval(), spec


def load_state_dict_file(path) -> dict:
    """A user's plain state_dict (e.g. --weights PATH); a mobilemed checkpoint's model part also works."""
    path = Path(path)
    if not path.is_file():
        raise MobilemedError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise MobilemedError(f"{path} is not a state_dict that loads safely ({type(err).__name__}); "
                             "save weights with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MobilemedError(f"{path} does not hold a state_dict (a mapping of parameter names to tensors)")
    return state


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
