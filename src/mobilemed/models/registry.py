"""The backbone registry: a plain dict. Adding a backbone is one entry; the contract tests pick it up."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torchvision import models as tvm

from mobilemed.spec import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone and the metadata that drives surgery on it (timm's pretrained cfg).

    build() returns a stock torchvision model; imagenet names its torchvision weights enum member (None
    where torchvision publishes none). Module names inside that stock model: first_conv, the stem conv
    a 1-channel model replaces; classifier, the ImageNet Linear our head replaces; pre_logits, modules
    before it that are pretrained features in their own right and stay with the backbone. cam_blocks,
    the Sequential whose blocks are the Grad-CAM candidates (our wrapper keeps it as backbone.<name>);
    the block is chosen by the map size it gives at the model's input size (explain.gradcam.cam_layer_for).
    mean/std and input_size are what the weights were trained on.
    """

    build: Callable
    imagenet: str | None
    cam_blocks: str = "features"
    first_conv: str = "features.0.0"
    classifier: str = "classifier.1"
    pre_logits: tuple[str, ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: int = 224
    # Every MobileNet downsamples 32x: below 32 px the last feature map is empty (0 x 0) and the model
    # sees nothing. The CLI refuses a smaller --image-size naming the architecture.
    min_image_size: int = 32

    def normalisation(self, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for 3-channel input, or for a 1-channel stem summed over RGB (build.adapt_stem_to_gray):
        a gray image then stands for (g, g, g), whose statistics are the average of the three channels'."""
        if in_chans == 3:
            return self.mean, self.std
        if in_chans == 1:
            return (sum(self.mean) / 3,), (sum(self.std) / 3,)
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")


def _v2(width: float) -> BackboneInfo:
    weights = "MobileNet_V2_Weights.IMAGENET1K_V1" if width == 1.0 else None
    # Its classifier is Dropout -> Linear.
    return BackboneInfo(partial(tvm.mobilenet_v2, width_mult=width), weights)


def _v3(build: Callable, weights: str) -> BackboneInfo:
    # V3's classifier is Linear -> Hardswish -> Dropout -> Linear; the first two are pretrained features
    # in their own right, so they stay with the backbone and only the last Linear is replaced.
    return BackboneInfo(build, weights, classifier="classifier.3", pre_logits=("classifier.0", "classifier.1"))


BACKBONES: dict[str, BackboneInfo] = {
    "mobilenet_v2_035": _v2(0.35),
    "mobilenet_v2_050": _v2(0.5),
    "mobilenet_v2_075": _v2(0.75),
    "mobilenet_v2": _v2(1.0),
    "mobilenet_v2_140": _v2(1.4),
    "mobilenet_v3_small": _v3(tvm.mobilenet_v3_small, "MobileNet_V3_Small_Weights.IMAGENET1K_V1"),
    "mobilenet_v3_large": _v3(tvm.mobilenet_v3_large, "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
}
ALIASES = {"mobilenet_v2_100": "mobilenet_v2"}


def get_backbone(arch: str) -> BackboneInfo:
    from mobilemed.errors import MobilemedError

    arch = ALIASES.get(arch, arch)
    if arch not in BACKBONES:
        raise MobilemedError(f"unknown architecture {arch!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[arch]
