"""TrainConfig: every choice of a training run, grouped by concern and saved in the run folder.

    ModelChoice         which network, from which weights, at which size
    OptimConfig         how it is trained: epochs, optimiser, schedule, loss weighting, augmentation, seed
    OperatingPointRule  how thresholds, temperature and the OOD threshold are chosen on validation
    RunOptions          where the run lives and how the command behaves; none of it changes a number

Each part checks its own values when built, so a Python user gets the same refusal as the CLI, before
anything is read or written. config.yaml holds TrainConfig.to_dict(): one readable section per part and a
`version`; a version-1 (flat) config of an older run reads back through from_dict.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mobilemed.data.sources import DataOptions
from mobilemed.errors import MobilemedError

MODES = ("linear-probe", "finetune", "scratch")
FEATURE_PRECISIONS = ("fp32", "auto", "int8")
OPTIMIZERS = ("adamw", "adam")
SCHEDULERS = ("cosine", "onecycle", "none")
CLASS_WEIGHTINGS = ("balanced", "none")
DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("off", "bf16", "fp16")
CONFIG_VERSION = 2


def _one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise MobilemedError(f"--{name.replace('_', '-')} {value!r} is unknown; choose one of {', '.join(choices)}")


def _at_least(name: str, value, low, *, strictly: bool = False) -> None:
    if value < low or (strictly and value == low):
        raise MobilemedError(f"--{name.replace('_', '-')} must be {'>' if strictly else '>='} {low}; got {value}")


@dataclass(frozen=True)
class ModelChoice:
    arch: str = "mobilenet_v2"
    weights: str = "imagenet"          # "imagenet", "none", or a state_dict path
    mode: str = "linear-probe"
    feature_precision: str = "fp32"    # linear probe, training split: fp32 | auto | int8 (training/feature_precision.py)
    image_size: int | None = None      # None: 224, or 64 for 28 px MedMNIST
    dropout: float = 0.2
    tta: bool = False                  # average predictions over the image and small shifts of it

    def __post_init__(self):
        from mobilemed.models.registry import get_backbone

        _one_of("mode", self.mode, MODES)
        _one_of("feature_precision", self.feature_precision, FEATURE_PRECISIONS)
        smallest = get_backbone(self.arch).min_image_size  # an unknown architecture is refused here
        if self.image_size is not None and self.image_size < smallest:
            raise MobilemedError(f"--image-size {self.image_size} is below the {smallest} px that {self.arch} "
                                 f"needs (it downsamples 32x); use --image-size {smallest} or more")
        if not 0 <= self.dropout < 1:
            raise MobilemedError(f"--dropout is a fraction in [0, 1); got {self.dropout}")


@dataclass(frozen=True)
class OptimConfig:
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
    ema_decay: float = 0.0             # > 0 keeps an exponential moving average of the weights
    patience: int = 5                  # early stopping on validation AUROC
    seed: int = 0

    def __post_init__(self):
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("scheduler", self.scheduler, SCHEDULERS)
        _one_of("class_weighting", self.class_weighting, CLASS_WEIGHTINGS)
        for name in ("epochs", "batch_size"):
            _at_least(name, getattr(self, name), 1)
        _at_least("lr", self.lr, 0, strictly=True)
        for name in ("backbone_lr_scale", "head_warmup_epochs", "weight_decay", "patience", "seed"):
            _at_least(name, getattr(self, name), 0)
        if not 0 <= self.ema_decay < 1:
            raise MobilemedError(f"--ema is a decay in [0, 1), e.g. 0.998; got {self.ema_decay}")


@dataclass(frozen=True)
class OperatingPointRule:
    threshold_rule: str = "youden"     # youden | target_sensitivity | target_specificity | fixed
    threshold_target: float | None = None
    calibrate: bool = False            # temperature scaling fitted on validation
    ood_quantile: float = 0.99         # OOD threshold: this quantile of the validation scores

    def __post_init__(self):
        from mobilemed.evaluation.thresholds import _check_rule

        if self.threshold_rule.startswith("target_") and self.threshold_target is None:  # now, not after training
            raise MobilemedError(f"--threshold-rule {self.threshold_rule} needs "
                                 f"--{self.threshold_rule.replace('_', '-')} VALUE in (0, 1)")
        _check_rule(self.threshold_rule, self.threshold_target)
        if not 0 < self.ood_quantile <= 1:
            raise MobilemedError(f"--ood-quantile is a quantile in (0, 1], e.g. 0.99; got {self.ood_quantile}")


@dataclass(frozen=True)
class RunOptions:
    run_dir: str | None = None
    resume: bool = False
    overwrite: bool = False            # replace the run already in run_dir (its files are removed first)
    skip_bad: bool = False
    strict: bool = False               # stop when the audit finds leakage across splits
    n_bootstrap: int = 1000
    gallery: bool = True
    progress: bool = True

    def __post_init__(self):
        _at_least("n_bootstrap", self.n_bootstrap, 0)  # --resume with --overwrite: training/run_guard.py


@dataclass(frozen=True)
class ComputeOptions:
    """Where the numbers are computed (training/distributed.py); the process count comes from torchrun."""

    device: str = "auto"               # auto: CUDA when present, else CPU
    amp: str = "off"                   # CUDA mixed precision: off | bf16 | fp16
    dist_timeout: float = 1800.0       # seconds a process waits for the others before the run fails

    def __post_init__(self):
        _one_of("device", self.device, DEVICES)
        _one_of("amp", self.amp, AMP_DTYPES)
        _at_least("dist_timeout", self.dist_timeout, 0, strictly=True)


PARTS = {"model": ModelChoice, "optim": OptimConfig, "operating_point": OperatingPointRule, "run": RunOptions,
         "compute": ComputeOptions}


@dataclass(frozen=True)
class TrainConfig:
    data: str = "pneumoniamnist"
    data_options: DataOptions = field(default_factory=DataOptions)
    model: ModelChoice = field(default_factory=ModelChoice)
    optim: OptimConfig = field(default_factory=OptimConfig)
    operating_point: OperatingPointRule = field(default_factory=OperatingPointRule)
    run: RunOptions = field(default_factory=RunOptions)
    compute: ComputeOptions = field(default_factory=ComputeOptions)

    def __post_init__(self):
        for name, cls in {"data_options": DataOptions, **PARTS}.items():
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, cls(**getattr(self, name)))

    @property
    def uses_augmentation(self) -> bool:
        augment = self.optim.augment
        return self.model.mode != "linear-probe" if augment is None else augment

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """The inverse of to_dict; a flat version-1 dict (runs written before the split) is regrouped."""
        data = {k: v for k, v in data.items() if k != "version"}
        if not any(isinstance(data.get(name), dict) for name in PARTS):
            data = regroup(data)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def regroup(flat: dict) -> dict:
    """A flat version-1 config (one key per field) in the grouped layout of to_dict."""
    grouped = {k: flat[k] for k in ("data", "data_options") if k in flat}
    for name, part in PARTS.items():
        fields = {f.name for f in dataclasses.fields(part)}
        grouped[name] = {k: v for k, v in flat.items() if k in fields}
    return grouped
