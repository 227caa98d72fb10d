"""mobilemed assets: what is in the offline cache, add files to it, verify checksums."""
from __future__ import annotations

from pathlib import Path

from mobilemed import assets


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="list cached files with their checksums")
    sub.add_parser("verify", help="re-check every cached file's checksum")
    sub.add_parser("path", help="print the cache folder (MOBILEMED_HOME)")
    add = sub.add_parser("add", help="copy official files into the cache after checking them")
    add.add_argument("files", nargs="+", help="MedMNIST .npz files, or a weights file with --weights-for")
    add.add_argument("--weights-for", metavar="ARCH", help="the file is ImageNet weights for this architecture")


def run(args) -> int:
    if args.action == "path":
        print(assets.home())
        return 0
    if args.action == "add":
        for file in args.files:
            source = Path(file)
            target = (assets.add_weights_file(source, args.weights_for) if args.weights_for
                      else assets.add_medmnist_file(source))
            print(f"added {source} -> {target}")
        return 0
    rows = assets.verify_cache()
    print(f"cache: {assets.home()}")
    if not rows:
        print("(empty) add files with: mobilemed assets add FILE [--weights-for ARCH]")
    for row in rows:
        state = "ok" if row["ok"] else ("MISSING" if not row["present"] else "CHECKSUM MISMATCH")
        print(f"  {state:18} {row['kind']:9} {row['path']}")
    return 0 if all(r["ok"] for r in rows) else 1
