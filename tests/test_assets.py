"""The offline cache: add, verify, and clear errors when something is missing."""
import pytest

from mobilemed import assets
from mobilemed.errors import MobilemedError


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEMED_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MOBILEMED_OFFLINE", "1")
    return tmp_path / "home"


def test_missing_medmnist_names_the_file_and_where(empty_home):
    with pytest.raises(MobilemedError) as err:
        assets.ensure_medmnist("breastmnist", 64)
    message = str(err.value)
    assert "breastmnist_64.npz" in message and str(empty_home / "medmnist") in message
    assert "mobilemed assets add" in message


def test_missing_weights_never_fall_back_to_random(empty_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(empty_home / "torch"))
    with pytest.raises(MobilemedError, match="no ImageNet weights for mobilenet_v2 offline"):
        assets.load_imagenet_state("mobilenet_v2")


def test_width_without_published_weights(empty_home):
    with pytest.raises(MobilemedError, match="publishes no ImageNet weights for mobilenet_v2_035"):
        assets.load_imagenet_state("mobilenet_v2_035")


def test_add_verifies_md5_and_verify_detects_tampering(empty_home, shared, tmp_path):
    target = assets.add_medmnist_file(shared / "data/medmnist/breastmnist.npz")
    assert target == empty_home / "medmnist" / "breastmnist.npz"
    assert assets.ensure_medmnist("breastmnist") == target
    assert [row["ok"] for row in assets.verify_cache()] == [True]
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    assert [row["ok"] for row in assets.verify_cache()] == [False]


def test_add_rejects_a_file_that_is_not_the_official_release(empty_home, tmp_path):
    fake = tmp_path / "pneumoniamnist.npz"
    fake.write_bytes(b"not the official file")
    with pytest.raises(MobilemedError, match="md5"):
        assets.add_medmnist_file(fake)


def test_add_weights_checks_that_they_fit(empty_home, shared):
    with pytest.raises(MobilemedError, match="not a state_dict for mobilenet_v3_small"):
        assets.add_weights_file(shared / "weights/mobilenet_v2_imagenet.pth", "mobilenet_v3_small")
    path = assets.add_weights_file(shared / "weights/mobilenet_v2_imagenet.pth", "mobilenet_v2")
    assert assets.file_digest(path) == "78fd040b1f12e4003af508dbf13337b283e496e29cefc298e3b8c5cfeed4e3a9"
    state = assets.load_imagenet_state("mobilenet_v2")
    assert state["classifier.1.weight"].shape == (1000, 1280)


def test_adding_a_missing_file_is_a_one_line_error(empty_home, tmp_path, capsys):
    from mobilemed.cli.main import main

    assert main(["assets", "add", str(tmp_path / "chestmnist.npz")]) == 2
    assert "chestmnist.npz does not exist" in capsys.readouterr().err
    with pytest.raises(MobilemedError, match="weights.pth does not exist"):
        assets.add_weights_file(tmp_path / "weights.pth", "mobilenet_v2")
