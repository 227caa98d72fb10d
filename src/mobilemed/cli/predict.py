"""mobilemed predict CHECKPOINT FILES_OR_FOLDERS: a CSV of file, probability per class, predicted label."""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from mobilemed.fsutil import atomic_write, check_output_file


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt from a run folder")
    parser.add_argument("inputs", nargs="+", help="image / DICOM files or folders")
    parser.add_argument("--out", help="CSV to write (default: print to the terminal)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable files and count them")
    parser.add_argument("--allow-incomplete", action="store_true", help="use a checkpoint of an unfinished run (warns)")


def run(args) -> int:
    from mobilemed.inference import Predictor

    if args.out:
        check_output_file(args.out)
    predictor = Predictor.from_checkpoint(args.checkpoint, allow_incomplete=args.allow_incomplete)
    result = predictor.predict_files(args.inputs, skip_bad=args.skip_bad)
    text = format_csv(result, predictor.spec)
    if args.out:
        with atomic_write(Path(args.out)) as handle:
            handle.write(text)
        print(f"wrote {len(result.files)} predictions to {args.out}")
    else:
        sys.stdout.write(text)
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable file(s): {', '.join(result.skipped[:5])}", file=sys.stderr)
    return 0


def format_csv(result, spec) -> str:
    names = spec.class_names[1:] if spec.task == "binary" else spec.class_names
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", *[f"prob_{n}" for n in names], "predicted"])
    probs = result.probabilities.reshape(len(result.files), -1)
    for file, row, label in zip(result.files, probs, result.labels):
        writer.writerow([file, *[f"{p:.6f}" for p in row], label])
    return buffer.getvalue()
