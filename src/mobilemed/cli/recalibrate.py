"""mobilemed recalibrate MODEL DATA --out NEW.pt: re-choose thresholds and temperature on a site's labelled sample."""
from __future__ import annotations

import argparse

from mobilemed.cli.argtypes import PROBABILITY_TARGET, QUANTILE
from mobilemed.cli.common import add_data_arguments, data_options, operating_rule
from mobilemed.evaluation.thresholds import RULES


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt to recalibrate (never modified)")
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="the new checkpoint to write, e.g. site.pt")
    parser.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                        help="which labelled images of DATA to use (default all: every image, no split)")
    parser.add_argument("--threshold-rule", default="youden", choices=RULES,
                        help="how the threshold is re-chosen on the sample (target_*: give the target below)")
    parser.add_argument("--target-sensitivity", type=PROBABILITY_TARGET,
                        help="choose the threshold for this sensitivity, in (0, 1)")
    parser.add_argument("--target-specificity", type=PROBABILITY_TARGET,
                        help="choose the threshold for this specificity, in (0, 1)")
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                        help="refit the temperature on the sample (default on)")
    parser.add_argument("--refit-ood", action="store_true",
                        help="also move the out-of-distribution threshold to a quantile of the sample's scores")
    parser.add_argument("--ood-quantile", type=QUANTILE,
                        help="quantile for --refit-ood, in (0, 1] (default: the training one)")


def run(args) -> int:
    from mobilemed.recalibration import recalibrate_checkpoint

    rule, target = operating_rule(args)
    done = recalibrate_checkpoint(args.checkpoint, args.data, args.out, data_options=data_options(args),
                                  split=args.split, threshold_rule=rule, target=target, calibrate=args.calibrate,
                                  refit_ood=args.refit_ood, ood_quantile=args.ood_quantile, skip_bad=args.skip_bad,
                                  progress=not args.quiet)
    before, after = done.before, done.after
    print(f"recalibrated on {done.n} labelled images of {args.data} ({args.split})")
    print(f"thresholds ({rule}): {_values(before.thresholds)} -> {_values(after.thresholds)}")
    print(f"temperature: {before.temperature:.3f} -> {after.temperature:.3f}")
    if after.ood_threshold is not None:
        print(f"OOD threshold: {before.ood_threshold:.2f} -> {after.ood_threshold:.2f}")
    print(f"wrote {done.path}")
    return 0


def _values(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values) or "argmax"
