"""ModelSpec: everything needed to use a trained model, saved in every checkpoint and export.

Imports: stdlib only, so the service, exporters and tests can read a spec without torch.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

TASKS = ("binary", "multiclass", "multilabel")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A grayscale image fed to an ImageNet stem whose weights were summed over RGB (timm's
# adapt_input_conv) sees the average of the three channel statistics.
GRAY_MEAN = (sum(IMAGENET_MEAN) / 3,)
GRAY_STD = (sum(IMAGENET_STD) / 3,)


@dataclass
class ModelSpec:
    """How to build, feed and read a model.

    task: "binary" (one logit, sigmoid; class_names = [negative, positive]),
          "multiclass" (K logits, softmax) or "multilabel" (K logits, sigmoid each).
    thresholds: operating thresholds on the probability of the positive class (binary: one value)
          or of each finding (multilabel: one per class). Unused for multiclass (argmax).
    temperature: logits are divided by it before the sigmoid/softmax (1.0 = uncalibrated).
    """

    arch: str
    class_names: list[str]
    task: str
    image_size: int = 224
    in_chans: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    thresholds: list[float] = field(default_factory=list)
    threshold_rule: str = "default"
    temperature: float = 1.0
    dropout: float = 0.2
    tta: bool = False  # average logits over small shifts of the image (see training.loop.predict_logits)
    dicom_voi: bool = True  # apply a DICOM's VOI LUT / window; False maps the full stored range instead
    # Out-of-distribution check (mobilemed.ood): the detector's arrays travel in the checkpoint's "ood" key;
    # the method and the feature-score threshold are repeated here so the service and exports can show them.
    ood_method: str = ""              # "" = no detector (a checkpoint from before the OOD score)
    ood_threshold: float | None = None
    modalities: list[str] = field(default_factory=list)      # DICOM Modality values of the training files
    body_parts: list[str] = field(default_factory=list)      # their BodyPartExamined values, where present
    source_formats: list[str] = field(default_factory=list)  # file kinds trained on: "dicom", "jpeg", "png"...
    provenance: dict = field(default_factory=dict)           # where thresholds / temperature / OOD threshold came from

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError("mean and std need one value per input channel")
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if not self.thresholds:
            self.thresholds = [0.5] * self.num_outputs if self.task != "multiclass" else []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_outputs(self) -> int:
        """Width of the head: binary tasks use one logit."""
        return 1 if self.task == "binary" else self.num_classes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
