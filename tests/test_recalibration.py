"""mobilemed recalibrate: thresholds, temperature and OOD threshold re-chosen on a site's sample, recorded."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from mobilemed.checkpoint import load_ood_detector, read_checkpoint
from mobilemed.cli.main import main
from mobilemed.data.cache import decoded_images
from mobilemed.evaluation.calibration import fit_temperature, probabilities_from_logits
from mobilemed.evaluation.thresholds import choose_thresholds
from mobilemed.inference import Predictor
from mobilemed.recalibration import site_labels, site_table
from tests.conftest import make_blob_folder, train_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    checkpoint, _ = train_tiny_checkpoint(tmp_path_factory.mktemp("recal"), image_px=48, image_size=64)
    return checkpoint


@pytest.fixture
def shifted_site(tmp_path):
    """A site whose images are brighter than the training ones (another scanner), class folders only."""
    site = make_blob_folder(tmp_path / "site", per_class=10, size=48, splits=(None,), seed=7)
    for file in site.rglob("*.png"):
        pixels = np.asarray(Image.open(file), dtype=np.int32)
        Image.fromarray(np.clip(pixels + 60, 0, 255).astype(np.uint8)).save(file)
    return site


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_recalibrate_rechooses_on_the_site_and_records_provenance(tiny_model, shifted_site, tmp_path):
    before = digest(tiny_model)
    old = read_checkpoint(tiny_model)["spec"]
    out = tmp_path / "site.pt"
    assert main(["--quiet", "recalibrate", str(tiny_model), str(shifted_site), "--out", str(out),
                 "--target-sensitivity", "0.99", "--refit-ood", "--ood-quantile", "0.9"]) == 0
    assert digest(tiny_model) == before  # the input checkpoint is untouched

    new = Predictor.from_checkpoint(out)
    spec, site = new.spec, site_table(str(shifted_site), None, "all")
    labels = site_labels(site, spec, str(shifted_site))
    assert len(site) == 20  # every image of the folder, no split carved out
    images, _ = decoded_images(site, spec.image_size, progress=False)
    original = Predictor.from_checkpoint(tiny_model).predict_images(np.asarray(images), list(site.paths))
    temperature = fit_temperature(original.logits, labels, task="binary")
    assert spec.temperature == pytest.approx(temperature)
    expected = choose_thresholds(labels, probabilities_from_logits(original.logits, "binary", temperature),
                                 task="binary", rule="target_sensitivity", target=0.99)
    assert spec.thresholds == pytest.approx(expected) and spec.thresholds != old["thresholds"]
    result = new.predict_images(np.asarray(images), list(site.paths))
    assert (result.probabilities[labels == 1] >= spec.thresholds[0]).all()  # site sensitivity is 1 as asked
    assert spec.ood_threshold == pytest.approx(np.quantile(original.ood_score, 0.9), rel=1e-5)
    assert load_ood_detector(out).threshold_ == pytest.approx(spec.ood_threshold)

    record = spec.provenance["thresholds"]
    assert record["data"] == str(shifted_site) and record["n"] == 20 and record["split"] == "all"
    assert record["rule"] == "target_sensitivity" and record["previous"] == old["thresholds"]
    assert spec.provenance["temperature"]["previous"] == old["temperature"]
    assert spec.provenance["ood_threshold"]["quantile"] == 0.9


def test_recalibrate_refuses_bad_input_before_writing(tiny_model, shifted_site, tmp_path, capsys):
    before = digest(tiny_model)
    assert main(["recalibrate", str(tiny_model), str(shifted_site), "--out", str(tiny_model)]) == 2
    assert "never overwrites" in capsys.readouterr().err and digest(tiny_model) == before
    other = make_blob_folder(tmp_path / "other", per_class=2, splits=(None,))
    (other / "normal").rename(other / "cat")
    out = tmp_path / "x.pt"
    assert main(["recalibrate", str(tiny_model), str(other), "--out", str(out)]) == 2
    assert "the model knows normal, pneumonia" in capsys.readouterr().err and not out.exists()
    assert main(["recalibrate", str(tiny_model), str(shifted_site), "--out", str(out), "--threshold-rule",
                 "target_specificity"]) == 2
    assert "--target-specificity" in capsys.readouterr().err and not out.exists()


def test_site_labels_follow_the_model_class_order_case_insensitively():
    from mobilemed.data.table import ImageTable
    from mobilemed.errors import MobilemedError
    from mobilemed.spec import ModelSpec

    spec = ModelSpec(arch="mobilenet_v2", class_names=["NORMAL", "PNEUMONIA"], task="binary")
    site = ImageTable(paths=["a", "b", "c"], labels=np.array([0, 1, 1]), class_names=["pneumonia", "normal"],
                      task="binary", splits=["", "", ""])
    assert site_labels(site, spec, "site").tolist() == [1, 0, 0]
    findings = ModelSpec(arch="mobilenet_v2", class_names=["Effusion", "Mass"], task="multilabel")
    multi = ImageTable(paths=["a", "b"], labels=np.array([[1, 0, 1], [0, 1, 0]], np.float32),
                       class_names=["mass", "Other", "effusion"], task="multilabel", splits=["", ""])
    assert site_labels(multi, findings, "site").tolist() == [[1, 1], [0, 0]]
    with pytest.raises(MobilemedError, match="is a multilabel task but the model is binary"):
        site_labels(multi, spec, "site")


def test_recalibrate_checkpoint_is_a_library_verb(tiny_model, shifted_site, tmp_path):
    """Called from Python: the same result object the CLI prints, and the same refusal of a missing target."""
    from mobilemed.errors import MobilemedError
    from mobilemed.recalibration import recalibrate_checkpoint

    done = recalibrate_checkpoint(tiny_model, str(shifted_site), tmp_path / "site.pt", calibrate=False)
    assert done.n == 20 and done.path.is_file()
    assert done.after.temperature == done.before.temperature  # calibrate=False keeps it
    record = done.after.provenance["thresholds"]
    assert record["n"] == 20 and record["data"] == str(shifted_site) and record["previous"] == done.before.thresholds
    with pytest.raises(MobilemedError, match="target"):
        recalibrate_checkpoint(tiny_model, str(shifted_site), tmp_path / "x.pt", threshold_rule="target_sensitivity")
    assert not (tmp_path / "x.pt").exists()
