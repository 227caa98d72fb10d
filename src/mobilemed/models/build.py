"""Build a classifier from a spec: stock torchvision backbone, stem and head surgery, freezing."""
from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from mobilemed.models.registry import ALIASES, BACKBONES, BackboneInfo, get_backbone
from mobilemed.spec import ModelSpec


class Backbone(nn.Module):
    """features -> global average pool -> (B, D), then the entry's pretrained pre-logits (MobileNetV3)."""

    def __init__(self, tv_model: nn.Module, info: BackboneInfo):
        super().__init__()
        self.features = tv_model.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        kept = [tv_model.get_submodule(name) for name in info.pre_logits]
        self.pre_logits = nn.Sequential(*kept) if kept else nn.Identity()
        self.num_features = tv_model.get_submodule(info.classifier).in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D)
        return self._pooled(self.features(x))

    def forward_from(self, z: torch.Tensor, block: int) -> torch.Tensor:
        """(B, C_k, h, w) output of features[:block] -> (B, D): the rest of the backbone, so that a fine-tune
        on cached frozen blocks (training/prefix_finetune.py) runs exactly what forward runs after them."""
        return self._pooled(self.features[block:](z))

    def _pooled(self, maps: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) last feature maps -> (B, D)
        return self.pre_logits(torch.flatten(self.pool(maps), 1))


class MobileNetClassifier(nn.Module):
    """Backbone + Dropout/Linear head. A frozen backbone stays in eval mode, so its BatchNorm
    running statistics never drift while the head trains."""

    def __init__(self, backbone: Backbone, num_outputs: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_outputs))
        self.backbone_frozen = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs) logits
        return self.head(self.backbone(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, D) penultimate features, (B, num_outputs) logits) in one pass: the OOD detector reads the first."""
        features = self.backbone(x)
        return features, self.head(features)

    @property
    def feature_network(self) -> nn.Module:
        """The network whose penultimate features the OOD detector is fitted on and scores."""
        return self.backbone

    def freeze_backbone(self, frozen: bool = True) -> "MobileNetClassifier":
        self.backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "MobileNetClassifier":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self


def adapt_stem_to_gray(tv_model: nn.Module, first_conv: str) -> None:
    """Replace the 3-channel conv named first_conv by a 1-channel one whose kernel is the sum over RGB
    (timm's adapt_input_conv): a gray image g gives the response the RGB image (g, g, g) would."""
    conv = tv_model.get_submodule(first_conv)
    gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        gray.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    parent, _, name = first_conv.rpartition(".")
    setattr(tv_model.get_submodule(parent), name, gray)


def build_model(spec: ModelSpec, backbone_state: dict | None = None) -> MobileNetClassifier:
    """A classifier for `spec`. backbone_state: a state_dict for the stock torchvision model
    (ImageNet weights), loaded before stem and head surgery; None leaves random initialisation.
    A spec with ensemble_size > 1 gets an EnsembleClassifier of that many (models/ensemble.py)."""
    if spec.ensemble_size > 1:
        from mobilemed.models.ensemble import EnsembleClassifier

        single = dataclasses.replace(spec, ensemble_size=1)
        return EnsembleClassifier([build_model(single, backbone_state) for _ in range(spec.ensemble_size)], spec.task)
    info = get_backbone(spec.arch)
    tv_model = info.build()
    if backbone_state is not None:
        load_state_checked(tv_model, backbone_state, f"the weights do not fit {ALIASES.get(spec.arch, spec.arch)}",
                           "pass weights made for this architecture or choose the matching --arch")
    if spec.in_chans == 1:
        adapt_stem_to_gray(tv_model, info.first_conv)
    return MobileNetClassifier(Backbone(tv_model, info), spec.num_outputs, spec.dropout)


def load_state_checked(module: nn.Module, state: dict, problem: str, fix: str) -> None:
    """module.load_state_dict(state), or a MobilemedError of one short line: torch's own message lists
    every key (kilobytes for a wrong architecture)."""
    from mobilemed.errors import MobilemedError

    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError):
        raise MobilemedError(f"{problem}: {describe_mismatch(module, state)}; {fix}") from None


def describe_mismatch(module: nn.Module, state) -> str:
    """'12 missing keys (a, b, ...), 3 unexpected (...), 2 with another shape (...); they look like X'."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "not a mapping of parameter names to tensors"
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = [f"{len(keys)} {what} ({_first(keys)})" for keys, what in
             ((missing, "missing keys"), (unexpected, "unexpected keys"), (reshaped, "with another shape")) if keys]
    guess = guess_arch(state)
    return ", ".join(parts or ["tensors of another type"]) + (f"; they look like {guess} weights" if guess else "")


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def guess_arch(state: dict) -> str | None:
    """The registered architecture whose feature layers have exactly these names and shapes (the first
    conv is left out: a gray stem has one input channel), for plain torchvision and mobilemed layouts."""
    theirs = _feature_shapes(tuple((k, tuple(v.shape)) for k, v in state.items()))
    return next((name for name in BACKBONES if theirs and _arch_shapes(name) == theirs), None)


@functools.lru_cache(maxsize=None)
def _arch_shapes(arch: str) -> dict:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        state = BACKBONES[arch].build().state_dict()
    return _feature_shapes(tuple((k, tuple(v.shape)) for k, v in state.items()))


def _feature_shapes(named_shapes: tuple) -> dict:
    out = {}
    for key, shape in named_shapes:
        key = str(key).removeprefix("backbone.")
        if key.startswith("features.") and not key.startswith("features.0.0."):
            out[key] = shape
    return out
