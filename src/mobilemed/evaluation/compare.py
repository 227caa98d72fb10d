"""Comparing runs on the same test set: headline metrics with CIs and a paired bootstrap test of AUROC.

Paired bootstrap: every run is scored on the SAME resamples of the test images (one seeded generator),
so the difference in macro AUROC between a run and the first run is computed within each resample and
the variation shared by both models (which images happened to be drawn) cancels out.

p-value (two-sided): with d_b the AUROC difference in resample b (resamples where it is undefined are
left out) and B the number of resamples,
    p = min(1, 2 * min((#{d_b <= 0} + 1) / (B + 1), (#{d_b >= 0} + 1) / (B + 1)))
It is the smallest two-sided level at which the percentile interval of the difference excludes 0;
the +1 terms keep it above zero, since B resamples cannot show a p below about 2 / (B + 1).
Identical models give d_b = 0 everywhere and p = 1.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilemed import run_files
from mobilemed.errors import MobilemedError
from mobilemed.evaluation import resampling as rs
from mobilemed.evaluation.metrics import HEADLINE, LABELS, Estimate, compute_metrics
from mobilemed.run_files import SplitPredictions, read_split_predictions

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    name: str
    path: str
    thresholds: list[float]
    headline: dict[str, Estimate]


@dataclass
class ComparisonResult:
    task: str
    n: int
    runs: list[RunSummary]
    auroc_difference: list[Estimate | None]  # run i minus run 0; None for run 0
    p_values: list[float | None]             # paired bootstrap p for that difference; None for run 0
    bootstrap: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"task": self.task, "n": self.n, "bootstrap": self.bootstrap,
                "runs": [{"name": r.name, "path": r.path, "thresholds": r.thresholds,
                          "metrics": {k: v.to_dict() for k, v in r.headline.items()},
                          "auroc_difference_vs_first": d.to_dict() if d else None, "p_value_vs_first": p}
                         for r, d, p in zip(self.runs, self.auroc_difference, self.p_values)]}

    def format_table(self) -> str:
        """Metrics as rows, runs as columns (narrow enough for a terminal with a few runs)."""
        level = f"{round(self.bootstrap['confidence'] * 100)}% CI" if self.bootstrap else "no CI"
        names = [r.name for r in self.runs]
        width = max(24, *(len(n) + 2 for n in names))
        label_width = 28
        macro = " (macro)" if self.task != "binary" else ""
        lines = [f"test set: {self.n} images, the same files in every run; {self.bootstrap.get('n_resamples', 0)} "
                 f"paired bootstrap resamples (seed {self.bootstrap.get('seed')}); [{level}]",
                 f"{'':<{label_width}}" + "".join(f"{n:>{width}}" for n in names)]
        for key in HEADLINE:
            label = LABELS[key.removesuffix("_macro")] + (macro if key.endswith("_macro") else "")
            lines.append(f"{label:<{label_width}}" + "".join(f"{r.headline[key].format():>{width}}" for r in self.runs))
        thresholds = ["argmax" if not r.thresholds else ", ".join(f"{t:.3f}" for t in r.thresholds[:3])
                      + (" ..." if len(r.thresholds) > 3 else "") for r in self.runs]
        lines.append(f"{'threshold':<{label_width}}" + "".join(f"{t:>{width}}" for t in thresholds))
        diffs = ["(reference)" if d is None else d.format() for d in self.auroc_difference]
        lines.append(f"{'AUROC difference vs first':<{label_width}}" + "".join(f"{d:>{width}}" for d in diffs))
        pvals = ["" if p is None else _format_p(p, self.bootstrap.get("n_resamples", 0)) for p in self.p_values]
        lines.append(f"{'paired bootstrap p':<{label_width}}" + "".join(f"{p:>{width}}" for p in pvals))
        return "\n".join(lines)


def _format_p(p: float, n_resamples: int) -> str:
    if math.isnan(p):
        return "n/a"
    floor = 2 / (n_resamples + 1)
    return f"<= {floor:.4f}" if p <= floor + 1e-12 else f"{p:.4f}"


def compare_runs(run_dirs, *, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> ComparisonResult:
    """Headline test metrics of each run with CIs and the paired bootstrap p-value of its AUROC minus the first's."""
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise MobilemedError("compare needs at least two run folders, e.g. mobilemed compare runs/a runs/b")
    if n_bootstrap < 1:
        raise MobilemedError(f"--n-bootstrap must be at least 1 for a paired test, got {n_bootstrap}")
    reference = read_split_predictions(run_dirs[0], "test")
    preds = [reference] + [align_predictions(reference, read_split_predictions(d, "test"), run_dirs[0], d)
                           for d in run_dirs[1:]]
    runs = []
    for path, pred in zip(run_dirs, preds):
        thresholds = _run_thresholds(path, pred)
        report = compute_metrics(pred.y_true, pred.y_prob, task=pred.task, class_names=pred.class_names,
                                 thresholds=thresholds, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
        runs.append(RunSummary(path.resolve().name, str(path), report.thresholds, report.headline()))
    samples = paired_auroc_samples(preds, n_bootstrap, seed)  # (runs, B)
    differences, p_values = [None], [None]
    for i in range(1, len(preds)):
        point = _point(runs[i]) - _point(runs[0])
        d = samples[i] - samples[0]
        low, high, n_undefined = rs.percentile_interval(d, confidence)
        differences.append(Estimate(float(point), low, high, n_undefined) if not math.isnan(point) else Estimate(None))
        p_values.append(paired_p_value(d))
    boot = {"n_resamples": n_bootstrap, "seed": seed, "confidence": confidence, "paired": True}
    return ComparisonResult(reference.task, len(reference.files), runs, differences, p_values, boot)


def _point(run: RunSummary) -> float:
    value = run.headline["auroc_macro"].value
    return float("nan") if value is None else value


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided paired bootstrap p-value for H0: no difference (see the module docstring)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    below, above = np.sum(d <= 0), np.sum(d >= 0)
    return float(min(1.0, 2 * min(below + 1, above + 1) / (d.size + 1)))


def paired_auroc_samples(preds: list[SplitPredictions], n_bootstrap: int, seed: int) -> np.ndarray:
    """(runs, B) macro AUROC of every run on the same bootstrap resamples of the shared test set."""
    chunks = []
    for w in rs.iter_bootstrap_weights(len(preds[0].y_true), n_bootstrap, seed):
        chunks.append(np.stack([_macro_auroc(w, p) for p in preds]))
    return np.concatenate(chunks, axis=1)


def _macro_auroc(w: np.ndarray, pred: SplitPredictions) -> np.ndarray:
    y_true, y_prob = pred.y_true.astype(int), pred.y_prob
    if pred.task == "binary":
        return rs.weighted_auroc(w, y_true.reshape(-1) == 1, y_prob.reshape(-1))
    truth = y_true[:, None] == np.arange(y_prob.shape[1]) if pred.task == "multiclass" else y_true == 1
    return rs.nan_mean(np.stack([rs.weighted_auroc(w, truth[:, k], y_prob[:, k]) for k in range(y_prob.shape[1])]))


def align_predictions(reference: SplitPredictions, other: SplitPredictions, ref_dir,
                      other_dir) -> SplitPredictions:
    """`other` in the reference's file order; MobilemedError when the test sets or labels differ."""
    if other.task != reference.task or list(other.class_names) != list(reference.class_names):
        raise MobilemedError(f"{other_dir} is a {other.task} model for {other.class_names} but {ref_dir} is a "
                             f"{reference.task} model for {reference.class_names}; compare runs of the same task")
    if not np.array_equal(other.files, reference.files):
        other = _reorder(reference, other, ref_dir, other_dir)
    if not np.array_equal(np.asarray(other.y_true).astype(int), np.asarray(reference.y_true).astype(int)):
        raise MobilemedError(f"{ref_dir} and {other_dir} list the same test files with different labels; "
                             f"re-run them on the same data")
    return other


def _reorder(reference: SplitPredictions, other: SplitPredictions, ref_dir, other_dir) -> SplitPredictions:
    ref_files, files = [str(f) for f in reference.files], [str(f) for f in other.files]
    if len(set(ref_files)) != len(ref_files) or len(set(files)) != len(files) or set(ref_files) != set(files):
        common = len(set(ref_files) & set(files))
        raise MobilemedError(f"{ref_dir} and {other_dir} were evaluated on different test sets ({len(ref_files)} "
                             f"and {len(files)} images, {common} in common); compare runs on the same test split")
    position = {f: i for i, f in enumerate(files)}
    order = np.array([position[f] for f in ref_files])
    log.info("%s lists the test files in another order: aligned by file name", other_dir)
    return SplitPredictions(other.files[order], other.y_true[order], other.y_prob[order], other.class_names,
                            other.task)


def _run_thresholds(path: Path, pred: SplitPredictions) -> list[float] | None:
    """The operating thresholds stored in the run's spec.json (the ones its metrics used)."""
    spec_file = path / run_files.SPEC
    if spec_file.is_file():
        try:
            return json.loads(spec_file.read_text()).get("thresholds") or None
        except ValueError as err:
            raise MobilemedError(f"{spec_file} is not valid JSON ({err}); rewrite it") from err
    if pred.task != "multiclass":
        log.warning("%s has no spec.json: sensitivity and specificity use threshold 0.5", path)
    return None
