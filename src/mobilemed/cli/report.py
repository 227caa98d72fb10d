"""mobilemed report RUN: write the run's self-contained report.html."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("run", help="a run folder written by `mobilemed train`")
    parser.add_argument("--out", help="where to write the HTML (default: RUN/report.html)")
    parser.add_argument("--no-plots", action="store_true", help="do not also save the figures under RUN/plots/")
    parser.add_argument("--allow-incomplete", action="store_true", help="report on a run that did not finish (warns)")


def run(args) -> int:
    from mobilemed.checkpoint import require_complete
    from mobilemed.evaluation.report import write_report
    from mobilemed.fsutil import check_output_file

    if args.out:
        check_output_file(args.out)
    require_complete(args.run, allow_incomplete=args.allow_incomplete)
    path = write_report(args.run, args.out, save_plots=not args.no_plots)
    print(f"report: {path}")
    return 0
