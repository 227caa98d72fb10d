"""Predictor: a checkpoint's model plus its own preprocessing, thresholds and temperature.

Never imports training or evaluation: a deployment needs only this, spec, decision, models, data.transforms
and io.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from mobilemed.batch_predict import predict_features_and_logits, predict_logits
from mobilemed.checkpoint import load_checkpoint, load_ood_detector
from mobilemed.io.images import read_image
from mobilemed.ood import MahalanobisDetector
from mobilemed.predictions import Predictions, answer, expand_inputs, predict_paths  # noqa: F401  (re-exported)
from mobilemed.spec import ModelSpec

log = logging.getLogger(__name__)


class Predictor:
    def __init__(self, model: torch.nn.Module, spec: ModelSpec, ood: MahalanobisDetector | None = None):
        self.model, self.spec, self.ood = model.eval(), spec, ood

    @classmethod
    def from_checkpoint(cls, path, *, allow_incomplete: bool = False) -> "Predictor":
        return cls(*load_checkpoint(path, allow_incomplete=allow_incomplete), ood=load_ood_detector(path))

    @torch.inference_mode()
    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, H, W[, C]) uint8 pixels -> (N, num_outputs) logits, with the spec's test-time averaging."""
        return predict_logits(self.model, images, self.spec, batch_size=batch_size, tta=self.spec.tta)

    def predict_images(self, images: np.ndarray, files: list[str]) -> Predictions:
        """Decisions (and OOD flags when the checkpoint has a detector) for uint8 pixels of `files`."""
        if self.ood is None:
            return answer(self.spec, self.logits(images), files)
        features, logits = predict_features_and_logits(self.model, images, self.spec, batch_size=64,
                                                       tta=self.spec.tta)  # one pass for both
        return answer(self.spec, logits, files, self.ood.score(features))

    def read_image(self, file) -> np.ndarray:
        """The file's pixels as this model reads them: its input size and its DICOM window choice."""
        return read_image(file, size=self.spec.image_size, use_voi=self.spec.dicom_voi)

    def predict_files(self, paths, *, skip_bad: bool = False) -> Predictions:
        """Every image of `paths` (files or folders) at once; prediction.predict_to_csv streams instead."""
        return predict_paths(self, paths, skip_bad=skip_bad)
