"""compute_metrics: known values, agreement with scikit-learn, and CIs against a plain percentile bootstrap."""
import json
import time

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, precision_score, recall_score, roc_auc_score)

from mobilemed.evaluation import resampling as rs
from mobilemed.evaluation.metrics import compute_metrics, format_summary

BINARY = ["NORMAL", "PNEUMONIA"]


def binary_data(n=624, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.62).astype(int)
    p = 1 / (1 + np.exp(-(1.6 * (2 * y - 1) + rng.normal(0, 1.3, n))))
    return y, p


def test_perfect_binary_predictions():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.95])
    report = compute_metrics(y, p, task="binary", class_names=BINARY, n_bootstrap=0)
    for name in ("auroc_macro", "average_precision_macro", "accuracy", "balanced_accuracy", "sensitivity_macro",
                 "specificity_macro", "ppv_macro", "npv_macro", "f1_macro"):
        assert report.overall[name].value == pytest.approx(1.0), name
        assert report.overall[name].ci_low is None
    assert report.confusion_matrix == [[3, 0], [0, 4]]


def test_hand_checked_binary_confusion_matrix_at_threshold():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.6, 0.7, 0.2, 0.5, 0.55, 0.8, 0.9, 0.65])
    report = compute_metrics(y, p, task="binary", class_names=BINARY, thresholds=[0.5], n_bootstrap=0)
    # p >= 0.5 positive: TN 2 (0.1, 0.4), FP 2 (0.6, 0.7), FN 1 (0.2), TP 5
    assert report.confusion_matrix == [[2, 2], [1, 5]]
    o = report.overall
    assert o["sensitivity_macro"].value == pytest.approx(5 / 6)
    assert o["specificity_macro"].value == pytest.approx(2 / 4)
    assert o["ppv_macro"].value == pytest.approx(5 / 7)
    assert o["npv_macro"].value == pytest.approx(2 / 3)
    assert o["accuracy"].value == pytest.approx(0.7)
    assert o["balanced_accuracy"].value == pytest.approx((5 / 6 + 0.5) / 2)
    assert o["auroc_macro"].value == pytest.approx(roc_auc_score(y, p))
    # the threshold moves the operating point, never the ranking metrics
    strict = compute_metrics(y, p, task="binary", class_names=BINARY, thresholds=[0.75], n_bootstrap=0)
    assert strict.confusion_matrix == [[4, 0], [4, 2]]
    assert strict.overall["auroc_macro"].value == o["auroc_macro"].value


def test_binary_values_match_sklearn():
    y, p = binary_data()
    pred = (p >= 0.4).astype(int)
    o = compute_metrics(y, p, task="binary", class_names=BINARY, thresholds=[0.4], n_bootstrap=0).overall
    assert o["auroc_macro"].value == pytest.approx(roc_auc_score(y, p))
    assert o["average_precision_macro"].value == pytest.approx(average_precision_score(y, p))
    assert o["accuracy"].value == pytest.approx(accuracy_score(y, pred))
    assert o["balanced_accuracy"].value == pytest.approx(balanced_accuracy_score(y, pred))
    assert o["sensitivity_macro"].value == pytest.approx(recall_score(y, pred))
    assert o["specificity_macro"].value == pytest.approx(recall_score(1 - y, 1 - pred))
    assert o["ppv_macro"].value == pytest.approx(precision_score(y, pred))
    assert o["npv_macro"].value == pytest.approx(precision_score(1 - y, 1 - pred))
    assert o["f1_macro"].value == pytest.approx(f1_score(y, pred))


def test_multiclass_per_class_values_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    logits = 1.5 * np.eye(4)[y] + rng.normal(0, 1, (300, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = ["a", "b", "c", "d"]
    report = compute_metrics(y, p, task="multiclass", class_names=names, n_bootstrap=0)
    pred = p.argmax(1)
    assert report.confusion_matrix == confusion_matrix(y, pred).tolist()
    assert report.thresholds == []
    recalls = recall_score(y, pred, average=None)
    precisions = precision_score(y, pred, average=None)
    for k, name in enumerate(names):
        entry = report.per_class[name]
        assert entry["auroc"].value == pytest.approx(roc_auc_score(y == k, p[:, k]))
        assert entry["average_precision"].value == pytest.approx(average_precision_score(y == k, p[:, k]))
        assert entry["sensitivity"].value == pytest.approx(recalls[k])
        assert entry["ppv"].value == pytest.approx(precisions[k])
        assert entry["n_positive"] == int((y == k).sum())
    o = report.overall
    assert o["auroc_macro"].value == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert o["accuracy"].value == pytest.approx(accuracy_score(y, pred))
    assert o["balanced_accuracy"].value == pytest.approx(balanced_accuracy_score(y, pred))
    assert o["f1_macro"].value == pytest.approx(f1_score(y, pred, average="macro"))


def test_multilabel_finding_without_positives_has_no_auroc_but_no_crash():
    rng = np.random.default_rng(5)
    y = (rng.random((200, 3)) < [0.3, 0.1, 0.0]).astype(int)
    p = np.clip(0.5 * y + 0.6 * rng.random((200, 3)), 0, 1)
    names = ["Effusion", "Mass", "Hernia"]
    report = compute_metrics(y, p, task="multilabel", class_names=names, thresholds=[0.5, 0.4, 0.5], n_bootstrap=200)
    hernia = report.per_class["Hernia"]
    assert hernia["n_positive"] == 0
    assert hernia["auroc"].value is None and hernia["sensitivity"].value is None
    assert hernia["specificity"].value is not None
    assert report.per_class["Mass"]["threshold"] == 0.4
    expected = np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(2)])
    assert report.overall["auroc_macro"].value == pytest.approx(expected)
    assert report.overall["accuracy"].value == pytest.approx(np.mean((p >= [0.5, 0.4, 0.5]) == y))
    assert report.confusion_matrix is None
    tn_fp, fn_tp = report.per_class["Effusion"]["confusion_matrix"]
    assert sum(tn_fp) + sum(fn_tp) == 200
    json.dumps(report.to_dict(), allow_nan=False)  # undefined values are null, never NaN
    assert "Hernia" in format_summary(report.to_dict())


def test_weighted_resample_statistics_equal_sklearn_on_resampled_arrays():
    """Each vectorised resample equals scikit-learn run on the explicitly resampled arrays."""
    y, p = binary_data(n=150, seed=2)
    p = np.round(p, 2)  # ties exercise the midrank handling
    weights = next(rs.iter_bootstrap_weights(150, 5, seed=11))
    rng = np.random.default_rng(11)
    idx = rng.integers(0, 150, (5, 150))
    truth = y == 1
    auroc = rs.weighted_auroc(weights, truth, p)
    ap = rs.weighted_average_precision(weights, truth, p)
    for b in range(5):
        assert np.array_equal(np.bincount(idx[b], minlength=150), weights[b])
        assert auroc[b] == pytest.approx(roc_auc_score(y[idx[b]], p[idx[b]]))
        assert ap[b] == pytest.approx(average_precision_score(y[idx[b]], p[idx[b]]))


def reference_bootstrap(y, p, threshold, n_resamples, seed):
    """A direct percentile bootstrap: resample the images, recompute each metric (AUROC and AP with
    scikit-learn, the rates by counting), take the 2.5th and 97.5th percentiles."""
    rng = np.random.default_rng(seed)
    values = {"auroc": [], "ap": [], "accuracy": [], "sensitivity": [], "specificity": [], "ppv": [], "npv": []}
    for _ in range(n_resamples):
        i = rng.integers(0, len(y), len(y))
        yt, pp = y[i] == 1, p[i]
        pred = pp >= threshold
        tp, fp, tn, fn = np.sum(yt & pred), np.sum(~yt & pred), np.sum(~yt & ~pred), np.sum(yt & ~pred)
        values["auroc"].append(roc_auc_score(yt, pp))
        values["ap"].append(average_precision_score(yt, pp))
        values["accuracy"].append((tp + tn) / len(yt))
        values["sensitivity"].append(tp / (tp + fn))
        values["specificity"].append(tn / (tn + fp))
        values["ppv"].append(tp / (tp + fp))
        values["npv"].append(tn / (tn + fn))
    return {k: np.percentile(v, [2.5, 97.5]) for k, v in values.items()}


def test_confidence_intervals_agree_with_direct_percentile_bootstrap():
    y, p = binary_data()
    report = compute_metrics(y, p, task="binary", class_names=BINARY, thresholds=[0.45], n_bootstrap=1000, seed=0)
    # an independent implementation AND independent resamples (another seed): Monte Carlo error only
    reference = reference_bootstrap(y, p, 0.45, 1000, seed=2024)
    names = {"auroc": "auroc_macro", "ap": "average_precision_macro", "accuracy": "accuracy",
             "sensitivity": "sensitivity_macro", "specificity": "specificity_macro", "ppv": "ppv_macro",
             "npv": "npv_macro"}
    for ref_name, name in names.items():
        estimate = report.overall[name]
        assert estimate.ci_low < estimate.value < estimate.ci_high, name
        assert estimate.ci_low == pytest.approx(reference[ref_name][0], abs=0.01), name
        assert estimate.ci_high == pytest.approx(reference[ref_name][1], abs=0.01), name
    assert report.bootstrap["n_resamples"] == 1000 and report.bootstrap["seed"] == 0


def test_bootstrap_is_seeded_and_fast():
    y, p = binary_data()
    started = time.perf_counter()
    a = compute_metrics(y, p, task="binary", class_names=BINARY, n_bootstrap=1000, seed=7)
    binary_seconds = time.perf_counter() - started
    b = compute_metrics(y, p, task="binary", class_names=BINARY, n_bootstrap=1000, seed=7)
    assert a.to_dict() == b.to_dict()
    rng = np.random.default_rng(0)
    y14 = (rng.random((200, 14)) < np.linspace(0.01, 0.3, 14)).astype(int)
    p14 = np.clip(0.3 * y14 + 0.7 * rng.random((200, 14)), 0, 1)
    started = time.perf_counter()
    compute_metrics(y14, p14, task="multilabel", class_names=[f"f{k}" for k in range(14)], n_bootstrap=1000)
    multilabel_seconds = time.perf_counter() - started
    assert binary_seconds < 5 and multilabel_seconds < 10, (binary_seconds, multilabel_seconds)


def test_rare_finding_resamples_without_positives_are_left_out_and_counted():
    rng = np.random.default_rng(1)
    y = np.zeros((200, 2), dtype=int)
    y[:2, 0] = 1  # two positives: many resamples draw neither
    y[:60, 1] = 1
    p = np.clip(0.4 * y + 0.6 * rng.random((200, 2)), 0, 1)
    report = compute_metrics(y, p, task="multilabel", class_names=["rare", "common"], n_bootstrap=500)
    rare = report.per_class["rare"]["auroc"]
    assert 0 < rare.n_undefined < 500
    assert rare.ci_low is not None and rare.ci_low <= rare.ci_high
    assert report.per_class["common"]["auroc"].n_undefined == 0


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="binary"):
        compute_metrics(np.array([0, 1]), np.array([[0.2, 0.8], [0.5, 0.5]]), task="binary", class_names=BINARY)
    with pytest.raises(ValueError, match="threshold"):
        compute_metrics(np.array([0, 1]), np.array([0.2, 0.8]), task="binary", class_names=BINARY,
                        thresholds=[0.5, 0.5])


def test_intervals_equal_the_direct_bootstrap_on_the_same_resamples():
    """Same seed, same draws: the vectorised bootstrap is exactly the direct one, not an approximation."""
    y, p = binary_data(n=200, seed=4)
    report = compute_metrics(y, p, task="binary", class_names=BINARY, thresholds=[0.5], n_bootstrap=200, seed=3)
    reference = reference_bootstrap(y, p, 0.5, 200, seed=3)
    for ref_name, name in (("auroc", "auroc_macro"), ("ap", "average_precision_macro"),
                           ("sensitivity", "sensitivity_macro"), ("npv", "npv_macro")):
        estimate = report.overall[name]
        assert (estimate.ci_low, estimate.ci_high) == pytest.approx(tuple(reference[ref_name]), abs=1e-9)
