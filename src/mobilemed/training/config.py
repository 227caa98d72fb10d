"""TrainConfig: every choice of a training run, as one small typed object saved in the run folder."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mobilemed.data.sources import DataOptions
from mobilemed.errors import MobilemedError

MODES = ("linear-probe", "finetune", "scratch")


@dataclass
class TrainConfig:
    data: str = "pneumoniamnist"
    data_options: DataOptions = field(default_factory=DataOptions)
    run_dir: str | None = None
    arch: str = "mobilenet_v2"
    weights: str = "imagenet"          # "imagenet", "none", or a state_dict path
    mode: str = "linear-probe"
    feature_precision: str = "fp32"    # linear probe, training split: fp32 | auto | int8 (training/feature_precision.py)
    image_size: int | None = None      # None: 224, or 64 for 28 px MedMNIST
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1     # finetune: backbone learns at lr * this
    head_warmup_epochs: int = 0        # finetune: train only the head for this many epochs first
    optimizer: str = "adamw"           # adamw | adam
    weight_decay: float = 1e-4
    scheduler: str = "cosine"          # cosine | onecycle | none
    class_weighting: str = "balanced"  # balanced | none
    augment: bool | None = None        # None: on for finetune/scratch, off for linear-probe
    dropout: float = 0.2
    ema_decay: float = 0.0             # > 0 keeps an exponential moving average of the weights
    tta: bool = False                  # average predictions over the image and small shifts of it
    patience: int = 5                  # early stopping on validation AUROC
    threshold_rule: str = "youden"     # youden | target_sensitivity | target_specificity | fixed
    threshold_target: float | None = None
    calibrate: bool = False            # temperature scaling fitted on validation
    ood_quantile: float = 0.99         # OOD threshold: this quantile of the validation scores
    seed: int = 0
    skip_bad: bool = False
    strict: bool = False               # stop when the audit finds leakage across splits
    resume: bool = False
    overwrite: bool = False            # replace the run already in run_dir (its files are removed first)
    n_bootstrap: int = 1000
    gallery: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if self.feature_precision not in ("auto", "fp32", "int8"):
            raise MobilemedError(f"--feature-precision is auto, fp32 or int8; got {self.feature_precision!r}")
        if not 0 < self.ood_quantile <= 1:
            raise MobilemedError(f"--ood-quantile is a quantile in (0, 1], e.g. 0.99; got {self.ood_quantile}")
        if isinstance(self.data_options, dict):
            self.data_options = DataOptions(**self.data_options)

    @property
    def uses_augmentation(self) -> bool:
        return self.mode != "linear-probe" if self.augment is None else self.augment

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
