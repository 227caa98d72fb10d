"""OnnxModel: an exported model run by ONNX Runtime, with no torch anywhere on the path.

A reading-room machine installs numpy, Pillow, pydicom and onnxruntime (`pip install 'mobilemed[serve]'`)
and predicts with the file `mobilemed export` wrote: the graph takes uint8 pixels at the model's input size
and applies the checkpoint's normalisation and test-time averaging itself; the spec in the file's metadata
carries class names, thresholds, temperature and the DICOM window choice.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilemed.errors import MissingExtraError, MobilemedError
from mobilemed.export.metadata import INPUT_NAME, read_metadata
from mobilemed.io.images import read_image
from mobilemed.io.pixels import match_channels, resize_batch
from mobilemed.predictions import Predictions, answer


class OnnxModel:
    """A `mobilemed export` file in ONNX Runtime: the same predict_images / read_image as inference.Predictor."""

    def __init__(self, path, *, threads: int | None = None):
        ort = _require_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise MobilemedError(f"model file {path} does not exist")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise MobilemedError(f"{path} is not a loadable ONNX model ({type(err).__name__}); pass a file "
                                 "written by `mobilemed export`") from None
        self.path = path
        self.spec, self.extra = read_metadata(self.session.get_modelmeta().custom_metadata_map, path)

    def forward(self, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """(N, H, W[, C]) uint8 -> {"logits": (N, num_outputs), "features": (N, D)[, "ood_score": (N,)]}.

        Images not at the model's size are resized first (bilinear, as files are read)."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise MobilemedError(f"{self.path} takes uint8 pixels; got {images.dtype}")
        images = resize_batch(images, self.spec.image_size)
        pixels = match_channels(np.ascontiguousarray(images), self.spec.in_chans)
        names = [output.name for output in self.session.get_outputs()]
        chunks = [self.session.run(None, {INPUT_NAME: pixels[start:start + batch_size]})
                  for start in range(0, len(pixels), batch_size)]
        return {name: np.concatenate([chunk[i] for chunk in chunks]) for i, name in enumerate(names)}

    def logits(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self.forward(images, batch_size)["logits"].astype(np.float32)

    def predict_images(self, images: np.ndarray, files) -> Predictions:
        """Decisions (and OOD flags when the export carries a detector) for uint8 pixels of `files`."""
        out = self.forward(images)
        return answer(self.spec, out["logits"].astype(np.float32), files, out.get("ood_score"))

    def read_image(self, file) -> np.ndarray:
        """The file's pixels as this model reads them: its input size and its DICOM window choice."""
        return read_image(file, size=self.spec.image_size, use_voi=self.spec.dicom_voi)



def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError("onnxruntime", "serve", "prediction with an exported .onnx model") from None
    return onnxruntime

