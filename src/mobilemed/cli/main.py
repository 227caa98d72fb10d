"""`mobilemed` / `python -m mobilemed`: argparse subcommands, each a thin add_arguments + run."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from mobilemed.cli.argtypes import POSITIVE_INT
from mobilemed.errors import MobilemedError
from mobilemed.io.limits import DEFAULT_MAX_PIXELS, ENV_VAR as MAX_PIXELS_ENV

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
    "export": ("mobilemed.cli.export", "write a self-describing ONNX file (optionally int8) with a parity check"),
    "serve": ("mobilemed.cli.serve", "serve a model over HTTP with an upload page (FastAPI)"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except where the help text already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def add_global_arguments(parser: argparse.ArgumentParser, *, in_command: bool) -> None:
    """--debug, --quiet and --max-image-pixels, accepted before and after the command name. Inside a
    command their default is SUPPRESS, so an option given before the command is not reset by it."""
    default = argparse.SUPPRESS if in_command else None
    parser.add_argument("--debug", action="store_true", default=default or False,
                        help="show tracebacks, debug logs and library warnings")
    parser.add_argument("--quiet", action="store_true", default=default or False,
                        help="no progress bars and no library warnings; mobilemed's own warnings only")
    parser.add_argument("--max-image-pixels", type=POSITIVE_INT, default=default, metavar="N",
                        help=f"refuse images whose header declares more pixels (default: {MAX_PIXELS_ENV} or "
                             f"{DEFAULT_MAX_PIXELS:,} = 12,000 x 12,000)")


def build_parser(argv) -> tuple[argparse.ArgumentParser, object]:
    parser = argparse.ArgumentParser(prog="mobilemed", description=DESCRIPTION, formatter_class=HelpFormatter)
    add_global_arguments(parser, in_command=False)
    common = argparse.ArgumentParser(add_help=False)
    add_global_arguments(common, in_command=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                                 formatter_class=HelpFormatter)
        if name == chosen:  # only the chosen command's module (and its heavy imports) is loaded
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(handler=module.run)
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, chosen = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what `train --nproc N` hands to each process it starts
    if chosen is None or not hasattr(args, "handler"):
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    _configure_logging(args)
    previous_limit = os.environ.get(MAX_PIXELS_ENV)
    if args.max_image_pixels is not None:  # io.limits reads it wherever images are opened
        os.environ[MAX_PIXELS_ENV] = str(args.max_image_pixels)
    try:
        with warnings.catch_warnings():  # the filter and the hook below last for this command only
            warnings.simplefilter("ignore" if args.quiet and not args.debug else "default")
            warnings.showwarning = _warning_to_log
            return int(args.handler(args) or 0)
    except MobilemedError as err:
        if args.debug:
            raise
        print(f"mobilemed {chosen}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _restore_env(MAX_PIXELS_ENV, previous_limit)


def _configure_logging(args) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    # Library warnings (PIL, pydicom, matplotlib) become log records (_warning_to_log): shown as WARNING
    # normally, silenced by --quiet (see the warnings filter in main), kept by --debug.
    library_level = logging.ERROR if args.quiet and not args.debug else logging.WARNING
    logging.getLogger("py.warnings").setLevel(library_level)
    for noisy in ("matplotlib", "PIL", "urllib3", "h5py", "pydicom"):
        logging.getLogger(noisy).setLevel(library_level)


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line).strip()
    logging.getLogger("py.warnings").warning("%s", text)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


if __name__ == "__main__":
    sys.exit(main())
