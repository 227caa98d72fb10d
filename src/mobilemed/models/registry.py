"""The backbone registry: a plain dict. Adding a backbone is one entry; the contract tests pick it up."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torchvision import models as tvm


@dataclass(frozen=True)
class BackboneInfo:
    """build() returns a stock torchvision model; imagenet names its torchvision weights enum member
    (None where torchvision publishes none); cam_layer is the Grad-CAM target inside our wrapper."""

    build: Callable
    imagenet: str | None
    cam_layer: str
    pre_logits: bool = False  # MobileNetV3 keeps its pretrained Linear+Hardswish before the head
    # Every MobileNet downsamples 32x: below 32 px the last feature map is empty (0 x 0) and the model
    # sees nothing. The CLI refuses a smaller --image-size naming the architecture.
    min_image_size: int = 32


def _v2(width: float) -> BackboneInfo:
    weights = "MobileNet_V2_Weights.IMAGENET1K_V1" if width == 1.0 else None
    # The last block of `features` is the 1x1 conv to 1280 (x width) channels: the deepest layer that
    # still has a spatial map (7x7 at 224 px), the standard Grad-CAM target for MobileNetV2.
    return BackboneInfo(partial(tvm.mobilenet_v2, width_mult=width), weights, "backbone.features.18")


BACKBONES: dict[str, BackboneInfo] = {
    "mobilenet_v2_035": _v2(0.35),
    "mobilenet_v2_050": _v2(0.5),
    "mobilenet_v2_075": _v2(0.75),
    "mobilenet_v2": _v2(1.0),
    "mobilenet_v2_140": _v2(1.4),
    # For V3 the last spatial layer is again the final 1x1 conv of `features` (576 / 960 channels).
    "mobilenet_v3_small": BackboneInfo(tvm.mobilenet_v3_small, "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                                       "backbone.features.12", pre_logits=True),
    "mobilenet_v3_large": BackboneInfo(tvm.mobilenet_v3_large, "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
                                       "backbone.features.16", pre_logits=True),
}
ALIASES = {"mobilenet_v2_100": "mobilenet_v2"}


def get_backbone(arch: str) -> BackboneInfo:
    from mobilemed.errors import MobilemedError

    arch = ALIASES.get(arch, arch)
    if arch not in BACKBONES:
        raise MobilemedError(f"unknown architecture {arch!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[arch]
