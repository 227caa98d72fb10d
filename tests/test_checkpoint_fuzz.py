"""Property-based fuzzing of the checkpoint loader: random bytes, truncations and byte flips of a valid
checkpoint, and mutated payloads and specs inside one. The only outcomes allowed are a loaded model or a
MobilemedError (exit 2 in the CLI): never another exception. 1,050 inputs, derandomized for a stable CI."""
import io
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mobilemed.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from mobilemed.errors import MobilemedError
from mobilemed.models import build_model
from mobilemed.spec import ModelSpec

FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SPEC_FIELDS = ["arch", "class_names", "task", "image_size", "in_chans", "mean", "std", "thresholds",
               "threshold_rule", "temperature", "dropout", "tta", "dicom_voi", "unknown_field"]
ATOMS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=12), st.sampled_from(["binary", "multiclass", "multilabel", "mobilenet_v2_035",
                                                          "mobilenet_v3_small", "youden"]),
                  st.just(torch.zeros(2)))
VALUES = st.one_of(ATOMS, st.lists(ATOMS, max_size=4), st.dictionaries(st.text(max_size=4), ATOMS, max_size=2))


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    spec = ModelSpec(arch="mobilenet_v2_035", class_names=["normal", "pneumonia"], task="binary", image_size=32,
                     in_chans=1, mean=(0.45,), std=(0.22,))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fuzz") / "best.pt"
    save_checkpoint(path, build_model(spec), spec, complete=True)
    return path, path.read_bytes(), read_checkpoint(path)


class Outcomes:
    """Loads `data` through the real loader from a file and tallies what happened."""

    def __init__(self, path):
        self.path, self.loaded, self.refused = path, 0, 0

    def load(self, data: bytes) -> None:
        self.path.write_bytes(data)
        try:
            model, spec = load_checkpoint(self.path)
        except MobilemedError as err:
            assert str(self.path) in str(err) or "checkpoint" in str(err), err
            self.refused += 1
            return
        assert isinstance(spec, ModelSpec) and not model.training
        self.loaded += 1

    @property
    def total(self) -> int:
        return self.loaded + self.refused


def test_random_bytes(tmp_path):
    outcomes = Outcomes(tmp_path / "fuzz.pt")

    @settings(FUZZ, max_examples=400)
    @given(st.one_of(st.binary(max_size=3000), st.binary(max_size=64).map(lambda b: b"PK\x03\x04" + b)))
    def check(data):
        outcomes.load(data)

    check()
    assert outcomes.total >= 400 and outcomes.loaded == 0


def test_truncations_and_byte_flips_of_a_valid_checkpoint(valid, tmp_path):
    _, raw, _ = valid
    outcomes = Outcomes(tmp_path / "fuzz.pt")
    # Flips land in the pickled structure at the start and the zip directory at the end, where they change
    # meaning; a flip inside a weight tensor only changes a number and loads, which is the right outcome.
    positions = st.one_of(st.integers(0, 4095), st.integers(len(raw) - 4096, len(raw) - 1))

    @settings(FUZZ, max_examples=400)
    @given(st.one_of(st.integers(0, len(raw) - 1).map(lambda n: ("cut", n, 0)),
                     st.tuples(st.just("flip"), positions, st.integers(1, 255))))
    def check(change):
        kind, at, mask = change
        data = raw[:at] if kind == "cut" else raw[:at] + bytes([raw[at] ^ mask]) + raw[at + 1:]
        outcomes.load(data)

    check()
    assert outcomes.total >= 400 and outcomes.refused > 200


def test_mutated_payloads_and_specs(valid, tmp_path):
    _, _, payload = valid
    outcomes = Outcomes(tmp_path / "fuzz.pt")
    spec_changes = st.dictionaries(st.sampled_from(SPEC_FIELDS), VALUES, min_size=1, max_size=3)
    spec_deletions = st.sets(st.sampled_from(SPEC_FIELDS[:-1]), max_size=2)
    model_changes = st.sampled_from(["keep", "drop_key", "reshape", "not_tensor", "empty", "not_a_dict"])

    @settings(FUZZ, max_examples=250)
    @given(st.one_of(st.tuples(spec_changes, spec_deletions), VALUES), model_changes,
           st.sampled_from([None, True, False, "yes", 1]))
    def check(spec_change, model_change, complete):
        spec = dict(payload["spec"])
        if isinstance(spec_change, tuple):
            spec.update(spec_change[0])
            for name in spec_change[1]:
                spec.pop(name, None)
        else:
            spec = spec_change  # the whole spec replaced by some other value
        mutated = {**payload, "spec": spec, "model": mutate_state(payload["model"], model_change)}
        if complete is None:
            mutated.pop("complete")
        else:
            mutated["complete"] = complete
        buffer = io.BytesIO()
        torch.save(mutated, buffer)
        outcomes.load(buffer.getvalue())

    check()
    assert outcomes.total >= 250 and outcomes.loaded > 0 and outcomes.refused > 150


def mutate_state(state: dict, how: str):
    first = next(iter(state))
    if how == "drop_key":
        return {k: v for k, v in state.items() if k != first}
    if how == "reshape":
        return {**state, first: torch.zeros(3, 3)}
    if how == "not_tensor":
        return {**state, first: math.pi}
    if how == "empty":
        return {}
    if how == "not_a_dict":
        return [1, 2, 3]
    return state
