"""Shared pieces of the fuzz suite: settings, byte-level mutations, and the one property every reader has."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from mobilemed.errors import MobilemedError


def fuzz_settings(max_examples: int):
    """Deterministic (CI runs the same inputs every time), no deadline (the 2-core machine is shared)."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@st.composite
def mutated_bytes(draw, seeds: list[bytes], header: int = 512) -> bytes:
    """A seed file with 1-8 edits: byte flips, overwrites, deletions, insertions, or a cut. Most edits land
    in the first `header` bytes, where the structure a reader trusts lives."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        in_header = draw(st.booleans()) or draw(st.booleans())
        at = draw(st.integers(0, min(len(data), header) - 1 if in_header else len(data) - 1))
        edit = draw(st.sampled_from(("flip", "set", "delete", "insert", "cut")))
        if edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set":
            data[at] = draw(st.sampled_from((0x00, 0xFF, 0x7F, 0x80, 0x01)))
        elif edit == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:]
    return bytes(data)


def truncations(seeds: list[bytes]):
    """A seed cut at any length (0 .. its whole length - 1)."""
    return st.sampled_from(seeds).flatmap(lambda seed: st.integers(0, len(seed) - 1).map(lambda n: seed[:n]))


def assert_info_or_mobilemed_error(path) -> None:
    """io.images.image_info (the audit's header read): a dict of sane facts, or MobilemedError."""
    from mobilemed.io.images import image_info

    try:
        info = image_info(path)
    except MobilemedError as err:
        assert str(err)
        return
    assert set(info) == {"width", "height", "mode", "bit_depth"} and info["width"] >= 0 and info["height"] >= 0


def assert_pixels_or_mobilemed_error(read, size: int | None) -> str:
    """Run read(); the only outcomes allowed are uint8 pixels of a sane shape or MobilemedError."""
    try:
        pixels = read()
    except MobilemedError as err:
        assert str(err), "an empty error message tells the user nothing"
        note_outcome("refused")
        return "refused"
    assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
    assert pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3), pixels.shape
    if size is not None:
        assert pixels.shape[:2] == (size, size)
    assert min(pixels.shape[:2]) > 0
    note_outcome("read")
    return "read"


def note_outcome(outcome: str) -> None:
    """Count the outcome for --hypothesis-show-statistics (a fuzz test that only refuses proves little)."""
    if currently_in_test_context():
        event(outcome)
