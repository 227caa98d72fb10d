"""mobilemed train DATA: fit a classifier; the run folder gets config, split, metrics, plots and report.html."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mobilemed.cli.common import add_data_arguments, data_options, operating_rule
from mobilemed.training.config import MODES, TrainConfig


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--out", dest="run_dir", help="run folder (default: runs/<data>-<mode>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    model = parser.add_argument_group("model")
    model.add_argument("--arch", default="mobilenet_v2", help="mobilenet_v2[_035|_050|_075|_140], mobilenet_v3_small|large")
    model.add_argument("--weights", default="imagenet", help="imagenet, none, or a state_dict file")
    model.add_argument("--mode", default="linear-probe", choices=MODES)
    model.add_argument("--image-size", type=int, help="input resolution (default 224; 64 for 28 px MedMNIST)")
    model.add_argument("--dropout", type=float, default=0.2)
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=10)
    opt.add_argument("--batch-size", type=int, default=32)
    opt.add_argument("--lr", type=float, default=1e-3)
    opt.add_argument("--backbone-lr-scale", type=float, default=0.1)
    opt.add_argument("--head-warmup-epochs", type=int, default=0)
    opt.add_argument("--optimizer", default="adamw", choices=("adamw", "adam"))
    opt.add_argument("--weight-decay", type=float, default=1e-4)
    opt.add_argument("--scheduler", default="cosine", choices=("cosine", "onecycle", "none"))
    opt.add_argument("--class-weighting", default="balanced", choices=("balanced", "none"))
    opt.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="geometric augmentation (default: on unless linear-probe)")
    opt.add_argument("--ema", dest="ema_decay", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.998")
    opt.add_argument("--tta", action="store_true", help="average predictions over small shifts")
    opt.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (0: never)")
    opt.add_argument("--seed", type=int, default=0)
    op = parser.add_argument_group("operating point and calibration (chosen on validation)")
    op.add_argument("--threshold-rule", default="youden",
                    choices=("youden", "target_sensitivity", "target_specificity", "fixed"))
    op.add_argument("--target-sensitivity", type=float)
    op.add_argument("--target-specificity", type=float)
    op.add_argument("--calibrate", action="store_true", help="fit temperature scaling on validation")
    op.add_argument("--ood-quantile", type=float, default=0.99,
                    help="out-of-distribution threshold: this quantile of the validation images' scores")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--no-gallery", action="store_true", help="skip the Grad-CAM gallery")
    parser.add_argument("--strict", action="store_true", help="stop if patients or images cross splits")


def config_from_args(args) -> TrainConfig:
    rule, target = operating_rule(args)
    return TrainConfig(
        data=args.data, data_options=data_options(args), run_dir=args.run_dir, arch=args.arch, weights=args.weights,
        mode=args.mode, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        backbone_lr_scale=args.backbone_lr_scale, head_warmup_epochs=args.head_warmup_epochs,
        optimizer=args.optimizer, weight_decay=args.weight_decay, scheduler=args.scheduler,
        class_weighting=args.class_weighting, augment=args.augment, dropout=args.dropout, ema_decay=args.ema_decay,
        tta=args.tta, patience=args.patience, threshold_rule=rule, threshold_target=target, calibrate=args.calibrate,
        seed=args.seed, skip_bad=args.skip_bad, strict=args.strict, resume=args.resume, ood_quantile=args.ood_quantile,
        n_bootstrap=args.n_bootstrap, gallery=not args.no_gallery, progress=not args.quiet)


def run(args) -> int:
    from mobilemed.training.fit import fit

    run_dir = fit(config_from_args(args))
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    print_summary(run_dir, metrics)
    return 0


def print_summary(run_dir, metrics: dict) -> None:
    from mobilemed.evaluation.metrics import format_summary

    print(f"\nrun folder: {run_dir}")
    for split in ("val", "test"):
        if split in metrics:
            print(f"\n[{split}]")
            print(format_summary(metrics[split]))
    print(f"\nreport: {Path(run_dir) / 'report.html'}")
