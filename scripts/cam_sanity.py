"""Which CAM layer and method to use at 64 px: the sanity tests of tests/explain, per candidate.

    PYTHONPATH=src python scripts/cam_sanity.py --shared ../shared

Two models at 64 px: one trained to find a bright patch (mobilenet_v2_035 from scratch) and a linear
probe of ImageNet MobileNetV2 on real PneumoniaMNIST (tests/explain/cam_models.py). For Grad-CAM and
LayerCAM at MobileNetV2 blocks of several depths, one table row: the map size; the patch test (share of
30 held-out patch images whose mean heat inside the patch is over twice that outside, and the median of
that ratio), the same share for re-initialised models (mean over 4 seeds: a random network's heatmap
also lands on a bright patch sometimes, since the input alone drives its activations); the
randomised-weights test (Adebayo et al. 2018: mean correlation of the trained and re-initialised models'
heatmaps, over the same 4 seeds) on both models; and the share of PneumoniaMNIST heatmaps peaking in the
image's outer eighth (chance: 0.44).

A second table applies the same 64-px patch model to 128 and 224 px images (the patch stays 16 px) and
compares Grad-CAM at the stride-8, stride-16 and last block: at 224 px, is the last block's 7x7 map
enough, or is the stride-16 block's 14x14 better? (The model was trained at 64 px only, so its AUROC,
printed, drops at 224 px; the heatmaps still say where its evidence is.)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.explain.cam_models: the tests' models, trained the same way here

from mobilemed.data.transforms import to_model_input  # noqa: E402
from mobilemed.explain.gradcam import (METHODS, CamLayer, block_map_sizes, compute_gradcam,  # noqa: E402
                                       heatmap_correlation)
from mobilemed.models import build_model  # noqa: E402
from tests.explain import cam_models as cm  # noqa: E402

BLOCKS = [3, 6, 10, 13, 18]  # MobileNetV2 blocks at strides 4, 8, 16, 16, 32 (16x16 ... 2x2 at 64 px)
RANDOM_SEEDS = (0, 1, 2, 3)


def reinitialised(spec) -> list:
    models = []
    for seed in RANDOM_SEEDS:
        torch.manual_seed(seed)
        models.append(build_model(spec).eval())
    return models


def row(cam: CamLayer, patch, probe) -> str:
    (model, spec, x, target, corners), randoms = patch
    trained = compute_gradcam(model, x, spec=spec, target_classes=target, cam=cam)
    ratio = cm.inside_outside_ratio(trained, corners)
    random_maps = [compute_gradcam(m, x, spec=spec, target_classes=target, cam=cam) for m in randoms]
    random_share = np.mean([np.mean(cm.inside_outside_ratio(h, corners) > 2) for h in random_maps])
    r_patch = np.mean([heatmap_correlation(trained, h).mean() for h in random_maps])
    if probe is None:
        return (f"| {cam.layer.removeprefix('backbone.')} | {cam.map_size[0]}x{cam.map_size[1]} "
                f"| {np.mean(ratio > 2):.2f} | {np.median(ratio):.2f} | {random_share:.2f} | {r_patch:.2f} |")
    (model, spec, x, target, _), randoms = probe
    real = compute_gradcam(model, x, spec=spec, target_classes=target, cam=cam)
    r_real = np.mean([heatmap_correlation(real, compute_gradcam(m, x, spec=spec, target_classes=target, cam=cam))
                      .mean() for m in randoms])
    return (f"| {METHODS[cam.method]} | {cam.layer.removeprefix('backbone.')} | {cam.map_size[0]}x{cam.map_size[1]} "
            f"| {np.mean(ratio > 2):.2f} | {np.median(ratio):.2f} | {random_share:.2f} | {r_patch:.2f} "
            f"| {r_real:.2f} | {cm.border_peak_fraction(real):.2f} |")


def larger_inputs(model, spec) -> None:
    print("\n| input | AUROC | block | map | patch: share > 2 | patch: median ratio | re-initialised: share > 2 "
          "| randomised r (patch) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in (128, 224):
        sized = dataclasses.replace(spec, image_size=size)
        images, labels, corners = cm.patch_images(60, seed=1000, size=size)
        x = to_model_input(images, sized)
        with torch.no_grad():
            auroc = roc_auc_score(labels, model(x)[:, 0].numpy())
        keep = labels == 1
        patch = (model, sized, x[keep], [1] * keep.sum(), corners[keep]), reinitialised(sized)
        sizes = dict(block_map_sizes(spec.arch, size))
        for block in (6, 13, 18):
            layer = f"backbone.features.{block}"
            print(f"| {size} px | {auroc:.2f} " + row(CamLayer(layer, sizes[layer]), patch, None), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the shared data folder")
    args = parser.parse_args()
    shared = Path(args.shared)
    torch.set_num_threads(1)
    model, spec = cm.train_patch_model()
    images, labels, corners = cm.patch_images(60, seed=1000)  # held out, as in the tests
    keep = labels == 1
    patch = (model, spec, to_model_input(images[keep], spec), [1] * keep.sum(), corners[keep]), reinitialised(spec)

    state = torch.load(shared / "weights/mobilenet_v2_imagenet.pth", map_location="cpu", weights_only=True)
    npz = shared / "data/medmnist/pneumoniamnist.npz"
    model, spec = cm.train_pneumonia_probe(npz, state)
    images, _ = cm.pneumonia_images(npz, "test", 60, seed=1)
    x = to_model_input(images, spec)
    with torch.no_grad():
        predicted = (model(x)[:, 0] > 0).long().tolist()
    probe = (model, spec, x, predicted, None), reinitialised(spec)

    print("| method | block | map | patch: share > 2 | patch: median ratio | re-initialised: share > 2 "
          "| randomised r (patch) | randomised r (PneumoniaMNIST) | PneumoniaMNIST peaks at border |")
    print("|---|---|---|---|---|---|---|---|---|")
    sizes = dict(block_map_sizes("mobilenet_v2", 64))
    for method in METHODS:
        for block in BLOCKS:
            layer = f"backbone.features.{block}"
            print(row(CamLayer(layer, sizes[layer], method), patch, probe), flush=True)
    larger_inputs(*patch[0][:2])


if __name__ == "__main__":
    main()
