"""`mobilemed` / `python -m mobilemed`: argparse subcommands, each a thin add_arguments + run."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mobilemed.errors import MobilemedError

DESCRIPTION = ("Medical image classification with MobileNet on a CPU: train, evaluate, predict, audit data, "
               "explain with Grad-CAM, report and compare runs. `mobilemed COMMAND --help` for each command.")

# name -> (module, one-line help). Modules are imported lazily so `mobilemed --help` stays quick.
COMMANDS = {
    "train": ("mobilemed.cli.train", "train a classifier and write a run folder with metrics and a report"),
    "evaluate": ("mobilemed.cli.evaluate", "evaluate a checkpoint on a data split"),
    "predict": ("mobilemed.cli.predict", "write a CSV of predictions for image or DICOM files"),
    "audit": ("mobilemed.cli.audit", "check a dataset for leakage, duplicates and label conflicts"),
    "explain": ("mobilemed.cli.explain", "write Grad-CAM heatmap overlays"),
    "report": ("mobilemed.cli.report", "write report.html for a run folder"),
    "compare": ("mobilemed.cli.compare", "compare runs on the same test set with CIs and a p-value"),
    "recalibrate": ("mobilemed.cli.recalibrate", "re-choose thresholds and temperature on a site's labelled sample"),
    "assets": ("mobilemed.cli.assets", "list, add and verify cached datasets and weights (offline sites)"),
}


def build_parser(argv) -> tuple[argparse.ArgumentParser, object]:
    parser = argparse.ArgumentParser(prog="mobilemed", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command's module (and its heavy imports) is loaded
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(handler=module.run)
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, chosen = build_parser(argv)
    args = parser.parse_args(argv)
    if chosen is None or not hasattr(args, "handler"):
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    _configure_logging(args)
    try:
        return int(args.handler(args) or 0)
    except MobilemedError as err:
        if args.debug:
            raise
        print(f"mobilemed {chosen}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _configure_logging(args) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("matplotlib", "PIL", "urllib3", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
