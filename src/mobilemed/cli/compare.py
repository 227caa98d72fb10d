"""mobilemed compare RUN_A RUN_B ...: headline test metrics with CIs and a paired bootstrap p-value."""
from __future__ import annotations

import json

from mobilemed.cli.argtypes import NON_NEGATIVE_INT, POSITIVE_INT
from mobilemed.errors import MobilemedError


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders evaluated on the same test set; "
                        "the first is the reference the others are compared with")
    parser.add_argument("--n-bootstrap", type=POSITIVE_INT, default=1000, help="paired bootstrap resamples, at least 1")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--json", help="also write the comparison as JSON to this file")


def run(args) -> int:
    from mobilemed.evaluation.compare import compare_runs
    from mobilemed.fsutil import atomic_write

    if len(args.runs) < 2:
        raise MobilemedError("compare needs at least two run folders, e.g. mobilemed compare runs/a runs/b")
    result = compare_runs(args.runs, n_bootstrap=args.n_bootstrap, seed=args.seed)
    print(result.format_table())
    if args.json:
        with atomic_write(args.json) as handle:
            json.dump(result.to_dict(), handle, indent=2)
        print(f"\nwrote {args.json}")
    return 0
