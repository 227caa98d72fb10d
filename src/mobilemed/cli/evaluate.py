"""mobilemed evaluate CHECKPOINT DATA: metrics with CIs, JSON and plots for one split."""
from __future__ import annotations

from pathlib import Path

from mobilemed.cli.argtypes import FRACTION, NON_NEGATIVE_INT
from mobilemed.cli.common import add_data_arguments, data_options
from mobilemed.engines import ENGINES


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt from a run folder, or a .onnx written by `mobilemed export`")
    add_data_arguments(parser)
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="the split to score (default test: the run's held-out images); all: every labelled "
                             "image of DATA, no split made (external validation)")
    parser.add_argument("--out", help="folder for metrics.json and plots (default: <checkpoint folder>/eval-<split>)")
    parser.add_argument("--n-bootstrap", type=NON_NEGATIVE_INT, default=1000,
                        help="bootstrap resamples for the CIs (0: no intervals)")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--allow-incomplete", action="store_true", help="use a checkpoint of an unfinished run (warns)")
    parser.add_argument("--engine", default="auto", choices=ENGINES,
                        help="auto: ONNX Runtime when installed, else torch; torch / onnx: choose explicitly")
    parser.add_argument("--ood-max-share", type=FRACTION, default=0.10,
                        help="warn when more than this share of the images is out of distribution, in [0, 1)")


def run(args) -> int:
    from mobilemed.evaluate_model import evaluate_model
    from mobilemed.evaluation.eval_data import format_description
    from mobilemed.evaluation.metrics import format_summary
    from mobilemed.evaluation.ood_summary import format_ood

    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}"
    done = evaluate_model(args.checkpoint, args.data, split=args.split, options=data_options(args),
                          positive_class=args.positive_class, n_bootstrap=args.n_bootstrap, seed=args.seed,
                          ood_max_share=args.ood_max_share, skip_bad=args.skip_bad, out=out, engine=args.engine,
                          allow_incomplete=args.allow_incomplete, progress=not args.quiet)
    print(format_summary(done.metrics))
    if "ood" in done.metrics:
        print(format_ood(done.metrics["ood"]))
    print(f"\n{format_description(done.metrics['evaluation'])}")
    print(f"wrote {out / 'metrics.json'} and plots")
    return 0
