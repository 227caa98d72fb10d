"""What a model says about a batch of images, whatever ran it (torch or ONNX Runtime): one Predictions type,
built in one place from logits (and the out-of-distribution score), plus the file handling prediction shares.

Imports: numpy, the decision rule, io and spec only, so the torch-free ONNX path uses it as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilemed.decision import decisions, label_text, probabilities
from mobilemed.errors import MobilemedError
from mobilemed.io.dicom import dicom_modality, is_dicom
from mobilemed.io.images import is_image_file
from mobilemed.spec import ModelSpec


@dataclass
class Predictions:
    files: list[str]
    logits: np.ndarray        # (N, num_outputs)
    probabilities: np.ndarray  # binary (N,), otherwise (N, K)
    labels: list[str]          # the decision at the stored operating point (multilabel: "A|B" or "none")
    skipped: list[str] = field(default_factory=list)       # files that could not be read (--skip-bad)
    skip_reasons: list[str] = field(default_factory=list)  # why each skipped file could not be read
    ood_score: np.ndarray | None = None        # (N,) feature distance; None when the model has no detector
    in_distribution: np.ndarray | None = None  # (N,) bool: passed the feature score and the modality check
    ood_reason: list[str] | None = None        # why an image was flagged ("" when it was not)


def answer(spec: ModelSpec, logits: np.ndarray, files, ood_scores: np.ndarray | None = None) -> Predictions:
    """Probabilities, decisions and (when the model has a detector) the OOD flags of one batch."""
    probs = probabilities(logits, spec)
    result = Predictions(list(files), np.asarray(logits), probs, label_text(decisions(probs, spec), spec))
    if ood_scores is not None and spec.ood_threshold is not None:
        result.ood_score = np.asarray(ood_scores, dtype=np.float64)
        result.in_distribution = result.ood_score <= spec.ood_threshold
        result.ood_reason = ["" if ok else f"feature distance {score:.1f} above the model's threshold "
                             f"{spec.ood_threshold:.1f}" for ok, score in zip(result.in_distribution, result.ood_score)]
        flag_unseen_modalities(result, spec)
    return result


def flag_unseen_modalities(result: Predictions, spec: ModelSpec) -> None:
    """Flag DICOM files whose Modality the model never saw in training (a CT given to a CR/DX model).

    Only models trained on DICOM know their modalities; for an image-only model the modality of its
    JPEGs is unknown, so a DICOM is judged by the feature score alone and the reason names the file kind."""
    for i, file in enumerate(result.files):
        if not is_dicom(file):
            continue
        modality, _ = dicom_modality(file)
        if spec.modalities and modality not in spec.modalities:
            result.in_distribution[i] = False
            reason = f"DICOM modality {modality or 'missing'}, the model was trained on {', '.join(spec.modalities)}"
            result.ood_reason[i] = "; ".join(filter(None, [reason, result.ood_reason[i]]))
        elif not result.in_distribution[i] and "dicom" not in spec.source_formats:
            result.ood_reason[i] += (f" (DICOM modality {modality or 'missing'}; the model was trained on "
                                     f"{', '.join(spec.source_formats) or 'non-DICOM'} files)")


def predict_paths(predictor, paths, *, skip_bad: bool = False) -> Predictions:
    """Every image of `paths` (files or folders) in one batch, for any predictor (torch or ONNX Runtime);
    prediction.predict_to_csv streams a folder of any size instead."""
    batch, kept, skipped, reasons = read_batch(predictor.read_image, expand_inputs(paths), skip_bad=skip_bad)
    if batch is None:
        raise MobilemedError("no readable image among the inputs")
    result = predictor.predict_images(batch, kept)
    result.skipped, result.skip_reasons = skipped, reasons
    return result


def read_batch(read_image, files: list[str], *, skip_bad: bool) -> tuple[np.ndarray | None, list, list, list]:
    """(stacked pixels or None, files read, files skipped, reasons) of one batch of files, in order."""
    images, kept, skipped, reasons = [], [], [], []
    for file in files:
        try:
            images.append(read_image(file))
            kept.append(file)
        except MobilemedError as err:
            if not skip_bad:
                raise
            skipped.append(file)
            reasons.append(str(err))
    return (stack_images(images) if images else None), kept, skipped, reasons


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """One batch: gray (H, W) and colour (H, W, 3) images mixed in one batch all become (H, W, 3)."""
    if len({img.ndim for img in images}) > 1:
        images = [img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1) for img in images]
    return np.stack(images)


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
