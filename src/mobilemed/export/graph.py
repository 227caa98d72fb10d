"""The module that is exported: uint8 pixels in; logits, penultimate features and the OOD score out.

Preprocessing, test-time averaging and the out-of-distribution detector are part of the graph, so an
exported file needs nothing but the pixels at the model's input size: the ONNX path cannot drift from
the checkpoint's (batch_predict.predict_features_and_logits is the torch twin of forward below).
"""
from __future__ import annotations

import torch
from torch import nn

from mobilemed.batch_predict import shifted_views
from mobilemed.data.transforms import normalise_pixels
from mobilemed.ood import MahalanobisDetector
from mobilemed.spec import ModelSpec


class OodScore(nn.Module):
    """MahalanobisDetector.score as tensor ops: (N, D) features -> (N,) smallest squared distance.

    In float64, as the detector computes it: a precision matrix fitted on few images is badly conditioned
    (entries of 1e16 are possible), and float32 would then lose the distance to rounding."""

    def __init__(self, detector: MahalanobisDetector):
        super().__init__()
        self.normalize = detector.normalize
        self.register_buffer("means", torch.as_tensor(detector.means_, dtype=torch.float64))  # (K, D)
        self.register_buffer("precision", torch.as_tensor(detector.precision_, dtype=torch.float64))  # (D, D)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.double()
        if self.normalize:
            x = x / torch.clamp(torch.linalg.vector_norm(x, dim=-1, keepdim=True), min=1e-12)
        centred = x[:, None, :] - self.means[None]  # (N, K, D)
        return ((centred @ self.precision) * centred).sum(-1).min(dim=1).values  # (N,) float64


class ExportModule(nn.Module):
    """(N, S, S, in_chans) uint8 -> logits (N, num_outputs), features (N, D) float32[, ood_score (N,) float64].

    With spec.tta the logits are averaged over the image and its four shifted copies; the features (and
    so the OOD score) are the unshifted image's, exactly as predict_features_and_logits computes them."""

    def __init__(self, model: nn.Module, spec: ModelSpec, detector: MahalanobisDetector | None = None):
        super().__init__()
        self.model, self.spec = model.eval(), spec
        self.ood = OodScore(detector) if detector is not None else None

    def forward(self, pixels: torch.Tensor):
        x = normalise_pixels(pixels, self.spec)  # (N, C, S, S)
        views = shifted_views(x) if self.spec.tta else [x]
        outputs = [self.model.features_and_logits(v) for v in views]  # the centre view first
        features = outputs[0][0]  # (N, D)
        logits = torch.stack([z for _, z in outputs]).mean(0)
        if self.ood is None:
            return logits, features
        return logits, features, self.ood(features)


def output_names(detector: MahalanobisDetector | None) -> tuple[str, ...]:
    return ("logits", "features") + (("ood_score",) if detector is not None else ())


def example_input(spec: ModelSpec, batch: int = 2) -> torch.Tensor:
    """A uint8 batch of the model's input shape, for tracing."""
    return torch.zeros(batch, spec.image_size, spec.image_size, spec.in_chans, dtype=torch.uint8)
