"""mobilemed audit DATA: counts, image facts, unreadable files, duplicates, patient leakage, label conflicts.

Prints a summary and writes audit.json and audit.txt. Exit code 0, or 1 with --strict when patients or
(near-)identical images cross splits or the same image carries different labels.
"""
from __future__ import annotations

import json
from pathlib import Path

from mobilemed.cli.common import add_data_arguments, data_options
from mobilemed.data.audit import NEAR_DUPLICATE_DISTANCE
from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    group = parser.add_argument_group("audit")
    group.add_argument("--strict", action="store_true",
                       help="exit 1 when patients or duplicate images cross splits, or labels conflict")
    group.add_argument("--out", default=".", help="folder for audit.json and audit.txt (default: current folder)")
    group.add_argument("--json", help="write the JSON report to this file instead of OUT/audit.json")
    group.add_argument("--near-threshold", type=int, default=NEAR_DUPLICATE_DISTANCE,
                       help=f"near duplicates: largest pHash distance of 256 bits (default {NEAR_DUPLICATE_DISTANCE}; "
                            "negative skips the search)")


def run(args) -> int:
    from mobilemed.data.audit import audit_table

    table = read_table_as_given(args)
    if args.resplit:
        table = resplit(table, args)
    threshold = args.near_threshold if args.near_threshold >= 0 else None
    report = audit_table(table, near_duplicate_distance=threshold, progress=not getattr(args, "quiet", False))
    text = report.format_text()
    print(text, end="")
    json_path, text_path = output_paths(args)
    with atomic_write(json_path, "w") as handle:
        json.dump(report.to_dict(), handle, indent=2)
    with atomic_write(text_path, "w") as handle:
        handle.write(text)
    print(f"wrote {json_path} and {text_path}")
    if args.strict and (report.has_leakage or report.label_conflicts):
        return 1
    return 0


def read_table_as_given(args):
    """The data with the splits it comes with: the audit looks at the data, it does not fill in splits."""
    from mobilemed.data import sources

    table = sources.read_source(args.data, data_options(args))  # load_table would also complete the splits
    if len(table) == 0:
        raise MobilemedError(f"{args.data}: no images found")
    return table


def resplit(table, args):
    from mobilemed.data.sources import without_splits
    from mobilemed.data.splits import assign_splits

    return assign_splits(without_splits(table), val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                         seed=args.split_seed)


def output_paths(args) -> tuple[Path, Path]:
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out / "audit.json"
    return json_path, json_path.with_suffix(".txt")
