"""The Python API: one function per command, returning result objects, with the CLI's guarantees.

    from mobilemed import api as mm      # or: from mobilemed.api import train, evaluate, predict, ...
    run = mm.train("pneumoniamnist", out="runs/pneu", mode="finetune", image_size=64, epochs=5)
    print(run.metrics["test"]["auroc_macro"])
    model = mm.load_model(run.run_dir / "best.pt")          # torch or ONNX Runtime behind one object
    result = mm.predict(model, images)                       # (N, H, W[, C]) uint8 array, or files / folders
    mm.evaluate(model, "pneumoniamnist", split="test")       # metrics with CIs, OOD share
    mm.explain(model, ["xray.png"], "gradcam/")              # Grad-CAM overlays
    mm.audit("../shared/data/kermany_cxr_224")               # leakage, duplicates, label conflicts
    mm.export(run.run_dir / "best.pt", int8=True)            # self-describing .onnx with a parity report

Every function validates its inputs before the first side effect and raises mobilemed.MobilemedError with a
message that names the file or option, as the CLI does (which turns it into exit code 2).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mobilemed.data.sources import DataOptions


def train(data: str, *, out=None, **options):
    """Train on DATA; options are `mobilemed train`'s, as keyword arguments (mode="finetune", epochs=5,
    image_size=64, weights="imagenet", threshold_rule="youden", ..., and DataOptions fields such as
    label_column or group_column). Returns training.finish.TrainResult (run_dir, spec, metrics, history)."""
    from mobilemed.training.fit import fit

    return fit(train_config(data, out=out, **options))


def train_config(data: str, *, out=None, **options):
    """A TrainConfig from flat keyword arguments: each goes to the part of the config that owns that name."""
    from mobilemed.errors import MobilemedError
    from mobilemed.training.config import PARTS, TrainConfig

    parts = {"data_options": DataOptions, **PARTS}
    grouped = {name: {} for name in parts}
    if out is not None:
        grouped["run"]["run_dir"] = str(out)
    for key, value in options.items():
        owner = next((name for name, cls in parts.items() if key in {f.name for f in dataclasses.fields(cls)}), None)
        if owner is None:
            raise MobilemedError(f"train() got an unknown option {key!r}; see `mobilemed train --help`")
        grouped[owner][key] = value
    return TrainConfig(data=data, **{name: parts[name](**values) for name, values in grouped.items()})


def load_model(path, *, engine: str = "auto", allow_incomplete: bool = False):
    """A best.pt or exported .onnx, ready to predict (engines.load_predictor)."""
    from mobilemed.engines import load_predictor

    return load_predictor(path, engine=engine, allow_incomplete=allow_incomplete)


def predict(model, inputs, *, files=None, skip_bad: bool = False):
    """Predictions (probabilities, decisions at the stored operating point, OOD flags) of MODEL on `inputs`:
    a uint8 array (N, H, W[, C]) or a list of image / DICOM files and folders. `model` is a path or load_model()."""
    from mobilemed.errors import MobilemedError

    model = _loaded(model)
    if isinstance(inputs, np.ndarray):
        if inputs.dtype != np.uint8 or inputs.ndim not in (3, 4):
            raise MobilemedError(f"predict() takes uint8 images (N, H, W) or (N, H, W, C); got {inputs.dtype} "
                                 f"{inputs.shape}")
        names = list(files) if files is not None else [f"image_{i}" for i in range(len(inputs))]
        from mobilemed.io.pixels import resize_batch

        return model.predict_images(resize_batch(inputs, model.spec.image_size), names)
    from mobilemed.predictions import predict_paths

    return predict_paths(model, inputs, skip_bad=skip_bad)


def evaluate(model, data: str, *, split: str = "test", out=None, **options):
    """Metrics with CIs of MODEL on `split` of DATA ("all": every labelled image, external validation);
    options are evaluate_model's (positive_class, n_bootstrap, ...) and DataOptions fields."""
    from mobilemed.evaluate_model import evaluate_model

    fields = {f.name for f in dataclasses.fields(DataOptions)}
    data_options = DataOptions(**{k: options.pop(k) for k in list(options) if k in fields})
    return evaluate_model(_loaded(model), data, split=split, options=data_options, out=out, **options)


def explain(model, inputs, out_dir, *, target: str | None = None, skip_bad: bool = False):
    """Grad-CAM overlays of a checkpoint's model on image files / folders, written to out_dir."""
    from mobilemed.errors import MobilemedError
    from mobilemed.explain.files import explain_files

    if hasattr(model, "session") or str(model).lower().endswith(".onnx"):
        raise MobilemedError("Grad-CAM needs the checkpoint (best.pt): an exported .onnx model has no gradients")
    return explain_files(model, inputs, out_dir, target=target, skip_bad=skip_bad)


def audit(data: str, **options):
    """The data audit (leakage across splits, duplicates, label conflicts, counts) as an AuditReport."""
    from mobilemed.data.audit import audit_data

    return audit_data(data, DataOptions(**options), progress=False)


def export(checkpoint, out=None, *, int8: bool = False, calibration_size: int = 512):
    """A self-describing .onnx (and its parity report) from a run's best.pt: export.exporter.ExportResult."""
    from mobilemed.export.exporter import export_checkpoint

    return export_checkpoint(checkpoint, out, int8=int8, calibration_size=calibration_size)


def _loaded(model):
    return model if hasattr(model, "predict_images") else load_model(model)
