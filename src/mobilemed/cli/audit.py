"""mobilemed audit DATA: counts, image facts, unreadable files, duplicates, patient leakage, label conflicts.

Prints a summary and writes audit.json and audit.txt. Exit code 0, or 1 with --strict when patients or
(near-)identical images cross splits or the same image carries different labels.
"""
from __future__ import annotations

from pathlib import Path

from mobilemed.cli.common import add_data_arguments, data_options
from mobilemed.data.audit import NEAR_DUPLICATE_DISTANCE


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
    from mobilemed.data.audit import audit_data

    threshold = args.near_threshold if args.near_threshold >= 0 else None
    report = audit_data(args.data, data_options(args), near_duplicate_distance=threshold, progress=not args.quiet)
    print(report.format_text(), end="")
    json_path, text_path = report.write(Path(args.json) if args.json else Path(args.out) / "audit.json")
    print(f"wrote {json_path} and {text_path}")
    return 1 if args.strict and (report.has_leakage or report.label_conflicts) else 0
