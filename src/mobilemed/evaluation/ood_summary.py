"""How much of an evaluated set the OOD check flagged, and how the model did on each side. numpy only.

A model is only trusted on images like its training data: the AUROC on the unflagged images is the number
that applies to them, and the AUROC on the flagged ones shows what the flag protects against. When more
than `max_share` of a set is flagged, the set as a whole is unlike the training data and every metric on
it describes a different population: that is a loud warning, in the log and in metrics.json.
"""
from __future__ import annotations

import logging

import numpy as np

from mobilemed.evaluation.metrics import compute_metrics

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARE = 0.10


def summarize_ood(y_true, y_prob, in_distribution, *, task: str, class_names, thresholds=None,
                  ood_threshold: float | None = None, max_share: float = DEFAULT_MAX_SHARE) -> dict:
    """{"n", "n_flagged", "fraction_flagged", "auroc_in_distribution", "auroc_flagged", "max_share",
    "threshold", "warning"}; the AUROCs are macro for multi-class tasks and None where undefined."""
    keep = np.asarray(in_distribution, dtype=bool)
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    flagged = int((~keep).sum())
    fraction = flagged / len(keep) if len(keep) else 0.0
    summary = {"n": int(len(keep)), "n_flagged": flagged, "fraction_flagged": fraction,
               "auroc_in_distribution": _auroc(y_true[keep], y_prob[keep], task, class_names, thresholds),
               "auroc_flagged": _auroc(y_true[~keep], y_prob[~keep], task, class_names, thresholds),
               "max_share": max_share, "threshold": ood_threshold, "warning": None}
    if fraction > max_share:
        summary["warning"] = (f"{flagged} of {len(keep)} images ({fraction:.0%}) are out of distribution for this "
                              f"model (more than {max_share:.0%}): these images are unlike its training data, so "
                              "its metrics here describe another population; recalibrate or retrain on this site")
        log.warning("OUT OF DISTRIBUTION: %s", summary["warning"])
    return summary


def format_ood(summary: dict) -> str:
    """One line for the terminal."""
    line = (f"out of distribution: {summary['n_flagged']} of {summary['n']} ({summary['fraction_flagged']:.1%}); "
            f"AUROC unflagged {_fmt(summary['auroc_in_distribution'])}, flagged {_fmt(summary['auroc_flagged'])}")
    return line + (f"\nWARNING: {summary['warning']}" if summary["warning"] else "")


def _auroc(y_true, y_prob, task: str, class_names, thresholds) -> float | None:
    if len(y_true) < 2:
        return None
    report = compute_metrics(y_true, y_prob, task=task, class_names=class_names, thresholds=thresholds,
                             n_bootstrap=0)
    return report.overall["auroc_macro"].value


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
