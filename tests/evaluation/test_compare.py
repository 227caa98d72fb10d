"""compare_runs: paired bootstrap on the same test set; clear differences give small p, identical runs p = 1."""
import json

import numpy as np
import pytest

from mobilemed.cli.main import main
from mobilemed.errors import MobilemedError
from mobilemed.evaluation.compare import compare_runs, paired_p_value

from .conftest import CLASSES, SIZES, make_run, synthetic_split


def test_clearly_better_model_gives_a_small_p(tmp_path):
    weak = make_run(tmp_path / "weak", seed=1, separation=0.8)
    strong = make_run(tmp_path / "strong", seed=2, separation=3.0)
    result = compare_runs([weak, strong], n_bootstrap=500, seed=0)
    diff = result.auroc_difference[1]
    assert diff.value > 0.1 and diff.ci_low > 0
    assert result.p_values[0] is None and result.p_values[1] < 0.01
    assert result.runs[1].headline["auroc_macro"].value > result.runs[0].headline["auroc_macro"].value
    text = result.format_table()
    assert "weak" in text and "strong" in text and "paired bootstrap p" in text and "<= 0.0040" in text


def test_identical_runs_give_p_one(tmp_path):
    a = make_run(tmp_path / "a", seed=3)
    b = tmp_path / "b"
    b.mkdir()
    for name in ("predictions_test.npz", "spec.json"):
        (b / name).write_bytes((a / name).read_bytes())
    result = compare_runs([a, b], n_bootstrap=300)
    assert result.p_values[1] == 1.0
    assert result.auroc_difference[1].value == 0.0


def test_same_files_in_another_order_are_aligned(tmp_path):
    a = make_run(tmp_path / "a", seed=4)
    b = tmp_path / "b"
    b.mkdir()
    data = dict(np.load(a / "predictions_test.npz"))
    order = np.random.default_rng(0).permutation(len(data["files"]))
    np.savez(b / "predictions_test.npz", **{k: (v[order] if v.ndim and len(v) == len(order) else v)
                                            for k, v in data.items()})
    (b / "spec.json").write_bytes((a / "spec.json").read_bytes())
    result = compare_runs([a, b], n_bootstrap=200)
    assert result.p_values[1] == 1.0  # the same predictions once aligned by file name


def test_different_test_sets_are_a_user_error_naming_the_runs(tmp_path):
    a = make_run(tmp_path / "run_a", seed=5)
    b = make_run(tmp_path / "run_b", seed=6)
    data = dict(np.load(b / "predictions_test.npz"))
    data["files"] = np.array([f"other/{f}" for f in data["files"]])
    np.savez(b / "predictions_test.npz", **data)
    with pytest.raises(MobilemedError, match="run_a.*run_b.*different test sets"):
        compare_runs([a, b])
    data["files"] = np.array([f.removeprefix("other/") for f in data["files"]])
    data["y_true"] = 1 - data["y_true"]
    np.savez(b / "predictions_test.npz", **data)
    with pytest.raises(MobilemedError, match="different labels"):
        compare_runs([a, b])
    with pytest.raises(MobilemedError, match="predictions_test.npz"):
        compare_runs([a, tmp_path / "missing"])


def test_multilabel_comparison(tmp_path):
    a = make_run(tmp_path / "a", task="multilabel", seed=1)
    rng = np.random.default_rng(99)
    _, logits = synthetic_split("multilabel", SIZES["multilabel"][2], np.random.default_rng(1234), 2.0)
    b = make_run(tmp_path / "b", task="multilabel", seed=2, test_logits=logits + rng.normal(0, 3.0, logits.shape))
    result = compare_runs([a, b], n_bootstrap=300)
    assert result.task == "multilabel" and len(CLASSES["multilabel"]) == 14
    assert result.auroc_difference[1].value < 0 and result.p_values[1] < 0.05


def test_p_value_formula():
    assert paired_p_value(np.zeros(100)) == 1.0
    assert paired_p_value(np.full(99, 0.1)) == pytest.approx(2 / 100)
    assert paired_p_value(np.r_[np.full(90, 0.1), np.full(10, -0.1)]) == pytest.approx(2 * 11 / 101)


def test_compare_command_prints_aurocs_with_cis_and_p(tmp_path, capsys, restore_logging):
    a = make_run(tmp_path / "seed0", seed=0)
    b = make_run(tmp_path / "seed1", seed=1)
    out_json = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--n-bootstrap", "300", "--seed", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "[" in out and "paired bootstrap p" in out
    data = json.loads(out_json.read_text())
    assert data["runs"][1]["p_value_vs_first"] is not None
    assert data["runs"][0]["metrics"]["auroc_macro"]["ci"] is not None
    assert main(["compare", str(a)]) == 2
