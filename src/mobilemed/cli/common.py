"""Arguments shared by several subcommands, and the one place that turns them into config objects."""
from __future__ import annotations

import argparse

from mobilemed.cli.argtypes import FRACTION, NON_NEGATIVE_INT
from mobilemed.data.sources import DataOptions
from mobilemed.errors import MobilemedError


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("data", help="image folder, CSV manifest / NIH table, or MedMNIST name (e.g. pneumoniamnist)")
    group.add_argument("--labels", dest="labels_csv", help="label table (CSV) for an image folder")
    group.add_argument("--image-root", help="folder CSV image paths are relative to (default: the CSV's folder)")
    group.add_argument("--allow-outside-root", action="store_true",
                       help="accept CSV image paths that lead outside the image root (../, absolute paths)")
    group.add_argument("--image-column", help="CSV column with image paths (default: path/image/file/...)")
    group.add_argument("--label-column", help="CSV column with one label per image")
    group.add_argument("--label-columns", type=_comma_list, help="comma-separated multi-hot columns (multi-label)")
    group.add_argument("--label-sep", help="separator of a joined multi-label string, e.g. '|'")
    group.add_argument("--group-column", help="patient / group column: splits never separate a group")
    group.add_argument("--group-pattern",
                       help="regular expression that finds the patient id in each file name (its first group, or "
                            r"the whole match), e.g. '^(person\d+|NORMAL2-IM-\d+|IM-\d+)' for Kermany: splits "
                            "never separate a patient")
    group.add_argument("--split-column", help="column with train/val/test to use as given")
    group.add_argument("--medmnist-size", type=int, default=28, choices=(28, 64, 128, 224),
                       help="MedMNIST image size to load")
    group.add_argument("--val-fraction", type=FRACTION, default=0.1,
                       help="share of the images for validation when the data has no val split, in [0, 1)")
    group.add_argument("--test-fraction", type=FRACTION, default=0.2,
                       help="share of the images for testing when the data has no split, in [0, 1)")
    group.add_argument("--split-seed", type=NON_NEGATIVE_INT, default=0, help="seed of the random split")
    group.add_argument("--resplit", action="store_true",
                       help="ignore the data's own split (train/valid/test folders, split column) and make a fresh "
                            "patient-grouped, stratified one (--val-fraction, --test-fraction, --split-seed)")
    group.add_argument("--ignore-dicom-window", dest="use_voi", action="store_false",
                       help="DICOM: ignore VOI LUT / Window Center-Width and map the full stored range (the "
                            "choice is saved in the model's spec and used by predict and explain)")
    group.add_argument("--skip-bad", action="store_true", help="skip and count unreadable images instead of stopping")
    group.add_argument("--split-folders", type=_split_mapping(many_to_one=False),
                       help="the split folders of an image folder, e.g. train=Training,test=Testing (paths relative "
                            "to DATA); only these are read")
    group.add_argument("--split-values", type=_split_mapping(many_to_one=True),
                       help="what the --split-column values mean, e.g. test=holdout,val=eval (SPLIT=VALUE,...)")
    group.add_argument("--positive-class", help="binary tasks: the class that is the finding (sensitivity, PPV ... "
                                                "describe detecting it); default: the class not named like 'normal'")


def data_options(args) -> DataOptions:
    if args.val_fraction + args.test_fraction >= 1:
        raise MobilemedError(f"--val-fraction {args.val_fraction:g} + --test-fraction {args.test_fraction:g} leave "
                             "no images for training; keep their sum below 1")
    return DataOptions(labels_csv=args.labels_csv, image_root=args.image_root, image_column=args.image_column,
                       label_column=args.label_column, label_columns=args.label_columns, label_sep=args.label_sep,
                       group_column=args.group_column, group_pattern=args.group_pattern,
                       split_column=args.split_column,
                       medmnist_size=args.medmnist_size, val_fraction=args.val_fraction,
                       test_fraction=args.test_fraction, seed=args.split_seed,
                       resplit=args.resplit, use_voi=args.use_voi, split_folders=args.split_folders,
                       split_values=args.split_values, positive_class=args.positive_class,
                       allow_outside_root=args.allow_outside_root)


def operating_rule(args) -> tuple[str, float | None]:
    """(threshold rule, target): --target-sensitivity / --target-specificity choose their rule."""
    if args.target_specificity is not None:
        return "target_specificity", args.target_specificity
    if args.target_sensitivity is not None:
        return "target_sensitivity", args.target_sensitivity
    return args.threshold_rule, None


def _comma_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]



def _split_mapping(*, many_to_one: bool):
    """An argparse type for SPLIT=NAME,... (data/layout.py parse_split_mapping)."""
    def parse(value: str) -> dict[str, str]:
        from mobilemed.data.layout import parse_split_mapping

        try:
            return parse_split_mapping(value, many_to_one=many_to_one)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err
    return parse
