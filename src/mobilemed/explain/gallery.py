"""The report's gallery: the most confident true/false positives/negatives with their Grad-CAM overlays.

Selection is deterministic: within each kind the examples the model was most sure of come first (for
errors, the most confidently wrong ones, which are the ones worth a look); ties keep a seeded order.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from mobilemed.data.transforms import to_model_input
from mobilemed.decision import decisions, label_text
from mobilemed.explain.edge_heat import edge_heat
from mobilemed.explain.files import cam_caption, cam_targets
from mobilemed.explain.gradcam import cam_layer_for, compute_gradcam, randomised_weights_correlation, save_overlay
from mobilemed.fsutil import atomic_write
from mobilemed.spec import ModelSpec

log = logging.getLogger(__name__)
BINARY_KINDS = ("TP", "FP", "TN", "FN")
BATCH = 4  # Grad-CAM backpropagates from the CAM layer only (gradcam._AfterCamLayer); the forward to it ~15 MB an image


@dataclass
class Outcomes:
    """Per example: the kind it falls in, the class its heatmap explains and the model's probability
    for that class; confidence orders the examples within a kind."""

    kinds: list[str]        # every possible kind, in gallery order
    kind: np.ndarray        # (N,) str
    target: np.ndarray      # (N,) int class index explained by Grad-CAM
    probability: np.ndarray  # (N,) P(target class)
    confidence: np.ndarray  # (N,) higher = more sure of its decision
    true_label: list[str]
    predicted_label: list[str]


def write_gallery(model: nn.Module, spec: ModelSpec, images_uint8: np.ndarray, files, y_true: np.ndarray,
                  y_prob: np.ndarray, out_dir, *, per_kind: int = 4, seed: int = 0) -> list[dict]:
    """Write out_dir/<kind>_<i>.png overlays and out_dir/gallery.json; return the gallery entries.

    images_uint8: (N, H, W) or (N, H, W, 3) pixels at spec.image_size, as cached for evaluation.
    y_true / y_prob follow the package's prediction convention (binary y_prob = P(class_names[1])).
    Kinds: binary TP/FP/TN/FN at spec.thresholds[0]; multiclass correct_<class> / incorrect_<class>
    by predicted class; multilabel TP/FP/TN/FN for each image's most probable finding.
    Each entry: file, png (name inside out_dir), kind, true_label, predicted_label, probability
    (the model's probability for cam_target), cam_target (the class the heatmap explains), cam (method,
    layer and map_size [h, w] before upsampling: gradcam.CamLayer.to_dict), randomised_r (the
    heatmap's correlation with a re-initialised model's: gradcam.randomised_weights_correlation), edge_heat and
    peak_at_edge (how much of the heat lies on the image's edge, and whether its maximum does: edge_heat.py).
    """
    images = np.asarray(images_uint8)
    n = len(images)
    if not len(files) == len(y_true) == len(y_prob) == n:
        raise ValueError(f"images ({n}), files ({len(files)}), y_true ({len(y_true)}) and y_prob "
                         f"({len(y_prob)}) must have one entry per example")
    outcomes = classify_outcomes(spec, np.asarray(y_true), np.asarray(y_prob))
    picks = select_examples(outcomes, per_kind=per_kind, seed=seed)
    out_dir = Path(out_dir)
    cam = cam_layer_for(spec)
    entries = [_entry(outcomes, i, files[i], f"{outcomes.kind[i]}_{rank}.png", spec) | {"cam": cam.to_dict()}
               for i, rank in picks]
    for start in range(0, len(picks), BATCH):
        chunk = picks[start:start + BATCH]
        idx = np.array([i for i, _ in chunk])
        x = to_model_input(images[idx], spec)
        heatmaps = compute_gradcam(model, x, spec=spec, target_classes=outcomes.target[idx], cam=cam)
        randomised_r = randomised_weights_correlation(model, x, spec=spec, target_classes=outcomes.target[idx],
                                                      cam=cam, heatmaps=heatmaps, seed=seed)
        for (i, _), heat, r, entry in zip(chunk, heatmaps, randomised_r, entries[start:start + BATCH]):
            entry["randomised_r"] = round(float(r), 4)
            entry |= edge_heat(heat).to_dict()
            save_overlay(out_dir / entry["png"], images[i], heat, title=_title(entry), cam=cam)
    _remove_stale(out_dir, {e["png"] for e in entries})
    with atomic_write(out_dir / "gallery.json") as handle:
        json.dump(entries, handle, indent=2)
    log.info("gallery: %d overlays in %s (%s)", len(entries), out_dir, cam.describe())
    return entries


def classify_outcomes(spec: ModelSpec, y_true: np.ndarray, y_prob: np.ndarray) -> Outcomes:
    if spec.task == "binary":
        return _binary_outcomes(spec, y_true.astype(int), y_prob.astype(float))
    if spec.task == "multiclass":
        return _multiclass_outcomes(spec, y_true.astype(int), y_prob.astype(float))
    return _multilabel_outcomes(spec, y_true.astype(int), y_prob.astype(float))


def select_examples(outcomes: Outcomes, *, per_kind: int, seed: int = 0) -> list[tuple[int, int]]:
    """(example index, rank within its kind) for up to per_kind examples of each kind, most confident first."""
    order = np.random.default_rng(seed).permutation(len(outcomes.kind))  # tie-break only
    order = order[np.argsort(-outcomes.confidence[order], kind="stable")]
    picks = []
    for kind in outcomes.kinds:
        chosen = [i for i in order if outcomes.kind[i] == kind][:per_kind]
        picks += [(int(i), rank) for rank, i in enumerate(chosen)]
    return picks


def _binary_outcomes(spec: ModelSpec, y_true: np.ndarray, p: np.ndarray) -> Outcomes:
    pred, prob_pred = cam_targets(p, spec)  # the decision and the model's probability for it
    kind = np.array([("T" if t == q else "F") + ("P" if q else "N") for t, q in zip(y_true, pred)])
    return Outcomes(list(BINARY_KINDS), kind, pred, prob_pred, prob_pred, label_text(y_true, spec),
                    label_text(pred, spec))


def _multiclass_outcomes(spec: ModelSpec, y_true: np.ndarray, p: np.ndarray) -> Outcomes:
    pred, prob_pred = cam_targets(p, spec)
    safe = _safe_names(spec.class_names)
    kind = np.array([("correct_" if t == q else "incorrect_") + safe[q] for t, q in zip(y_true, pred)])
    kinds = [f"{verdict}_{name}" for name in safe for verdict in ("correct", "incorrect")]
    return Outcomes(kinds, kind, pred, prob_pred, prob_pred, label_text(y_true, spec), label_text(pred, spec))


def _multilabel_outcomes(spec: ModelSpec, y_true: np.ndarray, p: np.ndarray) -> Outcomes:
    top, p_top = cam_targets(p, spec)  # each image is judged on its most probable finding
    rows = np.arange(len(p))
    hits = decisions(p, spec)
    positive = hits[rows, top]
    truth = y_true[rows, top] == 1
    kind = np.array([("T" if t == q else "F") + ("P" if q else "N") for t, q in zip(truth, positive)])
    confidence = np.where(positive, p_top, 1 - p_top)
    return Outcomes(list(BINARY_KINDS), kind, top, p_top, confidence, label_text(y_true == 1, spec),
                    label_text(hits, spec))


def _entry(outcomes: Outcomes, i: int, file, png: str, spec: ModelSpec) -> dict:
    return {"file": str(file), "png": png, "kind": str(outcomes.kind[i]),
            "true_label": outcomes.true_label[i], "predicted_label": outcomes.predicted_label[i],
            "probability": round(float(outcomes.probability[i]), 6),
            "cam_target": spec.class_names[int(outcomes.target[i])]}


def _title(entry: dict) -> str:
    """Figure title; multi-label "A|B" becomes "A, B" so the title can wrap between findings."""
    true, predicted = (entry[key].replace("|", ", ") for key in ("true_label", "predicted_label"))
    return (f"{entry['kind']}  {Path(entry['file']).name}\ntrue: {true}   predicted: {predicted}   "
            + cam_caption(entry["cam_target"], entry["probability"]))


def _safe_names(class_names: list[str]) -> list[str]:
    """Class names fit for file names ("b/c" -> "b-c"), kept distinct with the class index."""
    safe = []
    for index, name in enumerate(class_names):
        cleaned = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "class"
        safe.append(cleaned if cleaned not in safe else f"{cleaned}-{index}")
    return safe


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete overlays a previous gallery.json listed that this one does not (never other files)."""
    old = out_dir / "gallery.json"
    if not old.is_file():
        return
    try:
        listed = {e["png"] for e in json.loads(old.read_text())}
    except (ValueError, TypeError, KeyError):
        return
    for name in listed - keep:
        path = out_dir / name
        if path.parent == out_dir and path.suffix == ".png":
            path.unlink(missing_ok=True)
