"""Batched predictions of an eval-mode model on cached uint8 pixels, shared by training and inference
so that preprocessing and test-time averaging cannot drift between them."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mobilemed.data.transforms import to_model_input
from mobilemed.spec import ModelSpec


@torch.inference_mode()
def predict_logits(model: nn.Module, images: np.ndarray, spec: ModelSpec, *, batch_size: int = 128,
                   tta: bool = False, progress: bool = False) -> np.ndarray:
    """(N, num_outputs) logits of an eval-mode model on cached uint8 pixels.

    tta averages the logits of the image and four 3%-shifted copies; it changes no weights and is
    applied identically on validation and test."""
    model.eval()
    out, device = [], next(model.parameters()).device  # a model trained on CUDA is validated there
    for x in _input_batches(images, spec, batch_size, progress):
        views = shifted_views(x.to(device)) if tta else [x.to(device)]
        logits = torch.stack([model(v.contiguous(memory_format=torch.channels_last)) for v in views]).mean(0)
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


@torch.inference_mode()
def predict_features_and_logits(model: nn.Module, images: np.ndarray, spec: ModelSpec, *, batch_size: int = 128,
                                tta: bool = False, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) penultimate features and (N, num_outputs) logits of a classifier in one pass (of an ensemble:
    its first member's features, models/ensemble.py).

    The logits are exactly predict_logits'. Under tta the features are those of the unshifted image
    only: the OOD detector was fitted and thresholded on unshifted images, and averaging shifted views
    would pull every score towards the class means and make the threshold too lenient."""
    model.eval()
    features, logits = [], []
    for x in _input_batches(images, spec, batch_size, progress):
        views = shifted_views(x) if tta else [x]  # the centre view is views[0]
        outputs = [model.features_and_logits(v.contiguous(memory_format=torch.channels_last)) for v in views]
        features.append(outputs[0][0].numpy())  # (B, D): the centre view's
        logits.append(torch.stack([z for _, z in outputs]).mean(0).numpy())
    return np.concatenate(features).astype(np.float32), np.concatenate(logits).astype(np.float32)


def _input_batches(images: np.ndarray, spec: ModelSpec, batch_size: int, progress: bool):
    for start in tqdm(range(0, len(images), batch_size), desc="predict", disable=not progress, leave=False):
        yield to_model_input(np.asarray(images[start:start + batch_size]), spec)  # (B, C, S, S)


def shifted_views(x: torch.Tensor) -> list[torch.Tensor]:
    """(B, C, S, S) -> the image and four copies shifted by 3% (edges replicated): the TTA views."""
    size = int(x.shape[-1])  # a plain int, so an ONNX trace bakes the crop offsets in as constants
    shift = max(1, round(0.03 * size))
    pad = nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
    crops = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    return [pad[..., top:top + size, left:left + size] for top, left in crops]
