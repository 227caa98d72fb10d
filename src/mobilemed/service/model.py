"""ServedModel: one model behind the service, from a checkpoint (.pt, torch) or an export (.onnx, no torch)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from mobilemed.decision import class_probabilities, decisions, label_text, probabilities
from mobilemed.export.run_summary import run_summary


class ServedModel:
    """predict(pixels) -> the answer as JSON-ready data; explain(pixels) -> a Grad-CAM overlay PNG."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.suffix.lower() == ".onnx":
            from mobilemed.onnx_model import OnnxModel

            self.engine, self.kind = OnnxModel(self.path), "onnx"
            self.summary = self.engine.extra.get("trained_on", {})
        else:
            from mobilemed.inference import Predictor

            self.engine, self.kind = Predictor.from_checkpoint(self.path), "checkpoint"
            self.summary = run_summary(self.path.parent)
        self.spec = self.engine.spec

    @property
    def can_explain(self) -> bool:
        return self.kind == "checkpoint"

    def read_image(self, path) -> np.ndarray:
        return self.engine.read_image(path)

    def predict(self, pixels: np.ndarray) -> dict:
        spec = self.spec
        probs = probabilities(self.engine.logits(pixels[None]), spec)
        per_class = class_probabilities(probs, spec)[0]
        decided = decisions(probs, spec)
        answer = {"probabilities": {n: round(float(p), 6) for n, p in zip(spec.class_names, per_class)},
                  "decision": label_text(decided, spec)[0], "task": spec.task,
                  "thresholds": spec.thresholds, "temperature": spec.temperature}
        if spec.task == "binary":
            answer["positive_class"] = spec.class_names[1]
        return answer

    def explain(self, pixels: np.ndarray) -> dict:
        """{"gradcam_png": base64 PNG of the Grad-CAM overlay for the predicted class, "gradcam_edge_heat": the
        share of its heat on the image's edge, "gradcam_peak_at_edge": whether it peaks there} (checkpoint
        models only; explain/edge_heat.py says why the edge matters)."""
        from PIL import Image

        from mobilemed.data.transforms import to_model_input
        from mobilemed.explain.edge_heat import edge_heat
        from mobilemed.explain.gradcam import compute_gradcam, default_targets, overlay_heatmap

        probs = probabilities(self.engine.logits(pixels[None]), self.spec)
        target = int(default_targets(probs, self.spec)[0])
        heatmap = compute_gradcam(self.engine.model, to_model_input(pixels[None], self.spec), spec=self.spec,
                                  target_classes=[target])[0]
        buffer = io.BytesIO()
        Image.fromarray(overlay_heatmap(pixels, heatmap)).save(buffer, format="PNG")
        edge = {f"gradcam_{key}": value for key, value in edge_heat(heatmap).to_dict().items()}
        return {"gradcam_png": base64.b64encode(buffer.getvalue()).decode("ascii"), **edge}

    def describe(self) -> dict:
        return {"name": self.path.name, "kind": self.kind, "spec": self.spec.to_dict(), "trained_on": self.summary,
                "explain": self.can_explain}
