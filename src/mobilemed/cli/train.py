"""mobilemed train DATA: fit a classifier; the run folder gets config, split, metrics, plots and report.html."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mobilemed.cli.argtypes import (FRACTION, NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT,
                                    PROBABILITY_TARGET, QUANTILE)
from mobilemed.cli.common import add_data_arguments, data_options, operating_rule
from mobilemed.evaluation.thresholds import RULES
from mobilemed.run_files import REPORT, RUN_STATE
from mobilemed.training.config import (AMP_DTYPES, CLASS_WEIGHTINGS, DEVICES, MODES, OPTIMIZERS, SCHEDULERS,
                                       ComputeOptions, ModelChoice, OperatingPointRule, OptimConfig, RunOptions,
                                       TrainConfig)
from mobilemed.training.run_folder import default_run_dir


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--out", dest="run_dir", help="run folder (default: runs/<data>-<mode>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out (its files are removed)")
    model = parser.add_argument_group("model")
    model.add_argument("--arch", default="mobilenet_v2", help="mobilenet_v2[_035|_050|_075|_140], mobilenet_v3_small|large")
    model.add_argument("--weights", default="imagenet", help="imagenet, none, or a state_dict file")
    model.add_argument("--mode", default="linear-probe", choices=MODES,
                       help="linear-probe: train the head on frozen features; finetune: the whole network; "
                            "scratch: from random weights")
    model.add_argument("--image-size", type=POSITIVE_INT,
                       help="input resolution in px, at least 32 for MobileNets (default 224; 64 for 28 px MedMNIST)")
    model.add_argument("--feature-precision", default="auto", choices=("fp32", "auto", "int8"),
                       help="linear probe: precision of the training split's feature pass; auto (default) "
                            "calibrates int8 and uses it when it keeps validation AUROC within 0.005 of fp32 and "
                            "is 1.2x as fast (needs onnxruntime); fp32 for the last 0.003 of test AUROC")
    model.add_argument("--dropout", type=FRACTION, default=0.2, help="dropout before the head, in [0, 1)")
    model.add_argument("--freeze-blocks", type=NON_NEGATIVE_INT, default=0,
                       help="finetune: keep the first K feature blocks frozen (eval mode), compute their output once "
                            "(ONNX Runtime, cached in fp16) and train only the later blocks and the head on it; "
                            "mobilenet_v2 has 19 blocks, e.g. 14 (0: off)")
    model.add_argument("--ensemble", type=POSITIVE_INT, default=1, metavar="N",
                       help="train N networks on the train split, each from its own seed, and deploy their mean "
                            "probability (thresholds chosen on the ensemble's validation predictions): seed-to-seed "
                            "variation on images from another population shrinks; N times the training time "
                            "(1: one network; not with --cv, whose --cv-ensemble deploys the fold networks)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=POSITIVE_INT, default=10, help="training epochs, at least 1")
    opt.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="images per step, at least 1")
    opt.add_argument("--lr", type=POSITIVE_FLOAT, default=1e-3, help="learning rate of the head, > 0")
    opt.add_argument("--backbone-lr-scale", type=NON_NEGATIVE_FLOAT, default=0.1,
                     help="finetune: the backbone learns at lr x this, >= 0")
    opt.add_argument("--head-warmup-epochs", type=NON_NEGATIVE_INT, default=0,
                     help="finetune: train only the head for this many epochs first")
    opt.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="optimiser")
    opt.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=1e-4, help="weight decay, >= 0")
    opt.add_argument("--scheduler", default="cosine", choices=SCHEDULERS,
                     help="learning-rate schedule")
    opt.add_argument("--class-weighting", default="balanced", choices=CLASS_WEIGHTINGS,
                     help="weight the loss by inverse class frequency")
    opt.add_argument("--label-smoothing", type=FRACTION, default=0.0,
                     help="label smoothing in [0, 1), e.g. 0.1 (0: off)")
    opt.add_argument("--prefix-views", type=POSITIVE_INT, default=1,
                     help="--freeze-blocks: cached views per training image, the plain one and V-1 augmented "
                          "copies drawn once (each costs a prefix pass); each epoch picks one per image")
    opt.add_argument("--crop-scale", type=float, default=1.0,
                     help="augment with random zoomed crops covering [SCALE, 1] of the image's area, e.g. 0.35 for "
                          "chest X-rays, whose framing differs between classes and hospitals (1: the light "
                          "affine only); with --freeze-blocks every cached view is such a crop; a linear probe "
                          "learns on the features of one such crop per training image")
    opt.add_argument("--hflip", action="store_true",
                     help="augment with horizontal flips: fundus, skin, ultrasound; not chest X-rays, whose heart "
                          "sits on the left")
    opt.add_argument("--intensity", type=float, default=0.0, metavar="S",
                     help="augment exposure: random gamma, contrast and brightness of up to +-S per image, e.g. "
                          "0.3, for images from other machines or hospitals (0: off); cached views and probe "
                          "features get it as they get crops")
    opt.add_argument("--low-res-size", type=POSITIVE_INT,
                     help="progressive resizing (not with --freeze-blocks): train the first --low-res-epochs "
                          "at this size in px, the rest at --image-size")
    opt.add_argument("--low-res-epochs", type=NON_NEGATIVE_INT, default=0,
                     help="epochs at --low-res-size, fewer than --epochs")
    opt.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="geometric augmentation (default: on unless linear-probe)")
    opt.add_argument("--ema", dest="ema_decay", type=FRACTION, default=0.0,
                     help="EMA decay of the weights in [0, 1), e.g. 0.998; 0 is off")
    opt.add_argument("--tta", action="store_true", help="average predictions over small shifts")
    opt.add_argument("--patience", type=NON_NEGATIVE_INT, default=5,
                     help="early-stopping patience in epochs (0: never stop early)")
    opt.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of weights, order and augmentation")
    op = parser.add_argument_group("operating point and calibration (chosen on validation)")
    op.add_argument("--threshold-rule", default="youden",
                    choices=RULES,
                    help="how the decision threshold is chosen on validation (target_*: give the target below)")
    op.add_argument("--target-sensitivity", type=PROBABILITY_TARGET,
                    help="choose the threshold that reaches this sensitivity, in (0, 1)")
    op.add_argument("--target-specificity", type=PROBABILITY_TARGET,
                    help="choose the threshold that reaches this specificity, in (0, 1)")
    op.add_argument("--calibrate", action="store_true", help="fit temperature scaling on validation")
    op.add_argument("--cv", dest="cv_folds", type=NON_NEGATIVE_INT, default=0, metavar="K",
                    help="choose thresholds and temperature on the pooled out-of-fold predictions of K patient-grouped, "
                         "stratified folds of train+val (also cross-validated metrics with CIs); the deployed model is "
                         "refitted on all of train+val (K >= 2; 0: off)")
    op.add_argument("--cv-ensemble", action="store_true",
                    help="with --cv: deploy the K fold models as an ensemble (mean probability) instead of a refit")
    op.add_argument("--threshold-views", type=NON_NEGATIVE_INT, default=0, metavar="V",
                    help="choose the threshold on V views of each validation (or out-of-fold) image drawn by the "
                         "training augmentation (crops, --intensity, the light affine): validation J averaged over "
                         "framing and exposure changes another site brings, not only on the plain images "
                         "(0: the plain images; e.g. 4)")
    op.add_argument("--ood-quantile", type=QUANTILE, default=0.99,
                    help="out-of-distribution threshold: this quantile of the validation images' scores, in (0, 1]")
    parser.add_argument("--n-bootstrap", type=NON_NEGATIVE_INT, default=1000,
                        help="bootstrap resamples for the test CIs (0: no intervals)")
    parser.add_argument("--no-gallery", action="store_true", help="skip the Grad-CAM gallery")
    parser.add_argument("--strict", action="store_true", help="stop if patients or images cross splits")
    compute = parser.add_argument_group("compute (README: several processes, GPUs and machines)")
    compute.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA when present, else the CPU")
    compute.add_argument("--amp", default="off", choices=AMP_DTYPES, help="mixed precision on CUDA (bf16 or fp16)")
    compute.add_argument("--nproc", type=POSITIVE_INT, default=1,
                         help="processes on this machine, started with torch.distributed.run (torchrun); "
                              "--batch-size stays the global batch")
    compute.add_argument("--dist-timeout", type=POSITIVE_FLOAT, default=1800.0,
                         help="seconds a process waits for the others (a dead process ends the run after this)")


def config_from_args(args) -> TrainConfig:
    """The one place the command's options become a TrainConfig; each part checks its own values."""
    rule, target = operating_rule(args)
    return TrainConfig(
        data=args.data, data_options=data_options(args),
        model=ModelChoice(arch=args.arch, weights=args.weights, mode=args.mode, image_size=args.image_size,
                          feature_precision=args.feature_precision, dropout=args.dropout, tta=args.tta,
                          freeze_blocks=args.freeze_blocks, ensemble=args.ensemble),
        optim=OptimConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          backbone_lr_scale=args.backbone_lr_scale, head_warmup_epochs=args.head_warmup_epochs,
                          optimizer=args.optimizer, weight_decay=args.weight_decay, scheduler=args.scheduler,
                          class_weighting=args.class_weighting, augment=args.augment, ema_decay=args.ema_decay,
                          patience=args.patience, seed=args.seed, label_smoothing=args.label_smoothing,
                          prefix_views=args.prefix_views, crop_scale=args.crop_scale, hflip=args.hflip,
                          intensity=args.intensity, low_res_size=args.low_res_size,
                          low_res_epochs=args.low_res_epochs),
        operating_point=OperatingPointRule(threshold_rule=rule, threshold_target=target, calibrate=args.calibrate,
                                           ood_quantile=args.ood_quantile, cv_folds=args.cv_folds,
                                           cv_ensemble=args.cv_ensemble, threshold_views=args.threshold_views),
        run=RunOptions(run_dir=args.run_dir or str(default_run_dir(args.data, args.mode)),  # named in the hint
                       resume=args.resume, overwrite=args.overwrite, skip_bad=args.skip_bad, strict=args.strict,
                       n_bootstrap=args.n_bootstrap, gallery=not args.no_gallery, progress=not args.quiet),
        compute=ComputeOptions(device=args.device, amp=args.amp, dist_timeout=args.dist_timeout))


def run(args) -> int:
    from mobilemed.training.fit import fit

    config = config_from_args(args)
    if args.nproc > 1:  # every option was checked above, before any process starts
        from mobilemed.training.distributed import launch_local

        launch_local(args.nproc, args.argv, config)
        return 0
    try:
        result = fit(config)
    except KeyboardInterrupt:
        run_dir = config.run.run_dir
        marked = (Path(run_dir) / RUN_STATE).exists()
        what = f"the run in {run_dir} is marked incomplete" if marked else "nothing was written"
        print(f"interrupted: {what}; continue it with\n  {resume_command(run_dir)}", file=sys.stderr)
        return 130
    if result is None:  # a torchrun process other than rank 0: rank 0 prints the summary
        return 0
    print_summary(result.run_dir, result.metrics)
    return 0


def resume_command(run_dir: str) -> str:
    """This very command with --resume (and --out, without --overwrite): the options must stay the same."""
    argv = sys.argv[1:]
    if "train" not in argv:  # called as a library (main([...])): sys.argv is not this command
        return f"mobilemed train DATA --out {shlex.quote(run_dir)} --resume  (with the run's other options)"
    argv = [a for a in argv if a != "--overwrite"]
    if "--out" not in argv and not any(a.startswith("--out=") for a in argv):
        argv += ["--out", run_dir]
    return shlex.join(["mobilemed", *argv, *([] if "--resume" in argv else ["--resume"])])


def print_summary(run_dir, metrics: dict) -> None:
    from mobilemed.evaluation.metrics import format_run_summary

    print(f"\nrun folder: {run_dir}")
    print(format_run_summary(metrics))
    print(f"\nreport: {Path(run_dir) / REPORT}")
