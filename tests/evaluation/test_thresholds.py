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


def test_youden_max_on_a_constructed_example():
    # negatives 0.1-0.4 and 0.65, positives 0.55, 0.6, 0.7-0.9: best J = 5/5 + 4/5 - 1 at a cut in (0.4, 0.55]
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.65, 0.55, 0.6, 0.7, 0.8, 0.9])
    (t,) = choose_thresholds(y, p, task="binary", rule="youden_max")
    assert 0.4 < t <= 0.55
    assert t == pytest.approx(0.475)  # halfway between the admitted score 0.55 and the next lower, 0.4
    sens, spec = sens_spec(y, p, t)
    assert (sens, spec) == (1.0, 0.8)


def test_youden_max_maximises_j_over_all_cuts():
    y, p = scores(400, 1)
    (t,) = choose_thresholds(y, p, task="binary", rule="youden_max")
    best = max(sum(sens_spec(y, p, c)) - 1 for c in np.unique(p))
    assert sum(sens_spec(y, p, t)) - 1 == pytest.approx(best)


def test_youden_stays_within_two_standard_errors_of_the_best_j():
    y, p = scores(400, 1)
    (t,) = choose_thresholds(y, p, task="binary", rule="youden")
    cuts = np.unique(p)
    j = np.array([sum(sens_spec(y, p, c)) - 1 for c in cuts])
    sens, spec = sens_spec(y, p, cuts[j.argmax()])
    se = np.sqrt(sens * (1 - sens) / y.sum() + spec * (1 - spec) / (1 - y).sum())
    assert sum(sens_spec(y, p, t)) - 1 >= j.max() - 2 * se - 1e-12


def flat_plateau(seed: int):
    """A near-perfect validation split like PneumoniaMNIST's (AUROC ~0.997): negatives mostly below 0.1,
    positives mostly above 0.9, and a few of each scattered over the stretch between, so Youden's J is flat
    within a few images from 0.1 to 0.9 and its maximum sits wherever those few images happen to fall."""
    rng = np.random.default_rng(seed)
    neg = np.r_[rng.uniform(0.0, 0.1, 130), rng.uniform(0.1, 0.9, 4)]
    pos = np.r_[rng.uniform(0.9, 1.0, 380), rng.uniform(0.1, 0.9, 8)]
    return np.r_[np.zeros(len(neg), int), np.ones(len(pos), int)], np.r_[neg, pos]


def test_youden_takes_the_middle_of_a_flat_plateau_where_the_maximum_sits_at_its_edge():
    # negatives 0-0.1 (100) and positives 0.9-1 (100); the stretch between holds positives at 0.11 and 0.12
    # and a negative at 0.85: J is 1 - 1/101 at a cut just above 0.1 (the strict maximum, the old rule's
    # choice), 100/102 - 1/101 from 0.12 to 0.85: within two standard errors (2 x 0.0098) of each other, as
    # are the cuts one image into either bulk, so the near-best range runs from about 0.1 to 0.9
    y = np.r_[np.zeros(101, int), np.ones(102, int)]
    p = np.r_[np.linspace(0.0, 0.1, 100), 0.85, np.linspace(0.9, 1.0, 100), 0.11, 0.12]
    (edge,) = choose_thresholds(y, p, task="binary", rule="youden_max")
    (middle,) = choose_thresholds(y, p, task="binary", rule="youden")
    assert 0.1 < edge <= 0.11  # the old rule: the lenient edge, one image from calling it elsewhere
    assert 0.45 < middle < 0.55
    assert sum(sens_spec(y, p, middle)) - 1 == pytest.approx(100 / 102 - 1 / 101)


def test_youden_moves_less_than_the_maximum_between_validation_samples_of_one_model():
    """Forty validation splits of the same score distribution: the plateau rule's thresholds spread less
    than the strict maximum's, which jumps along the flat stretch with the few images on it."""
    chosen = {"youden": [], "youden_max": []}
    for seed in range(40):
        y, p = flat_plateau(seed)
        for rule in chosen:
            chosen[rule].extend(choose_thresholds(y, p, task="binary", rule=rule))
    assert np.std(chosen["youden"]) < 0.7 * np.std(chosen["youden_max"])
    assert 0.4 < np.median(chosen["youden"]) < 0.6


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


def _lopsided_plateau():
    """Negatives 0-0.05 and one at 0.3, positives 0.6-1 and two at 0.07 and 0.08: thresholds from about 0.05
    to 0.6 are within two standard errors of the best J, so the plateau's middle sits near 0.33, below the
    balanced loss's 0.5, which lies on the plateau too."""
    y = np.r_[np.zeros(101, int), np.ones(102, int)]
    p = np.r_[np.linspace(0.0, 0.05, 100), 0.3, np.linspace(0.6, 1.0, 100), 0.07, 0.08]
    return y, p


def test_youden_takes_the_losss_neutral_point_when_validation_cannot_tell_it_from_the_best():
    y, p = _lopsided_plateau()
    (middle,) = choose_thresholds(y, p, task="binary", rule="youden")
    (neutral,) = choose_thresholds(y, p, task="binary", rule="youden", neutral=[0.5])
    assert 0.3 < middle < 0.35 and neutral == 0.5
    assert sum(sens_spec(y, p, 0.5)) - 1 > sum(sens_spec(y, p, middle)) - 1 - 0.02  # on the plateau


def test_youden_keeps_the_middle_when_validation_shows_the_neutral_point_is_worse():
    y, p = _lopsided_plateau()
    (middle,) = choose_thresholds(y, p, task="binary", rule="youden")
    (chosen,) = choose_thresholds(y, p, task="binary", rule="youden", neutral=[0.8])  # among the positives
    assert chosen == middle
    (strict,) = choose_thresholds(y, p, task="binary", rule="youden_max", neutral=[0.5])
    assert strict == choose_thresholds(y, p, task="binary", rule="youden_max")[0]  # only youden uses it


def test_neutral_points_are_per_finding_and_must_match_the_outputs():
    y, p = _lopsided_plateau()
    both = choose_thresholds(np.c_[y, y], np.c_[p, p], task="multilabel", rule="youden", neutral=[0.5, None])
    assert both[0] == 0.5 and both[1] == choose_thresholds(y, p, task="binary")[0]
    with pytest.raises(ValueError, match="2 outputs"):
        choose_thresholds(np.c_[y, y], np.c_[p, p], task="multilabel", neutral=[0.5])
