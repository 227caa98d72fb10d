"""Predictor: a checkpoint's model plus its own preprocessing, thresholds and temperature.

Never imports training or evaluation: a deployment needs only this, spec, decision, models, data.transforms
and io.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilemed.batch_predict import predict_logits
from mobilemed.checkpoint import load_checkpoint
from mobilemed.decision import decisions, label_text, probabilities
from mobilemed.errors import MobilemedError
from mobilemed.io.images import is_image_file, read_image
from mobilemed.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    files: list[str]
    logits: np.ndarray        # (N, num_outputs)
    probabilities: np.ndarray  # binary (N,), otherwise (N, K)
    labels: list[str]          # predicted label (multilabel: findings joined by "|", or "none")
    skipped: list[str]
    skip_reasons: list[str] = field(default_factory=list)  # why each skipped file could not be read


class Predictor:
    def __init__(self, model: torch.nn.Module, spec: ModelSpec):
        self.model, self.spec = model.eval(), spec

    @classmethod
    def from_checkpoint(cls, path, *, allow_incomplete: bool = False) -> "Predictor":
        return cls(*load_checkpoint(path, allow_incomplete=allow_incomplete))

    @torch.inference_mode()
    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, H, W[, C]) uint8 pixels -> (N, num_outputs) logits, with the spec's test-time averaging."""
        return predict_logits(self.model, images, self.spec, batch_size=batch_size, tta=self.spec.tta)

    def predict_images(self, images: np.ndarray, files: list[str]) -> Predictions:
        logits = self.logits(images)
        probs = probabilities(logits, self.spec)
        return Predictions(list(files), logits, probs, self.predicted_labels(probs), [])

    def read_image(self, file) -> np.ndarray:
        """The file's pixels as this model reads them: its input size and its DICOM window choice."""
        return read_image(file, size=self.spec.image_size, use_voi=self.spec.dicom_voi)

    def predict_files(self, paths, *, skip_bad: bool = False) -> Predictions:
        files = expand_inputs(paths)
        images, kept, skipped, reasons = [], [], [], []
        for file in files:
            try:
                images.append(self.read_image(file))
                kept.append(file)
            except MobilemedError as err:
                if not skip_bad:
                    raise
                skipped.append(file)
                reasons.append(str(err))
        if not images:
            raise MobilemedError("no readable image among the inputs")
        mixed = len({img.ndim for img in images}) > 1
        batch = np.stack([_as_rgb(img) for img in images] if mixed else images)
        result = self.predict_images(batch, kept)
        result.skipped, result.skip_reasons = skipped, reasons
        return result

    def predicted_labels(self, probs: np.ndarray) -> list[str]:
        return label_text(decisions(probs, self.spec), self.spec)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Gray (H, W) and colour (H, W, 3) images mixed in one call: all become (H, W, 3)."""
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def expand_inputs(paths) -> list[str]:
    """Files as given, folders walked recursively for image and DICOM files, in a stable order."""
    files = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise MobilemedError(f"folder {path} holds no image or DICOM files")
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            raise MobilemedError(f"{path} does not exist")
    return files

