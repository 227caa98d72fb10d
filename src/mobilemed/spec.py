"""ModelSpec: everything needed to use a trained model, saved in every checkpoint and export.

Imports: stdlib only, so the service, exporters and tests can read a spec without torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field

TASKS = ("binary", "multiclass", "multilabel")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A grayscale image fed to an ImageNet stem whose weights were summed over RGB (timm's
# adapt_input_conv) sees the average of the three channel statistics.
GRAY_MEAN = (sum(IMAGENET_MEAN) / 3,)
GRAY_STD = (sum(IMAGENET_STD) / 3,)
# Far beyond any radiograph a MobileNet is fed (224-512 px); a larger value is a corrupt spec, not a choice.
MAX_IMAGE_SIZE = 4096


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
    ensemble_size: int = 1  # > 1: an ensemble (train --ensemble, --cv-ensemble) averaging this many networks' probabilities

    def __post_init__(self):
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not isinstance(self.class_names, (list, tuple)) or not all(isinstance(n, str) for n in self.class_names):
            raise ValueError("class_names must be a list of class names (strings)")
        self.class_names = list(self.class_names)
        if not isinstance(self.thresholds, (list, tuple)):
            raise ValueError("thresholds must be a list of probabilities")
        if not self.thresholds:
            self.thresholds = [0.5] * self.num_outputs if self.task != "multiclass" else []
        self.validate()

    def validate(self) -> "ModelSpec":
        """Raise ValueError naming the first field that cannot describe a usable model: a checkpoint
        edited by hand or written by another tool fails here, not as a traceback deep in torch."""
        _check(isinstance(self.arch, str) and self.arch, "arch", "an architecture name")
        minimum = 2 if self.task != "multilabel" else 1
        _check(len(self.class_names) >= minimum and all(self.class_names), "class_names",
               f"at least {minimum} non-empty names for a {self.task} task")
        _check(len(set(self.class_names)) == len(self.class_names), "class_names", "distinct names")
        _check(self.task != "binary" or len(self.class_names) == 2, "class_names", "exactly 2 names for a binary task")
        _check(_is_int(self.image_size) and 1 <= self.image_size <= MAX_IMAGE_SIZE, "image_size",
               f"a whole number of pixels from 1 to {MAX_IMAGE_SIZE}")
        _check(_is_int(self.in_chans) and self.in_chans in (1, 3), "in_chans", "1 (gray) or 3 (RGB)")
        for name, low in (("mean", -math.inf), ("std", 0.0)):
            values = getattr(self, name)
            _check(isinstance(values, (list, tuple)) and len(values) == self.in_chans
                   and all(_is_number(v) and v > low for v in values), name,
                   f"one finite number per input channel ({self.in_chans}){', each > 0' if low == 0 else ''}")
            setattr(self, name, tuple(float(v) for v in values))
        wanted = 0 if self.task == "multiclass" else self.num_outputs
        _check(len(self.thresholds) == wanted and all(_is_number(t) and 0 <= t <= 1 for t in self.thresholds),
               "thresholds", f"{wanted} probabilities in [0, 1] for a {self.task} task with {self.num_classes} classes")
        _check(_is_number(self.temperature) and self.temperature > 0, "temperature", "a finite number > 0")
        _check(_is_number(self.dropout) and 0 <= self.dropout < 1, "dropout", "a number in [0, 1)")
        _check(isinstance(self.threshold_rule, str), "threshold_rule", "a rule name")
        _check(isinstance(self.tta, bool) and isinstance(self.dicom_voi, bool), "tta/dicom_voi", "true or false")
        _check(_is_int(self.ensemble_size) and self.ensemble_size >= 1, "ensemble_size", "a whole number >= 1")
        # Plain Python numbers only: a NumPy scalar would make the checkpoint unloadable with weights_only.
        self.image_size, self.in_chans = int(self.image_size), int(self.in_chans)
        self.thresholds = [float(t) for t in self.thresholds]
        self.temperature, self.dropout = float(self.temperature), float(self.dropout)
        return self

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
        if not isinstance(data, dict):
            raise ValueError(f"a spec must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"the spec has no {missing[0]!r}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite real number (NumPy scalars included); True/False are not numbers here."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok, field_name: str, expected: str) -> None:
    if not ok:
        raise ValueError(f"spec field {field_name!r} must be {expected}")
