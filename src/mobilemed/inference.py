"""Predictor: a checkpoint's model plus its own preprocessing, thresholds and temperature.

Never imports training: a deployment needs only this, spec, models, data.transforms and io.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mobilemed.batch_predict import predict_logits
from mobilemed.checkpoint import load_checkpoint
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
        from mobilemed.evaluation.calibration import probabilities_from_logits

        logits = self.logits(images)
        probs = probabilities_from_logits(logits, self.spec.task, self.spec.temperature)
        return Predictions(list(files), logits, probs, self.predicted_labels(probs), [])

    def read_image(self, file) -> np.ndarray:
        """The file's pixels as this model reads them: its input size and its DICOM window choice."""
        return read_image(file, size=self.spec.image_size, use_voi=self.spec.dicom_voi)

    def predict_files(self, paths, *, skip_bad: bool = False) -> Predictions:
        files = expand_inputs(paths)
        images, kept, skipped = [], [], []
        for file in files:
            try:
                images.append(self.read_image(file))
                kept.append(file)
            except MobilemedError:
                if not skip_bad:
                    raise
                skipped.append(file)
        if not images:
            raise MobilemedError("no readable image among the inputs")
        mixed = len({img.ndim for img in images}) > 1
        batch = np.stack([_as_rgb(img) for img in images] if mixed else images)
        result = self.predict_images(batch, kept)
        result.skipped = skipped
        return result

    def predicted_labels(self, probs: np.ndarray) -> list[str]:
        names, thresholds = self.spec.class_names, self.spec.thresholds
        if self.spec.task == "binary":
            return [names[int(p >= thresholds[0])] for p in probs]
        if self.spec.task == "multiclass":
            return [names[k] for k in probs.argmax(axis=1)]
        hits = probs >= np.asarray(thresholds)[None, :]
        return ["|".join(n for n, h in zip(names, row) if h) or "none" for row in hits]


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

