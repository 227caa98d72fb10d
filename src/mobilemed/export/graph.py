"""The module that is exported: uint8 pixels in, logits and penultimate features out.

Preprocessing and test-time averaging are part of the graph, so an exported file needs nothing but
the pixels at the model's input size: the ONNX path cannot drift from the checkpoint's.
"""
from __future__ import annotations

import torch
from torch import nn

from mobilemed.batch_predict import shifted_views
from mobilemed.data.transforms import normalise_pixels
from mobilemed.spec import ModelSpec

class ExportModule(nn.Module):
    """(N, S, S, in_chans) uint8 -> logits (N, num_outputs) float32, features (N, D) float32.

    With spec.tta the logits (and features) are averaged over the image and its four shifted copies,
    exactly as batch_predict.predict_logits does on the torch path."""

    def __init__(self, model: nn.Module, spec: ModelSpec):
        super().__init__()
        self.model, self.spec = model.eval(), spec

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalise_pixels(pixels, self.spec)  # (N, C, S, S)
        views = shifted_views(x) if self.spec.tta else [x]
        features = torch.stack([self.model.backbone(v) for v in views]).mean(0)  # (N, D)
        # The head is Dropout (identity in eval) + Linear, so the head of the mean feature equals the
        # mean of the views' logits that the torch path computes.
        return self.model.head(features), features


def example_input(spec: ModelSpec, batch: int = 2) -> torch.Tensor:
    """A uint8 batch of the model's input shape, for tracing."""
    return torch.zeros(batch, spec.image_size, spec.image_size, spec.in_chans, dtype=torch.uint8)
