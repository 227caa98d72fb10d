"""Operating points chosen on validation by a named rule; test labels can never move them."""
import numpy as np
import pytest

from mobilemed.errors import MobilemedError
from mobilemed.evaluation.metrics import compute_metrics
from mobilemed.evaluation.thresholds import choose_thresholds

BINARY = ["NORMAL", "PNEUMONIA"]


def sens_spec(y, p, t):
    pred = p >= t
    return np.mean(pred[y == 1]), np.mean(~pred[y == 0])


def scores(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    return y, 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1.2, n))))


def test_youden_on_a_constructed_example():
    # negatives 0.1-0.4 and 0.65, positives 0.55, 0.6, 0.7-0.9: best J = 5/5 + 4/5 - 1 at a cut in (0.4, 0.55]
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.65, 0.55, 0.6, 0.7, 0.8, 0.9])
    (t,) = choose_thresholds(y, p, task="binary", rule="youden")
    assert 0.4 < t <= 0.55
    assert t == pytest.approx(0.475)  # halfway between the admitted score 0.55 and the next lower, 0.4
    sens, spec = sens_spec(y, p, t)
    assert (sens, spec) == (1.0, 0.8)


def test_youden_maximises_j_over_all_cuts():
    y, p = scores(400, 1)
    (t,) = choose_thresholds(y, p, task="binary", rule="youden")
    best = max(sum(sens_spec(y, p, c)) - 1 for c in np.unique(p))
    assert sum(sens_spec(y, p, t)) - 1 == pytest.approx(best)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_target_sensitivity_is_achieved_on_validation_with_the_best_specificity(target):
    y, p = scores(500, 2)
    (t,) = choose_thresholds(y, p, task="binary", rule="target_sensitivity", target=target)
    sens, spec = sens_spec(y, p, t)
    assert sens >= target
    # the next stricter cut (dropping the lowest admitted score) misses the target: t has the best specificity
    lowest_admitted = p[p >= t].min()
    assert sens_spec(y, p, np.nextafter(lowest_admitted, 1.0))[0] < target


def test_target_specificity_is_achieved_on_validation():
    y, p = scores(500, 3)
    (t,) = choose_thresholds(y, p, task="binary", rule="target_specificity", target=0.9)
    sens, spec = sens_spec(y, p, t)
    assert spec >= 0.9
    looser = np.unique(p[p < t])
    assert sens_spec(y, p, looser[-1])[1] < 0.9  # admitting one more score would break the target


def test_fixed_rule_and_multiclass():
    y, p = scores(50, 4)
    assert choose_thresholds(y, p, task="binary", rule="fixed", target=0.3) == [0.3]
    assert choose_thresholds(y, p, task="binary", rule="fixed") == [0.5]
    assert choose_thresholds(np.array([0, 1, 2]), np.eye(3), task="multiclass") == []


def test_multilabel_gets_one_threshold_per_finding_and_survives_a_finding_without_positives():
    rng = np.random.default_rng(5)
    y = (rng.random((300, 3)) < [0.3, 0.2, 0.0]).astype(int)
    p = np.clip(0.4 * y + 0.6 * rng.random((300, 3)), 0, 1)
    thresholds = choose_thresholds(y, p, task="multilabel", rule="target_sensitivity", target=0.9)
    assert len(thresholds) == 3 and thresholds[2] == 0.5
    for k in range(2):
        assert sens_spec(y[:, k], p[:, k], thresholds[k])[0] >= 0.9


def test_bad_rules_are_user_errors_naming_the_fix():
    y, p = scores(50, 6)
    with pytest.raises(MobilemedError, match="--target-sensitivity 0.95"):
        choose_thresholds(y, p, task="binary", rule="target_sensitivity")
    with pytest.raises(MobilemedError, match="youden"):
        choose_thresholds(y, p, task="binary", rule="best")


@pytest.mark.parametrize("rule,target", [("youden", None), ("target_sensitivity", 0.95), ("target_specificity", 0.9)])
def test_threshold_never_depends_on_test_labels(rule, target):
    """Choose on validation, evaluate on test; then shuffle, flip and replace the test labels: the chosen
    threshold, and the threshold the test metrics report and use, stay identical."""
    y_val, p_val = scores(300, 10)
    y_test, p_test = scores(400, 11)
    spec_thresholds = choose_thresholds(y_val, p_val, task="binary", rule=rule, target=target)
    rng = np.random.default_rng(0)
    for labels in (y_test, rng.permutation(y_test), 1 - y_test, np.ones_like(y_test), np.zeros_like(y_test)):
        again = choose_thresholds(y_val, p_val, task="binary", rule=rule, target=target)
        report = compute_metrics(labels, p_test, task="binary", class_names=BINARY, thresholds=spec_thresholds,
                                 n_bootstrap=0)
        assert again == spec_thresholds
        assert report.thresholds == spec_thresholds
        assert report.per_class["PNEUMONIA"]["threshold"] == spec_thresholds[0]
        # the predictions at the operating point are the same whatever the labels say
        matrix = np.array(report.confusion_matrix)
        assert matrix[:, 1].sum() == int(np.sum(p_test >= spec_thresholds[0]))
