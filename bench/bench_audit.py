"""Wall time of `audit_table` (every check) and `cross_split_checks` (what training runs) on real data.

    python bench/bench_audit.py                      # Kermany 224 px folder and the NIH 1000 subset from ../shared
    python bench/bench_audit.py --data DIR [--labels CSV] [--workers 2]

Prints one table: images, seconds for the full audit and for the cross-split checks, and what each found.
Reads the data as given (its own splits), as `mobilemed audit` does.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load(data: str, labels: str | None):
    from mobilemed.data.sources import DataOptions, read_source

    return read_source(data, DataOptions(labels_csv=labels))


def measure(name: str, data: str, labels: str | None, workers: int | None) -> dict:
    from mobilemed.data.audit import audit_table, cross_split_checks

    table = load(data, labels)
    start = time.perf_counter()
    report = audit_table(table, progress=False, workers=workers)
    full = time.perf_counter() - start
    start = time.perf_counter()
    cheap = cross_split_checks(table)
    return {"name": name, "images": len(table), "audit_s": full, "cross_split_s": time.perf_counter() - start,
            "unreadable": len(report.unreadable), "exact": len(report.exact_duplicates),
            "near": len(report.near_duplicates), "across": len(report.duplicates_across_splits),
            "patients": len(report.patients_across_splits) if table.groups is not None else "n/a",
            "conflicts": len(report.label_conflicts), "training_check_leak": cheap.has_leakage}


def print_table(rows: list[dict]) -> None:
    print("| data | images | full audit (s) | cross-split checks (s) | unreadable | exact dup groups | "
          "near dup groups | dup groups across splits | patients across splits | label conflicts |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['images']} | {r['audit_s']:.1f} | {r['cross_split_s']:.2f} | {r['unreadable']} | "
              f"{r['exact']} | {r['near']} | {r['across']} | {r['patients']} | {r['conflicts']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="an image folder or CSV (default: the ../shared datasets)")
    parser.add_argument("--labels", help="label CSV for --data")
    parser.add_argument("--workers", type=int, help="decoding threads (default: min(4, CPUs))")
    args = parser.parse_args()
    if args.data:
        jobs = [(Path(args.data).name, args.data, args.labels)]
    else:
        nih = SHARED / "nih_cxr14_1000"
        jobs = [("kermany_cxr_224", str(SHARED / "kermany_cxr_224"), None),
                ("nih_cxr14_1000 (course split)", str(nih), str(nih / "Data_Entry_subset.csv"))]
    print_table([measure(name, data, labels, args.workers) for name, data, labels in jobs])


if __name__ == "__main__":
    main()
