"""Options: numbers out of range refused at parse time with the valid range, global options after the
command, and help text with the default for every option of every command."""
import argparse

import pytest

from mobilemed.cli.main import COMMANDS, HelpFormatter, build_parser, main
from tests.conftest import tiny_train_args

TINY = tiny_train_args()


def parse_error(capsys, *argv):
    """Exit code and the one error line of an argparse refusal."""
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, argv)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("mobilemed")]
    assert len(lines) == 1, err
    return exit_info.value.code, lines[0]


@pytest.mark.parametrize("option, value, valid", [
    ("--epochs", "0", "a whole number >= 1"), ("--epochs", "-3", "a whole number >= 1"),
    ("--epochs", "ten", "'ten' is not a whole number"), ("--batch-size", "0", "a whole number >= 1"),
    ("--batch-size", "-4", "a whole number >= 1"), ("--image-size", "0", "a whole number >= 1"),
    ("--n-bootstrap", "-1", "a whole number >= 0"), ("--val-fraction", "1", "[0, 1)"),
    ("--test-fraction", "-0.1", "[0, 1)"), ("--lr", "0", "(0, inf)"), ("--lr", "nan", "(0, inf)"),
    ("--dropout", "1", "[0, 1)"), ("--ema", "1.5", "[0, 1)"), ("--patience", "-1", "a whole number >= 0"),
    ("--target-sensitivity", "1", "(0, 1)"), ("--target-specificity", "0", "(0, 1)"),
    ("--seed", "-2", "a whole number >= 0"), ("--max-image-pixels", "0", "a whole number >= 1")])
def test_train_numbers_out_of_range_are_refused_at_parse_time(capsys, tmp_path, option, value, valid):
    code, line = parse_error(capsys, "train", tmp_path / "nowhere", *TINY, option, value)
    assert code == 2 and f"argument {option}" in line and valid in line
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("argv, option, valid", [
    (["evaluate", "best.pt", "data", "--n-bootstrap", "-1"], "--n-bootstrap", ">= 0"),
    (["evaluate", "best.pt", "data", "--seed", "-1"], "--seed", ">= 0"),
    (["compare", "a", "b", "--n-bootstrap", "0"], "--n-bootstrap", ">= 1"),
    (["predict", "best.pt", "x.png", "--max-image-pixels", "-5"], "--max-image-pixels", ">= 1"),
    (["audit", "data", "--val-fraction", "2"], "--val-fraction", "[0, 1)")])
def test_other_commands_refuse_numbers_out_of_range(capsys, argv, option, valid):
    code, line = parse_error(capsys, *argv)
    assert code == 2 and f"argument {option}" in line and valid in line


def run_cli(capsys, *argv):
    code = main([*map(str, argv)])
    return code, capsys.readouterr().err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("mobilemed")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_image_size_below_the_architecture_minimum_names_both(capsys, blob_folder, tmp_path):
    code, err = run_cli(capsys, "--quiet", "train", blob_folder, *TINY, "--image-size", "7", "--out", tmp_path / "r")
    assert code == 2
    assert "--image-size 7 is below the 32 px that mobilenet_v3_small needs" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_a_target_rule_without_its_target_is_refused_before_training(capsys, blob_folder, tmp_path):
    code, err = run_cli(capsys, "--quiet", "train", blob_folder, *TINY, "--threshold-rule", "target_sensitivity",
                        "--out", tmp_path / "r")
    assert code == 2 and "needs --target-sensitivity VALUE in (0, 1)" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_fractions_that_leave_no_training_images_are_refused(capsys, blob_folder, tmp_path):
    code, err = run_cli(capsys, "--quiet", "train", blob_folder, *TINY, "--val-fraction", "0.5",
                        "--test-fraction", "0.5", "--out", tmp_path / "r")
    assert code == 2 and "keep their sum below 1" in one_error_line(err)


def test_debug_and_quiet_work_after_the_command(capsys, tmp_path):
    from mobilemed.errors import MobilemedError

    with pytest.raises(MobilemedError):  # --debug after the command: the traceback is shown
        main(["train", str(tmp_path / "nowhere"), *TINY, "--debug"])
    parser, _ = build_parser(["report", "run", "--quiet"])
    args = parser.parse_args(["--debug", "report", "run", "--quiet"])
    assert args.debug and args.quiet  # given before the command, not reset by the command's own default
    args = parser.parse_args(["report", "run"])
    assert not args.debug and not args.quiet and args.max_image_pixels is None


def command_parsers():
    for name in COMMANDS:
        parser, _ = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        yield from nested_parsers(name, sub.choices[name])


def nested_parsers(name, parser):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from nested_parsers(f"{name} {sub_name}", sub)


def test_every_option_of_every_command_has_help_and_shows_its_default():
    formatter = HelpFormatter("mobilemed")
    checked = 0
    for name, parser in command_parsers():
        assert parser.formatter_class is HelpFormatter or " " in name, name
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name} {action.dest} has no help text"
            if action.option_strings and action.default not in (None, argparse.SUPPRESS):
                assert "default" in formatter._get_help_string(action), f"{name} {action.option_strings[0]}"
            checked += 1
    assert checked > 80
