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
    parser.add_argument("--skip-bad", action="store_true",
                        help="go on past unreadable files: they get a row with empty probabilities and the "
                             "reason in an 'error' column")
    parser.add_argument("--allow-incomplete", action="store_true", help="use a checkpoint of an unfinished run (warns)")


def run(args) -> int:
    from mobilemed.inference import Predictor, expand_inputs

    if args.out:
        check_output_file(args.out)
    predictor = Predictor.from_checkpoint(args.checkpoint, allow_incomplete=args.allow_incomplete)
    result = predictor.predict_files(args.inputs, skip_bad=args.skip_bad)
    text = format_csv(result, predictor.spec, input_order=expand_inputs(args.inputs) if args.skip_bad else None)
    if args.out:
        with atomic_write(Path(args.out)) as handle:
            handle.write(text)
        print(f"wrote {len(result.files)} predictions to {args.out}")
    else:
        sys.stdout.write(text)
    flagged = 0 if result.in_distribution is None else int((~result.in_distribution).sum())
    if flagged:
        print(f"{flagged} of {len(result.files)} image(s) are out of distribution for this model "
              "(in_distribution=false): do not trust their predictions", file=sys.stderr)
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable file(s): {', '.join(result.skipped[:5])}", file=sys.stderr)
    return 0


def format_csv(result, spec, input_order: list[str] | None = None) -> str:
    """One row per file. With input_order (--skip-bad), skipped files keep their place in the input order
    with empty probabilities and the reason in an extra 'error' column."""
    names = spec.class_names[1:] if spec.task == "binary" else spec.class_names
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", *[f"prob_{n}" for n in names], "predicted", *OOD_COLUMNS,
                     *(["error"] if input_order else [])])
    probs = result.probabilities.reshape(len(result.files), -1)
    rows = [[file, *[f"{p:.6f}" for p in row], label, *_ood_cells(result, i)]
            for i, (file, row, label) in enumerate(zip(result.files, probs, result.labels))]
    if input_order:
        blank = [""] * (len(names) + 1 + len(OOD_COLUMNS))
        failed = [[file, *blank, reason] for file, reason in zip(result.skipped, result.skip_reasons)]
        rows = _in_input_order(input_order, [r + [""] for r in rows], failed)
    writer.writerows(rows)
    return buffer.getvalue()


def _in_input_order(files: list[str], read: list[list], failed: list[list]) -> list[list]:
    """Merge the read and the failed rows (each already in input order) back into the input order."""
    read_rows, failed_rows = iter(read), iter(failed)
    next_failed = next(failed_rows, None)
    merged = []
    for file in files:
        if next_failed is not None and next_failed[0] == file:
            merged.append(next_failed)
            next_failed = next(failed_rows, None)
        else:
            merged.append(next(read_rows))
    return merged


OOD_COLUMNS = ("ood_score", "in_distribution", "ood_reason")


def _ood_cells(result, i: int) -> list[str]:
    """Blank score and flag for a model without a detector (trained before mobilemed had one), with the reason."""
    if result.in_distribution is None:
        return ["", "", "no OOD detector in this checkpoint; retrain to get one"]
    return [f"{result.ood_score[i]:.2f}", str(bool(result.in_distribution[i])).lower(), result.ood_reason[i]]
