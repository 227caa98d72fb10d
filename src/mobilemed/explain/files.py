"""explain_files: Grad-CAM overlays for image / DICOM files, the library verb behind `mobilemed explain`.

Which class a heatmap explains and how its caption reads are decided here once (cam_targets, cam_caption)
and shared with the run's gallery (explain/gallery.py), so an overlay says the same in both places.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilemed.data.positive_class import class_index
from mobilemed.data.transforms import to_model_input
from mobilemed.decision import class_probabilities
from mobilemed.errors import MobilemedError
from mobilemed.explain.gradcam import CamLayer, cam_layer_for, compute_gradcam, default_targets, save_overlay
from mobilemed.fsutil import check_output_dir
from mobilemed.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class ExplainedImage:
    file: str
    png: Path               # the overlay written
    predicted: str          # the model's decision as label text (multi-label: "A|B" or "none")
    target: str             # the class the heatmap explains
    probability: float      # the model's probability for that class
    heatmap: np.ndarray     # (h, w) in [0, 1]


@dataclass
class ExplainResult:
    images: list[ExplainedImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why it could not be read)
    cam: CamLayer | None = None  # method, layer and map size of the heatmaps


def cam_targets(probs: np.ndarray, spec: ModelSpec, chosen: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((N,) class index each heatmap explains, (N,) the model's probability for it): `chosen` when given,
    else the predicted class (multi-label: the most probable finding). probs: decision.probabilities."""
    target = default_targets(probs, spec) if chosen is None else np.full(len(probs), chosen)
    return target, class_probabilities(probs, spec)[np.arange(len(probs)), target]


def cam_caption(class_name: str, probability: float) -> str:
    return f"Grad-CAM for {class_name} (p = {probability:.2f})"


def target_index(spec: ModelSpec, name: str | None) -> int | None:
    """Index of the class NAME to explain (exact, else case-insensitive), None when not given."""
    index = None if name is None else class_index(spec.class_names, name)
    if name is not None and index is None:
        raise MobilemedError(f"--class {name!r} is not a class of this model; choose one of: "
                             f"{', '.join(spec.class_names)}")
    return index


def explain_files(model, inputs, out_dir, *, target: str | None = None, skip_bad: bool = False,
                  allow_incomplete: bool = False) -> ExplainResult:
    """Write out_dir/<stem>_gradcam.png for every image / DICOM file in `inputs` (files or folders).

    model: a checkpoint path or an inference.Predictor. target: the class (multi-label: finding) to explain,
    by name; default the predicted class. skip_bad: unreadable files are skipped and listed instead of
    stopping. Raises MobilemedError (naming the file or option) before writing anything when out_dir, the
    class name or the checkpoint is unusable, and when no input is readable."""
    from mobilemed.inference import Predictor, expand_inputs

    check_output_dir(out_dir)
    predictor = model if isinstance(model, Predictor) else \
        Predictor.from_checkpoint(model, allow_incomplete=allow_incomplete)
    spec, chosen = predictor.spec, target_index(predictor.spec, target)
    cam = cam_layer_for(spec)  # the layer (and so the map size) every overlay is computed at
    files, out_dir, result = expand_inputs(inputs), Path(out_dir), ExplainResult([], cam=cam)
    for file, png in zip(files, output_names(files)):
        try:
            image = predictor.read_image(file)  # (H, W) or (H, W, 3) uint8
        except MobilemedError as err:
            if not skip_bad:
                raise
            result.skipped.append((file, str(err)))
            continue
        prediction = predictor.predict_images(image[None], [file])
        (index,), (prob,) = cam_targets(prediction.probabilities, spec, chosen)
        heatmap = compute_gradcam(predictor.model, to_model_input(image[None], spec), spec=spec,
                                  target_classes=[int(index)], cam=cam)[0]
        explained = ExplainedImage(file, out_dir / png, prediction.labels[0], spec.class_names[index],
                                   float(prob), heatmap)
        save_overlay(explained.png, image, heatmap, title=f"{Path(file).name}   predicted: {explained.predicted}\n"
                                                          f"{cam_caption(explained.target, explained.probability)}",
                     cam=cam)
        result.images.append(explained)
    if not result.images:
        raise MobilemedError("no readable image among the inputs")
    return result


def output_names(files: list[str]) -> list[str]:
    """<stem>_gradcam.png, numbered when two inputs share a stem (e.g. the same name in two folders)."""
    names, seen = [], {}
    for file in files:
        stem = Path(file).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}_gradcam.png" if seen[stem] == 1 else f"{stem}_{seen[stem]}_gradcam.png")
    return names
