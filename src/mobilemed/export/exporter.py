"""export_checkpoint: best.pt -> one self-describing .onnx (optionally int8) and a parity report beside it.

The parity check is part of export, not an afterthought: the fp32 file must reproduce the checkpoint's
logits within 1e-3 on validation images or export fails; an int8 file reports validation AUROC and accuracy
for the checkpoint and for itself, so its cost is known before anyone deploys it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilemed.checkpoint import load_checkpoint, load_ood_detector
from mobilemed.errors import MobilemedError
from mobilemed.export.onnx_file import write_onnx
from mobilemed.export.run_images import run_split_images
from mobilemed.export.run_summary import run_summary
from mobilemed.fsutil import atomic_write
from mobilemed.io.pixels import resize_batch

log = logging.getLogger(__name__)
FP32_TOLERANCE = 1e-3
PARITY_SAMPLE = 256


@dataclass
class ExportResult:
    path: Path
    parity_path: Path
    parity: dict


def export_checkpoint(checkpoint, out=None, *, int8: bool = False, calibration_size: int = 512,
                      progress: bool = False) -> ExportResult:
    """Write CHECKPOINT as ONNX (fp32, or int8 calibrated on the run's validation split) and check parity.

    Returns the file, its parity report (also written as <file>.parity.json) and the numbers."""
    from mobilemed.onnx_model import OnnxModel

    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.with_suffix(".int8.onnx" if int8 else ".onnx")
    _check_out(out, checkpoint)
    model, spec = load_checkpoint(checkpoint)
    detector = load_ood_detector(checkpoint)
    run_dir = checkpoint.parent
    val_images, val_labels = run_split_images(run_dir, "val", spec, progress=progress)
    # Both paths see the same uint8 pixels at the model's size (MedMNIST arrives at 28 px), so the
    # parity check compares the graphs, not two resizers.
    val_images = resize_batch(val_images, spec.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = out if not int8 else Path(tmp) / "fp32.onnx"
        summary = {"trained_on": run_summary(run_dir)}
        write_onnx(model, spec, fp32_path, detector=detector, extra_metadata={"precision": "fp32", **summary})
        reference, reference_ood = _torch_outputs(model, spec, detector, val_images)
        fp32 = OnnxModel(fp32_path).forward(val_images)
        parity = {"checkpoint": str(checkpoint), "precision": "int8" if int8 else "fp32",
                  "validation_images": len(val_images),
                  "fp32_max_abs_logit_diff": float(np.abs(fp32["logits"] - reference).max())}
        if detector is not None:  # float32 in the graph against the detector's float64: a relative check
            parity["fp32_max_rel_ood_score_diff"] = float(np.max(np.abs(fp32["ood_score"] - reference_ood)
                                                                 / np.maximum(np.abs(reference_ood), 1e-6)))
        if parity["fp32_max_abs_logit_diff"] > FP32_TOLERANCE:
            out.unlink(missing_ok=True)
            raise MobilemedError(f"export of {checkpoint}: the ONNX graph's logits differ from the checkpoint's "
                                 f"by {parity['fp32_max_abs_logit_diff']:.2e} (> {FP32_TOLERANCE}); nothing "
                                 "was written. Run with --debug and report this as a bug")
        parity["checkpoint_val"] = _scores(reference, val_labels, spec)
        if int8:
            parity.update(_write_int8(fp32_path, out, spec, detector, run_dir, calibration_size, progress, summary,
                                      val_images, val_labels, reference))
    parity_path = out.with_name(out.name + ".parity.json")
    with atomic_write(parity_path) as handle:
        json.dump(parity, handle, indent=2)
    return ExportResult(out, parity_path, parity)


def _check_out(out: Path, checkpoint: Path) -> None:
    if out.is_dir():
        raise MobilemedError(f"--out {out} is a folder; name the .onnx file to write")
    if out.suffix.lower() != ".onnx":
        raise MobilemedError(f"--out {out}: an ONNX export is a file ending in .onnx")
    if out.resolve() == checkpoint.resolve():
        raise MobilemedError("--out names the checkpoint itself; choose another file")


def _torch_outputs(model, spec, detector, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The checkpoint's own logits and OOD scores (the torch path predict uses)."""
    from mobilemed.batch_predict import predict_features_and_logits

    features, logits = predict_features_and_logits(model, images, spec, tta=spec.tta)
    return logits, None if detector is None else detector.score(features)


def _write_int8(fp32_path: Path, out: Path, spec, detector, run_dir: Path, calibration_size: int, progress: bool,
                summary: dict, val_images: np.ndarray, val_labels: np.ndarray, reference: np.ndarray) -> dict:
    """Quantise, then choose the int8 model's own operating point on validation and write it into the file.

    int8 moves the logits (by up to a few units on a 224-px probe) while keeping their ranking: the AUROC
    barely changes but a threshold chosen on fp32 logits no longer sits where its rule put it. The int8 file
    is a model of its own, so it gets its threshold, temperature and OOD threshold the way training chose
    the checkpoint's: by the same rule, on the same validation split; the spec records both."""
    from mobilemed.export.quantize import FLOAT_TAIL, quantize_int8
    from mobilemed.io.pixels import match_channels
    from mobilemed.onnx_model import OnnxModel

    # Calibration uses the run's validation images only: scales fitted on test would leak it.
    calibration, _ = run_split_images(run_dir, "val", spec, progress=progress, limit=calibration_size)
    done = quantize_int8(fp32_path, out, match_channels(resize_batch(calibration, spec.image_size), spec.in_chans))
    details = {"calibration_split": "val", "calibration_images": done.calibration_images, "format": "QDQ",
               "per_channel": True, "activations": "uint8", "weights": "int8",
               "calibration_method": done.calibration_method, "float_tail": FLOAT_TAIL}
    int8_out = OnnxModel(out).forward(val_images)
    own = int8_operating_point(spec, detector, int8_out, val_labels, reference)
    _set_file_metadata(out, own, {"precision": "int8", "quantization": details, **summary})
    report = {"quantization": details, "int8_max_abs_logit_diff": float(np.abs(int8_out["logits"] - reference).max()),
              "int8_val_at_checkpoint_operating_point": _scores(int8_out["logits"], val_labels, spec),
              "int8_val": _scores(int8_out["logits"], val_labels, own),
              "int8_operating_point": {"thresholds": own.thresholds, "temperature": own.temperature,
                                       "ood_threshold": own.ood_threshold}}
    if detector is not None:
        report["int8_val_ood_flagged_share"] = float(np.mean(int8_out["ood_score"] > own.ood_threshold))
    return report


def int8_operating_point(spec, detector, int8_out: dict, labels: np.ndarray, reference: np.ndarray):
    """The spec with thresholds, temperature and OOD threshold re-chosen on the int8 outputs of validation
    images, by the rules the checkpoint's provenance records. Thresholds that training chose on augmented
    views (--threshold-views) are not re-chosen on the plain images, which would undo that choice: each is
    carried over by rank, to the int8 threshold that calls as many validation images positive as the
    checkpoint's did on `reference`, its fp32 validation logits (int8 keeps the ranking but for a few swaps
    near the cut, so the count, not the very images, is what can be kept exactly)."""
    from mobilemed.decision import probabilities
    from mobilemed.evaluation.calibration import fit_temperature
    from mobilemed.evaluation.thresholds import choose_thresholds, neutral_probabilities, recorded_neutral_logits

    record = dict(spec.provenance or {})
    chosen = record.get("thresholds") or {}
    rule, target = chosen.get("rule", spec.threshold_rule), chosen.get("target")
    logits = int8_out["logits"]
    calibrated = isinstance(record.get("temperature"), dict)  # training fitted one: refit it for int8
    temperature = float(fit_temperature(logits, labels, task=spec.task)) if calibrated else spec.temperature
    probs = probabilities(logits, spec, temperature)
    neutral = neutral_probabilities(recorded_neutral_logits(record), temperature)
    carried = bool(chosen.get("views"))  # only a binary or multi-label run can have chosen on views
    if carried:
        thresholds = _same_calls(probabilities(reference, spec, spec.temperature), probs, spec.thresholds)
    else:
        thresholds = [float(t) for t in choose_thresholds(labels, probs, task=spec.task, rule=rule, target=target,
                                                          neutral=neutral)] or spec.thresholds
    ood_threshold = spec.ood_threshold
    if detector is not None and "ood_score" in int8_out:
        ood_threshold = float(np.quantile(int8_out["ood_score"], detector.quantile_))
    record["int8"] = {"split": "val", "n": int(len(labels)), "rule": rule, "target": target,
                      "thresholds": "carried by rank from the checkpoint's (chosen on augmented views)" if carried
                      else "re-chosen by the rule",
                      "checkpoint_thresholds": spec.thresholds, "checkpoint_temperature": spec.temperature,
                      "checkpoint_ood_threshold": spec.ood_threshold}
    return dataclasses.replace(spec, thresholds=thresholds, temperature=temperature, ood_threshold=ood_threshold,
                               provenance=record)


def _same_calls(fp32_probs: np.ndarray, int8_probs: np.ndarray, thresholds: list[float]) -> list[float]:
    """Per output, the int8 threshold that calls as many validation images positive as the fp32 threshold
    did: halfway between the n-th and (n+1)-th highest int8 scores, n the fp32 count."""
    fp32_probs, int8_probs = fp32_probs.reshape(len(fp32_probs), -1), int8_probs.reshape(len(int8_probs), -1)
    moved = []
    for k, threshold in enumerate(thresholds):
        n = int((fp32_probs[:, k] >= threshold).sum())
        if n in (0, len(fp32_probs)):  # nothing to carry by rank: the checkpoint's threshold stays
            moved.append(float(threshold))
            continue
        ranked = np.sort(int8_probs[:, k])[::-1]
        moved.append(float((ranked[n - 1] + ranked[n]) / 2))
    return moved


def _set_file_metadata(path: Path, spec, extra: dict) -> None:
    import onnx

    from mobilemed.export.metadata import set_metadata

    proto = onnx.load(str(path))
    set_metadata(proto, spec, extra)
    with atomic_write(path, "wb") as handle:
        handle.write(proto.SerializeToString())


def _scores(logits: np.ndarray, labels: np.ndarray, spec) -> dict:
    """AUROC and accuracy at the stored operating point: the numbers that say what a format costs."""
    from mobilemed.decision import probabilities
    from mobilemed.evaluation.metrics import compute_metrics

    report = compute_metrics(labels, probabilities(logits, spec), task=spec.task, class_names=spec.class_names,
                             thresholds=spec.thresholds, n_bootstrap=0).to_dict()
    return {"auroc": report["auroc_macro"]["value"], "accuracy": report["accuracy"]["value"]}
