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
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", disable=not progress, leave=False):
        x = to_model_input(np.asarray(images[start:start + batch_size]), spec)
        views = shifted_views(x) if tta else [x]
        logits = torch.stack([model(v.contiguous(memory_format=torch.channels_last)) for v in views]).mean(0)
        out.append(logits.numpy())
    return np.concatenate(out).astype(np.float32)


def shifted_views(x: torch.Tensor) -> list[torch.Tensor]:
    """(B, C, S, S) -> the image and four copies shifted by 3% (edges replicated): the TTA views."""
    size = int(x.shape[-1])  # a plain int, so an ONNX trace bakes the crop offsets in as constants
    shift = max(1, round(0.03 * size))
    pad = nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
    crops = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    return [pad[..., top:top + size, left:left + size] for top, left in crops]
