"""ImageNet weights for the registry's torchvision architectures: from our cache, torch's, or a download.

The only part of the cache that knows the model registry; torch and the registry are imported when used.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from mobilemed.assets.home import copy_atomic, file_digest, home, require_file
from mobilemed.assets.index import record
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)


def weights_path(arch: str) -> Path:
    return home() / "weights" / f"{arch}_imagenet.pth"


def load_imagenet_state(arch: str, *, download: bool = True) -> dict:
    """ImageNet state_dict for `arch` from our cache, torch's cache, or torchvision's download."""
    import torch

    from mobilemed.models.registry import get_backbone

    info = get_backbone(arch)
    if info.imagenet is None:
        raise MobilemedError(f"torchvision publishes no ImageNet weights for {arch}; use --weights PATH "
                             "with a state_dict for this architecture, or --weights none to train from scratch")
    ours = weights_path(arch)
    if ours.exists():
        return torch.load(ours, map_location="cpu", weights_only=True)
    enum = _weights_enum(info.imagenet)
    torch_cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if torch_cached.exists():
        return torch.load(torch_cached, map_location="cpu", weights_only=True)
    if download and not os.environ.get("MOBILEMED_OFFLINE"):
        try:
            return enum.get_state_dict(progress=True)
        except OSError as err:
            log.info("weight download failed: %s", err)
    raise MobilemedError(
        f"no ImageNet weights for {arch} offline. Get {enum.url} and run: mobilemed assets add FILE "
        f"--weights-for {arch}  (or pass --weights PATH, or --weights none to train from scratch)")


def _weights_enum(qualified: str):
    from torchvision import models as tvm

    enum_name, member = qualified.split(".")
    return getattr(getattr(tvm, enum_name), member)


def add_weights_file(source: Path, arch: str) -> Path:
    """Copy a state_dict into the cache as `arch`'s ImageNet weights, after checking that it loads."""
    import torch

    from mobilemed.models.registry import get_backbone

    require_file(source)
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
        get_backbone(arch).build().load_state_dict(state)
    except MobilemedError:
        raise
    except Exception as err:  # noqa: BLE001 - any load failure means: not weights for this arch
        raise MobilemedError(f"{source} is not a state_dict for {arch}: {str(err).splitlines()[0]}") from None
    target = weights_path(arch)
    copy_atomic(source, target)
    record(target, kind="weights", arch=arch, sha256=file_digest(target), source=str(source))
    return target
