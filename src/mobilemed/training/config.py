"""TrainConfig: every choice of a training run, grouped by concern and saved in the run folder.

    ModelChoice         which network, from which weights, at which size
    OptimConfig         how it is trained: epochs, optimiser, schedule, loss weighting, augmentation, seed
    OperatingPointRule  how thresholds, temperature and the OOD threshold are chosen on validation (or on
                        the pooled out-of-fold predictions of --cv K folds: training/cross_validation.py)
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
MAX_ENSEMBLE = 16  # --ensemble: each member is a full training; more is hours without a measurable gain
MAX_THRESHOLD_VIEWS = 64  # each view is a full pass over validation: more is cost without a better estimate


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
    feature_precision: str = "auto"    # linear probe, training split: fp32 | auto | int8 (training/feature_precision.py)
    image_size: int | None = None      # None: 224, or 64 for 28 px MedMNIST
    dropout: float = 0.2
    tta: bool = False                  # average predictions over the image and small shifts of it
    freeze_blocks: int = 0             # finetune: first k feature blocks frozen, their output cached (prefix_finetune)
    ensemble: int = 1                  # > 1: this many networks from their own seeds, mean probability (seed_ensemble)

    def __post_init__(self):
        from mobilemed.models.registry import get_backbone

        _one_of("mode", self.mode, MODES)
        _check_freeze_blocks(self)
        _one_of("feature_precision", self.feature_precision, FEATURE_PRECISIONS)
        smallest = get_backbone(self.arch).min_image_size  # an unknown architecture is refused here
        if self.image_size is not None and self.image_size < smallest:
            raise MobilemedError(f"--image-size {self.image_size} is below the {smallest} px that {self.arch} "
                                 f"needs (it downsamples 32x); use --image-size {smallest} or more")
        if not 0 <= self.dropout < 1:
            raise MobilemedError(f"--dropout is a fraction in [0, 1); got {self.dropout}")
        if not isinstance(self.ensemble, int) or not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise MobilemedError(f"--ensemble is a number of networks, 1 to {MAX_ENSEMBLE} (e.g. 3; 1: one network); "
                                 f"got {self.ensemble}")


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
    label_smoothing: float = 0.0       # targets pulled towards uniform by this fraction
    prefix_views: int = 1              # --freeze-blocks: cached views per training image (1 plain + augmented)
    crop_scale: float = 1.0            # < 1: augment with random crops of [crop_scale, 1] of the image's area
    hflip: bool = False                # augment with horizontal flips (not for chest X-rays)
    intensity: float = 0.0             # > 0: augment with random gamma, contrast and brightness of up to this
    low_res_size: int | None = None    # progressive resizing: train the first low_res_epochs at this size
    low_res_epochs: int = 0

    @property
    def augmentation(self):
        from mobilemed.data.transforms import Augmentation

        return Augmentation(crop_scale=self.crop_scale, hflip=self.hflip, intensity=self.intensity)

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
        if not 0 <= self.label_smoothing < 1:
            raise MobilemedError(f"--label-smoothing is a fraction in [0, 1), e.g. 0.1; got {self.label_smoothing}")
        _at_least("prefix_views", self.prefix_views, 1)
        if not 0 < self.crop_scale <= 1:
            raise MobilemedError(f"--crop-scale is the smallest share of the image's area a random crop keeps, in "
                                 f"(0, 1], e.g. 0.35 (1: no crops); got {self.crop_scale}")
        if not 0 <= self.intensity < 1:
            raise MobilemedError(f"--intensity is the strength of the random gamma, contrast and brightness, in "
                                 f"[0, 1), e.g. 0.3 (0: off); got {self.intensity}")
        _check_low_res(self)


@dataclass(frozen=True)
class OperatingPointRule:
    threshold_rule: str = "youden"     # youden | target_sensitivity | target_specificity | fixed
    threshold_target: float | None = None
    calibrate: bool = False            # temperature scaling fitted on validation
    ood_quantile: float = 0.99         # OOD threshold: this quantile of the validation scores
    cv_folds: int = 0                  # >= 2: choose on the pooled out-of-fold predictions of K folds of train+val
    cv_ensemble: bool = False          # with cv_folds: deploy the fold ensemble instead of a refit
    threshold_views: int = 0           # > 0: thresholds chosen on this many augmented views of each validation
                                       # image (training/threshold_views.py); 0: on the plain images

    def __post_init__(self):
        from mobilemed.evaluation.thresholds import _check_rule

        if self.threshold_rule.startswith("target_") and self.threshold_target is None:  # now, not after training
            raise MobilemedError(f"--threshold-rule {self.threshold_rule} needs "
                                 f"--{self.threshold_rule.replace('_', '-')} VALUE in (0, 1)")
        _check_rule(self.threshold_rule, self.threshold_target)
        if not 0 < self.ood_quantile <= 1:
            raise MobilemedError(f"--ood-quantile is a quantile in (0, 1], e.g. 0.99; got {self.ood_quantile}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise MobilemedError(f"--cv is a number of folds, at least 2 (e.g. --cv 5); got {self.cv_folds}")
        if self.cv_ensemble and not self.cv_folds:
            raise MobilemedError("--cv-ensemble deploys the models of the cross-validation folds: add --cv K")
        if not isinstance(self.threshold_views, int) or not 0 <= self.threshold_views <= MAX_THRESHOLD_VIEWS:
            raise MobilemedError(f"--threshold-views is a number of augmented views per validation image, 0 to "
                                 f"{MAX_THRESHOLD_VIEWS} (e.g. 4; 0: the plain images); got {self.threshold_views}")
        if self.threshold_views and self.threshold_rule == "fixed":
            raise MobilemedError("--threshold-views chooses a threshold on validation views, but --threshold-rule "
                                 "fixed chooses none: drop one of them")


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
        _check_speedups(self.model, self.optim)
        if self.model.ensemble > 1 and self.operating_point.cv_folds:
            raise MobilemedError("--ensemble N trains N networks on the train split, --cv K one network per fold: "
                                 "choose one (--cv K --cv-ensemble deploys the fold networks together)")

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


def _check_freeze_blocks(model: ModelChoice) -> None:
    from mobilemed.training.prefix_cache import count_blocks

    _at_least("freeze_blocks", model.freeze_blocks, 0)
    if model.freeze_blocks and model.mode != "finetune":
        raise MobilemedError(f"--freeze-blocks needs --mode finetune (got --mode {model.mode}); a linear probe "
                             "already freezes every block")
    if model.freeze_blocks and model.freeze_blocks >= (blocks := count_blocks(model.arch)):
        raise MobilemedError(f"--freeze-blocks {model.freeze_blocks}: {model.arch} has {blocks} feature blocks, so "
                             f"at most {blocks - 1} can be frozen (all of them is --mode linear-probe)")


def _check_low_res(optim: OptimConfig) -> None:
    if optim.low_res_size is None:
        if optim.low_res_epochs:
            raise MobilemedError("--low-res-epochs needs --low-res-size PX (the size of those epochs)")
        return
    if not 1 <= optim.low_res_epochs < optim.epochs:
        raise MobilemedError(f"--low-res-size needs --low-res-epochs between 1 and --epochs - 1 ({optim.epochs - 1}):"
                             f" the last epochs train at full size; got {optim.low_res_epochs}")


def _check_speedups(model: ModelChoice, optim: OptimConfig) -> None:
    """The fine-tuning speed-ups that depend on each other (docs: training/prefix_finetune.py)."""
    if (optim.crop_scale < 1 or optim.hflip or optim.intensity > 0) and optim.augment is False:
        raise MobilemedError("--crop-scale, --hflip and --intensity are augmentations: drop --no-augment")
    if optim.prefix_views > 1 and not model.freeze_blocks:
        raise MobilemedError("--prefix-views needs --freeze-blocks K (views of cached frozen blocks)")
    if optim.low_res_size is None:
        return
    if model.mode == "linear-probe" or model.freeze_blocks:
        raise MobilemedError("--low-res-size needs --mode finetune or scratch without --freeze-blocks: cached "
                             "frozen blocks are computed at one resolution")
    from mobilemed.models.registry import get_backbone

    smallest = get_backbone(model.arch).min_image_size
    if model.image_size is None or not smallest <= optim.low_res_size < model.image_size:
        raise MobilemedError(f"--low-res-size {optim.low_res_size} must lie in [{smallest}, --image-size); give "
                             f"--image-size explicitly (now {model.image_size}), the size the last epochs train at")


def regroup(flat: dict) -> dict:
    """A flat version-1 config (one key per field) in the grouped layout of to_dict."""
    grouped = {k: flat[k] for k in ("data", "data_options") if k in flat}
    for name, part in PARTS.items():
        fields = {f.name for f in dataclasses.fields(part)}
        grouped[name] = {k: v for k, v in flat.items() if k in fields}
    return grouped
