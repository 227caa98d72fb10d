"""mobilemed predict MODEL FILES_OR_FOLDERS: a CSV row per file, streamed in batches (prediction.predict_to_csv)."""
from __future__ import annotations

import sys

from mobilemed.cli.argtypes import POSITIVE_INT
from mobilemed.engines import ENGINES


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt from a run folder, or a .onnx written by `mobilemed export`")
    parser.add_argument("inputs", nargs="+", help="image / DICOM files or folders (walked recursively)")
    parser.add_argument("--out", help="CSV to write (default: print to the terminal)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="go on past unreadable files: they get a row with empty probabilities and the "
                             "reason in an 'error' column")
    parser.add_argument("--engine", default="auto", choices=ENGINES,
                        help="auto: ONNX Runtime when installed, else torch; torch / onnx: choose explicitly")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=32,
                        help="images read and predicted at a time (memory stays bounded by it)")
    parser.add_argument("--allow-incomplete", action="store_true", help="use a checkpoint of an unfinished run (warns)")


def run(args) -> int:
    from mobilemed.engines import load_predictor
    from mobilemed.fsutil import check_output_file
    from mobilemed.prediction import predict_to_csv

    if args.out:
        check_output_file(args.out)
    predictor = load_predictor(args.checkpoint, engine=args.engine, allow_incomplete=args.allow_incomplete)
    done = predict_to_csv(predictor, args.inputs, args.out, skip_bad=args.skip_bad, batch_size=args.batch_size,
                          progress=not args.quiet and args.out is not None)
    if args.out:
        print(f"wrote {done.predicted} predictions to {args.out}")
    if done.out_of_distribution:
        print(f"{done.out_of_distribution} of {done.predicted} image(s) are out of distribution for this model "
              "(in_distribution=false): do not trust their predictions", file=sys.stderr)
    if done.skipped:
        print(f"skipped {len(done.skipped)} unreadable file(s): {', '.join(done.skipped[:5])}", file=sys.stderr)
    return 0
