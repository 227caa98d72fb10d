"""mobilemed predict CHECKPOINT FILES_OR_FOLDERS: a CSV of file, probability per class, predicted label."""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from mobilemed.fsutil import atomic_write


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt from a run folder")
    parser.add_argument("inputs", nargs="+", help="image / DICOM files or folders")
    parser.add_argument("--out", help="CSV to write (default: print to the terminal)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable files and count them")


def run(args) -> int:
    from mobilemed.inference import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint)
    result = predictor.predict_files(args.inputs, skip_bad=args.skip_bad)
    text = format_csv(result, predictor.spec)
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


def format_csv(result, spec) -> str:
    names = spec.class_names[1:] if spec.task == "binary" else spec.class_names
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", *[f"prob_{n}" for n in names], "predicted", *OOD_COLUMNS])
    probs = result.probabilities.reshape(len(result.files), -1)
    for i, (file, row, label) in enumerate(zip(result.files, probs, result.labels)):
        writer.writerow([file, *[f"{p:.6f}" for p in row], label, *_ood_cells(result, i)])
    return buffer.getvalue()


OOD_COLUMNS = ("ood_score", "in_distribution", "ood_reason")


def _ood_cells(result, i: int) -> list[str]:
    """Blank score and flag for a model without a detector (trained before mobilemed had one), with the reason."""
    if result.in_distribution is None:
        return ["", "", "no OOD detector in this checkpoint; retrain to get one"]
    return [f"{result.ood_score[i]:.2f}", str(bool(result.in_distribution[i])).lower(), result.ood_reason[i]]
