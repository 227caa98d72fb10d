"""predict_to_csv: predictions for any number of files, read, predicted and written in batches.

Memory stays bounded by the batch size whatever the folder's size; the CSV is written to a temp file and
renamed at the end, so a reader never sees half of it. Each row: the file, the probability of each class,
the decision at the model's stored operating point, the out-of-distribution score and flag with the reason,
the DICOM SOPInstanceUID and StudyInstanceUID (blank for other files), and with skip_bad an error column.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mobilemed.fsutil import atomic_write
from mobilemed.io.dicom import dicom_uids, is_dicom
from mobilemed.predictions import Predictions, expand_inputs, read_batch

OOD_COLUMNS = ("ood_score", "in_distribution", "ood_reason")
UID_COLUMNS = ("sop_instance_uid", "study_instance_uid")
NO_DETECTOR = "no OOD detector in this model; retrain to get one"


@dataclass
class PredictSummary:
    files: int
    predicted: int
    skipped: list[str]
    out_of_distribution: int
    out: Path | None


def predict_to_csv(predictor, inputs, out=None, *, skip_bad: bool = False, batch_size: int = 32,
                   progress: bool = False) -> PredictSummary:
    """Write one CSV row per input file (folders walked recursively) to `out`, or to stdout when None.

    predictor: engines.load_predictor(...). Unreadable files stop the run unless skip_bad, which gives them a
    row with the reason in an "error" column instead."""
    files = expand_inputs(inputs)
    if out is None:
        return _write_rows(predictor, files, sys.stdout, skip_bad, batch_size, progress, None)
    with atomic_write(Path(out), newline="") as handle:
        return _write_rows(predictor, files, handle, skip_bad, batch_size, progress, Path(out))


def _write_rows(predictor, files, handle, skip_bad, batch_size, progress, out) -> PredictSummary:
    spec = predictor.spec
    names = spec.class_names[1:] if spec.task == "binary" else spec.class_names
    writer = csv.writer(handle)
    writer.writerow(["file", *[f"prob_{n}" for n in names], "predicted", *OOD_COLUMNS, *UID_COLUMNS,
                     *(["error"] if skip_bad else [])])
    summary = PredictSummary(len(files), 0, [], 0, out)
    with tqdm(total=len(files), desc="predict", unit="image", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            batch, kept, skipped, reasons = read_batch(predictor.read_image, chunk, skip_bad=skip_bad)
            result = predictor.predict_images(batch, kept) if batch is not None else None
            writer.writerows(_rows(chunk, result, dict(zip(skipped, reasons)), len(names), skip_bad))
            summary.predicted += len(kept)
            summary.skipped += skipped
            if result is not None and result.in_distribution is not None:
                summary.out_of_distribution += int((~result.in_distribution).sum())
            bar.update(len(chunk))
    return summary


def _rows(chunk: list[str], result: Predictions | None, failed: dict, n_probs: int, skip_bad: bool) -> list[list]:
    """The chunk's rows in input order: predicted files from `result`, unreadable ones with their reason."""
    index = {file: i for i, file in enumerate(result.files)} if result is not None else {}
    rows = []
    for file in chunk:
        if file in failed:
            rows.append([file, *[""] * (n_probs + 1 + len(OOD_COLUMNS) + len(UID_COLUMNS)), failed[file]])
            continue
        i = index[file]
        probs = result.probabilities.reshape(len(result.files), -1)[i]
        rows.append([file, *[f"{p:.6f}" for p in probs], result.labels[i], *_ood_cells(result, i),
                     *(dicom_uids(file) if is_dicom(file) else ("", "")), *([""] if skip_bad else [])])
    return rows


def _ood_cells(result: Predictions, i: int) -> list[str]:
    if result.in_distribution is None:
        return ["", "", NO_DETECTOR]
    return [f"{result.ood_score[i]:.2f}", str(bool(result.in_distribution[i])).lower(), result.ood_reason[i]]
