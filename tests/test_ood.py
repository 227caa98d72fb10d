"""The Mahalanobis OOD detector against direct computations (scikit-learn, scipy)."""
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from mobilemed.ood import MahalanobisDetector, ledoit_wolf


@pytest.fixture
def two_classes():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(8, 8))
    x = rng.normal(size=(300, 8)) @ mixing
    y = rng.integers(0, 2, 300)
    x[y == 1] += 4.0
    return x, y


def test_ledoit_wolf_matches_scikit_learn(two_classes):
    x, _ = two_classes
    centred = x - x.mean(axis=0)
    covariance, shrinkage = ledoit_wolf(centred)
    reference = LedoitWolf(assume_centered=True).fit(centred)
    assert shrinkage == pytest.approx(reference.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(covariance, reference.covariance_, rtol=1e-10)


def test_score_is_the_smallest_class_mahalanobis_distance(two_classes):
    x, y = two_classes
    detector = MahalanobisDetector(normalize=False).fit(x, y)
    assert detector.means_.shape == (2, 8) and detector.fit(x, y) is not None
    centred = np.concatenate([x[y == k] - x[y == k].mean(axis=0) for k in (0, 1)])
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(centred).covariance_)
    direct = [min(mahalanobis(row, x[y == k].mean(axis=0), precision) ** 2 for k in (0, 1)) for row in x[:20]]
    np.testing.assert_allclose(detector.score(x[:20]), direct, rtol=1e-8)


def test_without_labels_one_gaussian_is_fitted(two_classes):
    x, _ = two_classes
    detector = MahalanobisDetector(normalize=False).fit(x)
    assert detector.means_.shape == (1, 8)
    np.testing.assert_allclose(detector.means_[0], x.mean(axis=0))


def test_threshold_is_the_validation_quantile_and_flags_shifted_data(two_classes):
    x, y = two_classes
    detector = MahalanobisDetector(normalize=False).fit(x[:200], y[:200]).set_threshold(x[200:], 0.95)
    val_scores = detector.score(x[200:])
    assert detector.threshold_ == pytest.approx(np.quantile(val_scores, 0.95))
    assert detector.in_distribution(val_scores).mean() == pytest.approx(0.95, abs=0.011)
    far = x[200:] + 25.0  # another source: shifted far from both classes
    assert not detector.in_distribution(detector.score(far)).any()
    with pytest.raises(ValueError, match="quantile"):
        detector.set_threshold(x, 1.5)


def test_state_round_trip_keeps_scores(two_classes):
    x, y = two_classes
    detector = MahalanobisDetector().fit(x, y).set_threshold(x, 0.99)
    state = detector.to_state()
    assert state["method"] == "mahalanobis_l2" and state["precision"].dtype == np.float32
    again = MahalanobisDetector.from_state(state)
    np.testing.assert_allclose(again.score(x), detector.score(x), rtol=1e-4)
    assert again.threshold_ == detector.threshold_
    assert MahalanobisDetector.from_state(MahalanobisDetector(False).fit(x, y).set_threshold(x).to_state()).normalize \
        is False
    with pytest.raises(ValueError, match="unknown OOD method"):
        MahalanobisDetector.from_state({**state, "method": "energy"})


def test_normalized_detector_is_the_plain_one_on_unit_vectors(two_classes):
    x, y = two_classes
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    normalized = MahalanobisDetector().fit(x, y)
    plain = MahalanobisDetector(normalize=False).fit(unit, y)
    np.testing.assert_allclose(normalized.score(3.0 * x[:10]), plain.score(unit[:10]), rtol=1e-10)


def test_features_on_one_direction_still_fit_and_flag_anything_off_it(caplog):
    direction = np.random.default_rng(0).normal(size=64)
    collapsed = np.outer(2.0 ** np.arange(-15, 15), direction)  # one direction, only the norm moves (exactly)
    detector = MahalanobisDetector().fit(collapsed, np.arange(30) % 2)
    assert "degenerate" in caplog.text
    on_it = detector.score(collapsed[:3] * 8)
    off_it = detector.score(np.random.default_rng(1).normal(size=(3, 64)))
    assert np.isfinite(on_it).all() and on_it.max() < 1e-3 * off_it.min()
