"""Grad-CAM heatmaps (Selvaraju et al. 2017) for any registry backbone, and overlays a person can read.

The target layer is chosen by the map size it gives at the model's input size (`cam_layer_for`): the
deepest block of the backbone's `features` whose output is at least 8x8. The last block (stride 32) is
the usual choice, but at 64 px it is 2x2 and the upsampled maps can only light up a quadrant, which
shows up as maps peaking at the borders; at 64 px the choice is the stride-8 block (8x8), at 224 px the
stride-16 block (14x14), and from 256 px on the last block. scripts/cam_sanity.py is the evidence: on a
64-px model trained to find a bright patch, Grad-CAM at the 8x8 block puts the patch's heat at over twice
the rest in 83% of held-out images (0% at the 2x2 last block; LayerCAM, made for shallower layers, 63%),
and its heatmaps are uncorrelated with those of re-initialised models (Adebayo et al. 2018), there and on a
real PneumoniaMNIST probe; at 224 px the 14x14 block's median patch-to-rest ratio is twice the 7x7's.
The heavy lifting is done by pytorch-grad-cam (the `explain` extra); this module only chooses layer and
targets and keeps the model unchanged. An ensemble (train --ensemble, --cv-ensemble) is explained by the mean
of its members' maps for the class the ensemble decides.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from mobilemed.decision import decisions, probabilities
from mobilemed.errors import MissingExtraError, MobilemedError
from mobilemed.fsutil import atomic_save_figure
from mobilemed.models import build_model, get_backbone
from mobilemed.spec import ModelSpec

log = logging.getLogger(__name__)
MIN_CAM_CELLS = 8  # the map a CAM layer must give (per side) before upsampling, for inputs of 64 px and more
METHODS = {"gradcam": "Grad-CAM", "layercam": "LayerCAM"}
CAM_METHOD = "gradcam"


@dataclass(frozen=True)
class CamLayer:
    """Where and how the heatmaps are computed: recorded in gallery.json and stated in the report."""

    layer: str                 # module name inside the model, e.g. backbone.features.6
    map_size: tuple[int, int]  # (h, w) of that layer's output, i.e. of the heatmap before upsampling
    method: str = CAM_METHOD   # a key of METHODS
    members: int = 1           # > 1: an ensemble's heatmap, the mean of its members' maps

    @property
    def averaged(self) -> str:
        return f", the mean of {self.members} members' maps" if self.members > 1 else ""

    def describe(self) -> str:
        h, w = self.map_size
        return f"{METHODS[self.method]} at {self.layer} ({h}x{w} map before upsampling){self.averaged}"

    def to_dict(self) -> dict:
        return {"method": METHODS[self.method], "layer": self.layer, "map_size": list(self.map_size),
                "members": self.members}


def cam_layer_for(spec: ModelSpec, method: str = CAM_METHOD) -> CamLayer:
    """The CAM layer of spec.arch at spec.image_size: the deepest block whose map is at least 8x8 (for
    inputs under 64 px, at least image_size / 8, so never shallower than stride 8)."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of: {', '.join(METHODS)}")
    sizes = block_map_sizes(spec.arch, spec.image_size)
    cells = min(MIN_CAM_CELLS, -(-spec.image_size // 8))
    name, size = [(n, hw) for n, hw in sizes if min(hw) >= cells][-1]
    return CamLayer(name, size, method, members=spec.ensemble_size)


@functools.lru_cache(maxsize=32)
def block_map_sizes(arch: str, image_size: int) -> tuple[tuple[str, tuple[int, int]], ...]:
    """(module name inside our model, output (h, w)) of every block of the backbone's features, shallow
    to deep, from a forward pass on the meta device (shapes only: no memory, no arithmetic)."""
    info = get_backbone(arch)
    with torch.device("meta"):
        blocks = info.build().eval().get_submodule(info.cam_blocks)
        x = torch.empty(1, 3, image_size, image_size)
        sizes = []
        for index, block in enumerate(blocks):
            x = block(x)
            sizes.append((f"backbone.{info.cam_blocks}.{index}", (int(x.shape[-2]), int(x.shape[-1]))))
    return tuple(sizes)


def compute_gradcam(model: nn.Module, images: torch.Tensor, *, spec: ModelSpec,
                    target_classes: int | Sequence[int] | None = None,
                    cam: CamLayer | None = None) -> np.ndarray:
    """Grad-CAM heatmaps of `model` on normalised input `images` (B, C, H, W), H = W = spec.image_size.

    target_classes: one class index (into spec.class_names) for every image, one per image, or None
    for the default target (`default_targets`: the predicted class; multilabel: the most probable
    finding). Binary models have one logit: class 1 is explained by that logit, class 0 by its negative.
    cam: layer and method; default cam_layer_for(spec).
    Returns: heatmaps (B, H, W) float32 in [0, 1], each scaled to its own maximum.
    The model's train/eval modes, requires_grad flags and .grad tensors are as before, and no hook
    is left behind.
    """
    cam = cam or cam_layer_for(spec)
    if isinstance(getattr(model, "members", None), nn.ModuleList):
        return _ensemble_gradcam(model, images, spec, target_classes, cam)
    FeatureCAM, targets_for = _import_grad_cam(cam.method)
    layer = _cam_layer(model, spec, cam.layer)
    # Callers often sit in a no_grad or inference_mode block; Grad-CAM needs autograd whatever they chose.
    with _preserved_state(model), torch.inference_mode(False), torch.enable_grad():
        model.eval()  # BatchNorm running statistics and no dropout, as at prediction time
        classes = _resolve_targets(model, images, spec, target_classes)
        for p in model.parameters():
            # Grad-CAM needs d(logit)/d(activation) only; parameter gradients would be wasted work.
            p.requires_grad_(False)
        network, x, layer = _from_cam_layer(model, images, cam.layer, layer)
        explainer = FeatureCAM(model=network, target_layers=[layer])
        try:
            cams = explainer(input_tensor=x, targets=[targets_for(spec.task, k) for k in classes])  # (B, h, w)
        finally:
            # The library's own __exit__ would also release the hooks, but it swallows IndexError
            # (printing it); releasing here removes the hooks and lets every error through.
            explainer.activations_and_grads.release()
    _log_once(cam, spec.arch, spec.image_size)
    heatmaps = upsample_cam(np.nan_to_num(cams.astype(np.float32)), tuple(images.shape[-2:]))
    return np.clip(heatmaps, 0.0, 1.0)


def _ensemble_gradcam(model: nn.Module, images: torch.Tensor, spec: ModelSpec, target_classes,
                      cam: CamLayer) -> np.ndarray:
    """An ensemble's heatmaps (models/ensemble.py): the mean of its members' Grad-CAM maps for one class per
    image (the ensemble's own decision unless told), each member's map scaled to its maximum as
    compute_gradcam gives it, the mean scaled again. Every member weighs the same, as its probability does in
    the ensemble's mean; a region only one member relies on comes out fainter than one all of them use."""
    with _preserved_state(model), torch.no_grad():
        model.eval()
        classes = _resolve_targets(model, images, spec, target_classes)
    single = dataclasses.replace(spec, ensemble_size=1)
    maps = np.mean([compute_gradcam(member, images, spec=single, target_classes=classes, cam=cam)
                    for member in model.members], axis=0)  # (B, H, W)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return np.clip(maps / np.maximum(peak, 1e-12)[:, None, None], 0.0, 1.0).astype(np.float32)


def randomised_weights_correlation(model: nn.Module, images: torch.Tensor, *, spec: ModelSpec,
                                   target_classes: Sequence[int], cam: CamLayer | None = None,
                                   heatmaps: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The randomised-weights sanity check (Adebayo et al. 2018) per image: Pearson correlation of
    the heatmap of `model` (or the given `heatmaps`) with that of the same architecture re-initialised
    (build_model's initialisation, seeded). An explanation that survives losing the weights explains
    the input, not the model: faithful heatmaps correlate weakly (well under 0.5)."""
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        torch.manual_seed(seed)
        randomised = build_model(spec).eval()
    if heatmaps is None:
        heatmaps = compute_gradcam(model, images, spec=spec, target_classes=target_classes, cam=cam)
    return heatmap_correlation(heatmaps, compute_gradcam(randomised, images, spec=spec,
                                                         target_classes=target_classes, cam=cam))


def heatmap_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B,) Pearson correlation of two stacks of heatmaps (B, H, W). A constant heatmap (all zero when
    nothing in the image supports the class, common for a re-initialised model) counts as 0."""
    return np.array([np.corrcoef(x.ravel(), y.ravel())[0, 1] if x.std() > 0 and y.std() > 0 else 0.0
                     for x, y in zip(a, b)], dtype=np.float64)


def upsample_cam(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, h, w) maps of a strided layer -> (B, H, W), each cell placed at its receptive-field centre.

    torchvision's stride-2 convs have odd kernels with padding k // 2, so output j is centred on input
    2j, and cell j of a stride-32 map on pixel 32j. A plain resize puts it at 32j + 15.5 instead,
    which shifts every heatmap half a cell (15.5 px) down and to the right."""
    b, h, w = cams.shape
    axes = [_cell_coordinates(n_in, n_out) for n_in, n_out in zip(size, (h, w))]
    gy, gx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).expand(b, *size, 2)  # grid_sample wants (x, y) in [-1, 1]
    out = torch.nn.functional.grid_sample(torch.from_numpy(cams)[:, None], grid, mode="bilinear",
                                          padding_mode="border", align_corners=True)
    return out[:, 0].numpy()


def _cell_coordinates(n_in: int, n_out: int) -> torch.Tensor:
    """Normalised (align_corners=True) map coordinate of every input pixel along one axis."""
    stride, n = 1, n_in
    while n > n_out:  # a chain of stride-2 layers maps n pixels to ceil(n / 2)
        n, stride = (n + 1) // 2, stride * 2
    if n == n_out:
        cell = torch.arange(n_in, dtype=torch.float32) / stride
    else:  # not a stride-2 chain: fall back to the plain-resize convention
        cell = (torch.arange(n_in, dtype=torch.float32) + 0.5) * n_out / n_in - 0.5
    return cell / max(n_out - 1, 1) * 2 - 1


def default_targets(probs: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(N,) class index a heatmap explains unless told otherwise: the predicted class (decision.decisions);
    a multilabel model predicts a set, so there the most probable finding. probs: decision.probabilities."""
    if spec.task == "multilabel":
        return np.asarray(probs).argmax(axis=1)
    return decisions(probs, spec)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured heatmap (H', W') in [0, 1] over a uint8 image (H, W) or (H, W, 3).

    Returns: (H, W, 3) uint8. The heatmap is resized to the image if their sizes differ."""
    from matplotlib import colormaps

    rgb = _as_rgb_float(image)
    heat = _resize_heatmap(heatmap, rgb.shape[:2])
    colour = colormaps["jet"](heat)[..., :3]
    return np.clip(np.rint(255 * ((1 - alpha) * rgb + alpha * colour)), 0, 255).astype(np.uint8)


def save_overlay(path, image: np.ndarray, heatmap: np.ndarray, title: str | None = None,
                 cam: CamLayer | None = None) -> Path:
    """Write a PNG (atomically) with the image and its Grad-CAM overlay side by side and a colorbar;
    cam (how the heatmap was computed) names method, layer and map size above the overlay."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no GUI backend

    gray = image.ndim == 2 or image.shape[-1] == 1
    # Long multi-label titles are wrapped to the figure's width (~95 characters at 9 pt), never clipped.
    title_lines = [w for line in (title or "").splitlines() for w in textwrap.wrap(line, 95)]
    height = 3.4 + 0.18 * len(title_lines)
    # Fixed margins, not layout="constrained": the layout solver took a third of each overlay's time.
    fig = Figure(figsize=(7.2, height), dpi=110)
    fig.subplots_adjust(left=0.01, right=0.93, bottom=0.02, top=1 - (0.3 + 0.16 * len(title_lines)) / height,
                        wspace=0.05)
    left, right = fig.subplots(1, 2)
    left.imshow(image.squeeze(), cmap="gray" if gray else None, vmin=0, vmax=255)
    left.set_title("image", fontsize=9)
    right.imshow(overlay_heatmap(image, heatmap))
    how = f" at {cam.layer.removeprefix('backbone.')} ({cam.map_size[0]}x{cam.map_size[1]} map{cam.averaged})" \
        if cam else ""
    right.set_title(f"{METHODS[cam.method] if cam else 'Grad-CAM'} overlay{how}", fontsize=9)
    for ax in (left, right):
        ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), ax=right, fraction=0.046, pad=0.03)
    bar.set_label("relative importance", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title_lines:
        fig.suptitle("\n".join(title_lines), fontsize=9)
    # zlib level 1: a quarter less time per overlay than the default level 6 (0.24 -> 0.18 s here).
    return atomic_save_figure(fig, path, pil_kwargs={"compress_level": 1})


@functools.lru_cache(maxsize=32)
def _log_once(cam: CamLayer, arch: str, image_size: int) -> None:
    log.info("heatmaps: %s of %s at %d px", cam.describe(), arch, image_size)
    if image_size < 8 * MIN_CAM_CELLS:
        log.warning("at %d px the CAM layer of %s gives a %dx%d map: the heatmaps locate coarsely; use an "
                    "image size of %d px or more", image_size, arch, *cam.map_size, 8 * MIN_CAM_CELLS)


def _import_grad_cam(method: str):
    try:
        from pytorch_grad_cam import GradCAM, LayerCAM
        from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget
    except ImportError:
        raise MissingExtraError("grad-cam", "explain", "Grad-CAM") from None

    class FeatureCAM({"gradcam": GradCAM, "layercam": LayerCAM}[method]):
        """The CAM returning maps at the target layer's resolution (still ReLU'd and scaled to [0, 1]);
        upsample_cam then places them on the input without the library's half-cell shift."""

        def get_target_width_height(self, input_tensor):
            return None

    def targets_for(task: str, k: int):
        # Binary models have one logit; the library's binary target negates it for class 0.
        return BinaryClassifierOutputTarget(k) if task == "binary" else ClassifierOutputTarget(k)

    return FeatureCAM, targets_for


def _cam_layer(model: nn.Module, spec: ModelSpec, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the model has no module {name!r} (the Grad-CAM layer of {spec.arch}); "
                         "was it built with mobilemed.models.build_model?") from None


class _AfterCamLayer(nn.Module):
    """The part of a build_model classifier after block `index` of its backbone's features, fed that block's
    output through `entry` (the Grad-CAM target layer). Grad-CAM needs the CAM layer's activations and
    d(logit)/d(activation) only, so the blocks before it run once without autograd and backpropagation
    stops at the layer: same heatmaps, a fraction of the time and memory, so a gallery runs in one batch."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.entry, self.model, self.index = nn.Identity(), model, index

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        backbone = self.model.backbone
        features = backbone.features[self.index + 1:](self.entry(activation))
        return self.model.head(backbone.pre_logits(torch.flatten(backbone.pool(features), 1)))


def _from_cam_layer(model: nn.Module, images: torch.Tensor, layer_name: str, layer: nn.Module):
    """(network, input, target layer) for the CAM library: the part after the CAM layer fed its activations
    when the layer is a block of a build_model backbone's features, else the whole model fed the images."""
    prefix, _, index = layer_name.rpartition(".")
    features = getattr(getattr(model, "backbone", None), "features", None)
    if prefix == "backbone.features" and index.isdigit() and isinstance(features, nn.Sequential) \
            and hasattr(model, "head"):
        with torch.no_grad():
            activation = features[:int(index) + 1](images)
        network = _AfterCamLayer(model, int(index))
        return network, activation.detach().requires_grad_(True), network.entry
    # The input carries the graph, so activations of a frozen backbone still get gradients.
    return model, images.detach().clone().requires_grad_(True), layer  # a clone is a normal tensor


def _resolve_targets(model: nn.Module, images: torch.Tensor, spec: ModelSpec, target_classes) -> list[int]:
    batch = images.shape[0]
    if target_classes is None:
        with torch.no_grad():
            return default_targets(probabilities(model(images).float().numpy(), spec), spec).tolist()
    classes = [int(target_classes)] * batch if np.ndim(target_classes) == 0 else [int(k) for k in target_classes]
    if len(classes) != batch:
        raise ValueError(f"target_classes has {len(classes)} entries for {batch} images")
    bad = [k for k in classes if not 0 <= k < spec.num_classes]
    if bad:
        raise MobilemedError(f"target class {bad[0]} is out of range: the model has {spec.num_classes} classes "
                             f"({', '.join(spec.class_names)}), indexed from 0")
    return classes


@contextlib.contextmanager
def _preserved_state(model: nn.Module):
    """Restore every module's train/eval mode and every parameter's requires_grad and .grad on exit
    (pytorch-grad-cam calls model.eval() and model.zero_grad())."""
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad


def _as_rgb_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) -> float (H, W, 3) in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an image (H, W) or (H, W, 3), got shape {image.shape}")
    return image.astype(np.float32) / 255.0


def _resize_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != size:
        t = torch.from_numpy(heat)[None, None]
        heat = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.clip(heat, 0.0, 1.0)
