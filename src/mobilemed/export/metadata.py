"""The ModelSpec inside an ONNX file's metadata: written by export, read by the torch-free runtime.

Imports: stdlib, errors and spec only, so reading an exported model never needs torch or onnx.
"""
from __future__ import annotations

import json

from mobilemed.errors import MobilemedError
from mobilemed.spec import ModelSpec

FORMAT = "mobilemed-onnx-1"
INPUT_NAME = "pixels"  # outputs: "logits", "features" and, when the model has a detector, "ood_score"


def set_metadata(proto, spec: ModelSpec, extra: dict) -> None:
    """The spec (class names, task, input size, channels, mean/std, thresholds, temperature, DICOM
    window, TTA) and anything extra (e.g. quantisation) as metadata_props strings."""
    del proto.metadata_props[:]
    entries = {"mobilemed_format": FORMAT, "mobilemed_spec": spec.to_json(),
               **{f"mobilemed_{k}": json.dumps(v) for k, v in extra.items()}}
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "mobilemed"


def read_metadata(custom: dict, path) -> tuple[ModelSpec, dict]:
    """(spec, extra) from an ONNX file's metadata map (onnxruntime's custom_metadata_map or onnx's props)."""
    if custom.get("mobilemed_format") != FORMAT:
        raise MobilemedError(f"{path} is not an ONNX file written by `mobilemed export` (no mobilemed spec in "
                             "its metadata); export the checkpoint with `mobilemed export best.pt`")
    try:
        spec = ModelSpec.from_dict(json.loads(custom["mobilemed_spec"]))
    except (KeyError, ValueError, TypeError) as err:
        raise MobilemedError(f"{path}: the mobilemed spec in its metadata is unreadable ({err})") from None
    extra = {k.removeprefix("mobilemed_"): json.loads(v) for k, v in custom.items()
             if k.startswith("mobilemed_") and k not in ("mobilemed_format", "mobilemed_spec")}
    return spec, extra
