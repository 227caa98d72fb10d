"""argparse `type=` callables that refuse out-of-range numbers at parse time, stating the valid range.

argparse turns the ArgumentTypeError into `mobilemed CMD: error: argument --epochs: ...` and exit code 2,
before any file is read or written.
"""
from __future__ import annotations

import argparse
import math


def int_at_least(low: int):
    """A whole number >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use one >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range; use a whole number >= {low}")
        return value
    parse.__name__ = f"int >= {low}"  # argparse names the type in some messages
    return parse


def float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = True):
    """A finite number in the range [low, high) by default; low_open / high_open exclude the ends."""
    upper = "inf" if math.isinf(high) else f"{high:g}"
    shown = f"{'(' if low_open else '['}{low:g}, {upper}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; use one in {shown}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if math.isnan(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use a number in {shown}")
        return value
    parse.__name__ = f"number in {shown}"
    return parse


POSITIVE_INT = int_at_least(1)
NON_NEGATIVE_INT = int_at_least(0)
FRACTION = float_in(0.0, 1.0)                                  # [0, 1)
PROBABILITY_TARGET = float_in(0.0, 1.0, low_open=True)         # (0, 1)
QUANTILE = float_in(0.0, 1.0, low_open=True, high_open=False)  # (0, 1]
POSITIVE_FLOAT = float_in(0.0, math.inf, low_open=True)        # (0, inf)
NON_NEGATIVE_FLOAT = float_in(0.0, math.inf)                   # [0, inf)


def port(text: str) -> int:
    """A TCP port, 1 to 65535 (0 would bind a random port the user could not find)."""
    value = POSITIVE_INT(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port; use a number from 1 to 65535")
    return value
