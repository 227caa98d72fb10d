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

from mobilemed.batch_predict import predict_features_and_logits, predict_logits
from mobilemed.checkpoint import load_checkpoint, load_ood_detector
from mobilemed.decision import decisions, label_text, probabilities
from mobilemed.errors import MobilemedError
from mobilemed.io.dicom import dicom_modality, is_dicom
from mobilemed.io.images import is_image_file, read_image
from mobilemed.ood import MahalanobisDetector
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
    ood_score: np.ndarray | None = None        # (N,) feature distance; None when the model has no detector
    in_distribution: np.ndarray | None = None  # (N,) bool: passed the feature score and the modality check
    ood_reason: list[str] | None = None        # why an image was flagged ("" when it was not)


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
        if self.ood is None:
            logits = self.logits(images)
        else:  # features and logits in one pass
            features, logits = predict_features_and_logits(self.model, images, self.spec, batch_size=64,
                                                           tta=self.spec.tta)
        probs = probabilities(logits, self.spec)
        result = Predictions(list(files), logits, probs, self.predicted_labels(probs), [])
        if self.ood is not None:
            result.ood_score = self.ood.score(features)
            result.in_distribution = self.ood.in_distribution(result.ood_score)
            result.ood_reason = ["" if ok else f"feature distance {score:.1f} above the model's threshold "
                                 f"{self.ood.threshold_:.1f}"
                                 for ok, score in zip(result.in_distribution, result.ood_score)]
        return result

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
        self.check_modalities(result)
        return result

    def check_modalities(self, result: Predictions) -> None:
        """Flag DICOM files whose Modality the model never saw in training (a CT given to a CR/DX model).

        Only models trained on DICOM know their modalities; for an image-only model the modality of its
        JPEGs is unknown, so a DICOM is judged by the feature score alone and the reason names the file kind."""
        if result.in_distribution is None:
            return
        for i, file in enumerate(result.files):
            if not is_dicom(file):
                continue
            modality, _ = dicom_modality(file)
            if self.spec.modalities and modality not in self.spec.modalities:
                result.in_distribution[i] = False
                reason = (f"DICOM modality {modality or 'missing'}, the model was trained on "
                          f"{', '.join(self.spec.modalities)}")
                result.ood_reason[i] = "; ".join(filter(None, [reason, result.ood_reason[i]]))
            elif not result.in_distribution[i] and "dicom" not in self.spec.source_formats:
                result.ood_reason[i] += (f" (DICOM modality {modality or 'missing'}; the model was trained on "
                                         f"{', '.join(self.spec.source_formats) or 'non-DICOM'} files)")

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

