"""Temperature scaling recovers a known temperature; ECE is small for calibrated data and large otherwise."""
import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import roc_auc_score

from mobilemed.evaluation.calibration import (apply_temperature, expected_calibration_error, fit_temperature,
                                              probabilities_from_logits, reliability_curve)


@pytest.mark.parametrize("true_t", [0.5, 2.0, 3.0])
def test_binary_temperature_recovers_a_known_t(true_t):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, 8000)               # calibrated logits
    y = (rng.random(8000) < expit(z)).astype(int)
    observed = (z * true_t)[:, None]           # (N, 1) as the binary head gives; over/under-confident
    t = fit_temperature(observed, y, task="binary")
    assert t == pytest.approx(true_t, rel=0.08)
    calibrated = apply_temperature(observed, t, "binary")
    assert calibrated.shape == (8000,)
    assert expected_calibration_error(y, calibrated, "binary") < expected_calibration_error(
        y, probabilities_from_logits(observed, "binary"), "binary")


def test_multiclass_and_multilabel_temperature():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (6000, 4))
    y = np.array([rng.choice(4, p=row) for row in softmax(z, axis=1)])
    assert fit_temperature(z * 2.5, y, task="multiclass") == pytest.approx(2.5, rel=0.08)
    zm = rng.normal(-1, 2.0, (3000, 5))
    ym = (rng.random(zm.shape) < expit(zm)).astype(int)
    assert fit_temperature(zm * 0.6, ym, task="multilabel") == pytest.approx(0.6, rel=0.08)


def test_temperature_never_changes_the_ranking():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 500)
    y = (rng.random(500) < expit(z)).astype(int)
    assert roc_auc_score(y, apply_temperature(z, 3.0, "binary")) == pytest.approx(
        roc_auc_score(y, probabilities_from_logits(z, "binary")))


def test_ece_is_small_for_calibrated_data_and_large_for_overconfident():
    rng = np.random.default_rng(3)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p, "binary") < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(y, overconfident, "binary") > 0.2


def test_multiclass_ece_uses_top_class_confidence():
    # always 90% confident and right 90% of the time: calibrated
    n = 1000
    y = np.zeros(n, dtype=int)
    probs = np.tile([0.9, 0.05, 0.05], (n, 1))
    probs[: n // 10] = [0.05, 0.9, 0.05]  # wrong on 10%
    assert expected_calibration_error(y, probs, "multiclass") == pytest.approx(0.0, abs=1e-12)
    probs[: n // 5] = [0.05, 0.9, 0.05]   # wrong on 20%: gap 0.1
    assert expected_calibration_error(y, probs, "multiclass") == pytest.approx(0.1)


def test_reliability_curve_bins():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.95, 1.0, 0.5, 0.55])
    curve = reliability_curve(y, p, "binary", n_bins=10)
    assert curve["count"].sum() == 5 and curve["count"][9] == 2  # p = 1.0 joins the last bin
    assert curve["observed"][9] == 1.0 and curve["mean_predicted"][9] == pytest.approx(0.975)
    assert np.isnan(curve["observed"][3])


def test_probabilities_from_logits_shapes():
    assert probabilities_from_logits(np.zeros((3, 1)), "binary").shape == (3,)
    assert np.allclose(probabilities_from_logits(np.zeros((2, 4)), "multiclass"), 0.25)
    assert np.allclose(probabilities_from_logits(np.array([[0.0, 100.0]]), "multilabel"), [[0.5, 1.0]])
    with pytest.raises(ValueError):
        probabilities_from_logits(np.zeros((3, 2)), "binary")
