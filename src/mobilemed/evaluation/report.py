"""report.html: one self-contained page a clinician can read, built from a run folder's files.

Sections (stable ids): #summary #curves #metrics #roc #pr #confusion #calibration #gallery #config.
Images are inlined PNGs, styles are inline, there is no script and nothing loads from the network, so
the file opens offline and can be mailed as is. Missing optional pieces (no history for an evaluate-only
run, no Grad-CAM gallery) give a short note instead of a section body.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import yaml

from mobilemed.evaluation import report_html as h
from mobilemed.evaluation import plots
from mobilemed.evaluation.calibration import expected_calibration_error
from mobilemed.evaluation.metrics import CLASS_METRICS, LABELS, OVERALL_METRICS, compute_metrics, metric_label
from mobilemed.evaluation.run_data import RunData, load_run, split_counts
from mobilemed.explain.edge_heat import describe_edge_heat
from mobilemed import run_files
from mobilemed.run_files import SplitPredictions
from mobilemed.fsutil import atomic_write

log = logging.getLogger(__name__)

SECTIONS = ("summary", "curves", "metrics", "roc", "pr", "confusion", "calibration", "gallery", "config")
GALLERY_KINDS = {"TP": "True positives", "FP": "False positives", "TN": "True negatives", "FN": "False negatives"}


def write_report(run_dir, out=None, *, save_plots: bool = True) -> Path:
    """Write <run_dir>/report.html (or `out`) and return its path; plots also go to <run_dir>/plots/."""
    run = load_run(run_dir)
    figures = _Figures(run.path / run_files.PLOTS if save_plots else None)
    split = run.eval_split()
    pred = run.predictions.get(split)
    metrics = _split_metrics(run, split, pred)
    task, classes = _task_and_classes(run, metrics)
    half = task == "binary" or len(classes or []) <= plots.MANY_CLASSES  # single-panel figures pair up
    sections = [
        ("summary", "Summary", _summary(run, split, metrics)),
        ("curves", "Training curves", _curves(run, figures)),
        ("metrics", "Metrics", _metrics_section(run, split, metrics)),
        ("roc", "ROC curves", _curve_section(pred, run, figures, "roc"), half),
        ("pr", "Precision-recall curves", _curve_section(pred, run, figures, "pr"), half),
        ("confusion", "Confusion matrix", _confusion(metrics, figures), True),
        ("calibration", "Calibration", _calibration(pred, run, figures), True),
        ("gallery", "Grad-CAM gallery", _gallery(run)),
        ("config", "Configuration and versions", _config(run)),
    ]
    subtitle = f"run folder {run.path.resolve()} · written {time.strftime('%Y-%m-%d %H:%M')}"
    document = h.page(f"mobilemed report: {run.name}", subtitle, sections)
    out = Path(out) if out else run.path / run_files.REPORT
    with atomic_write(out, encoding="utf-8") as handle:
        handle.write(document)
    log.info("wrote %s", out)
    return out


class _Figures:
    """Turns a figure into an inline image, saving a copy under plots/ when asked."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    def image(self, fig, name: str, alt: str) -> str:
        png = h.png_bytes(fig)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.folder / f"{name}.png", "wb") as handle:
                handle.write(png)
        return h.image(png, alt)


def _split_metrics(run: RunData, split: str | None, pred: SplitPredictions | None) -> dict | None:
    """metrics.json's report for the split, recomputed from predictions when the run has none."""
    if split in run.metrics:
        return run.metrics[split]
    if pred is None:
        return None
    return compute_metrics(pred.y_true, pred.y_prob, task=pred.task, class_names=pred.class_names,
                           thresholds=_thresholds(run)).to_dict()


def _thresholds(run: RunData) -> list[float] | None:
    return (run.spec or {}).get("thresholds") or None


def _task_and_classes(run: RunData, metrics: dict | None) -> tuple[str | None, list[str] | None]:
    for source in (metrics, run.spec):
        if source and source.get("class_names"):
            return source.get("task"), list(source["class_names"])
    pred = next(iter(run.predictions.values()), None)
    return (pred.task, pred.class_names) if pred else (None, None)


def _summary(run: RunData, split: str | None, metrics: dict | None) -> str:
    task, classes = _task_and_classes(run, metrics)
    spec, config = run.spec or {}, run.config or {}
    pairs = [("Data", config.get("data", "not recorded")), ("Task", task), ("Classes", ", ".join(classes or [])),
             ("Model", f"{spec.get('arch', '?')}, {spec.get('image_size', '?')} px, "
                       f"{spec.get('in_chans', '?')} channel(s)" if spec else "not recorded"),
             ("Training mode", run_files.config_value(config, "model", "mode", "not recorded")),
             ("Operating point", _operating_point(spec, task)),
             ("Temperature", f"{spec.get('temperature', 1.0):.3f}" if spec else "not recorded"),
             *_evaluated(split, metrics), *_cross_validation(run.metrics.get("cv")),
             *_seed_ensemble(run.metrics.get("ensemble")),
             ("Out of distribution", _ood_text((metrics or {}).get("ood"), spec))]
    body = h.key_values(pairs)
    if (metrics or {}).get("ood", {}).get("warning"):
        body += h.note(f"Warning: {metrics['ood']['warning']}.")
    if metrics:
        headline = metrics["auroc_macro"]
        level = _level(metrics, split)
        body += h.paragraph(f"{split.capitalize()} AUROC{' (macro)' if task != 'binary' else ''}: "
                            f"{_ci_text(headline)}{f' ({level})' if level else ''}.")
    headers, rows = split_counts(run.split_rows or [], classes if task != "multilabel" else None)
    if rows:
        body += "<h3>Images per split and class (split.csv)</h3>" + h.table(headers, rows)
    else:
        body += h.note("No split.csv in this run folder: split sizes are not known.")
    return body


def _evaluated(split: str | None, metrics: dict | None) -> list[tuple[str, str]]:
    """What the metrics are about: the split (or the external data) and, for a binary task, the finding."""
    if not metrics:
        return [("Evaluated split", "none")]
    about = metrics.get("evaluation") or {}
    what = f"{split} ({metrics['n']} images)"
    if about.get("kind") == "external":
        what = f"external evaluation: every labelled image of {about['data']} ({metrics['n']} images)"
    pairs = [("Evaluated split", what)]
    if metrics.get("positive_class"):
        pairs.append(("Positive class", f"{metrics['positive_class']} (sensitivity, specificity, PPV and NPV "
                                        f"describe detecting it)"))
    return pairs


def _cross_validation(cv: dict | None) -> list[tuple[str, str]]:
    """The --cv summary: pooled out-of-fold metrics with CIs, the folds' AUROCs and what was deployed."""
    if not cv:
        return []
    pooled = cv["pooled_out_of_fold"]
    folds = ", ".join(f"{a:.3f}" for a in cv["auroc_per_fold"])
    return [("Cross-validation", f"{cv['folds']} patient-grouped folds of train+val ({cv['n']} images): pooled "
                                 f"out-of-fold AUROC {_ci_text(pooled['auroc_macro'])}, accuracy "
                                 f"{_ci_text(pooled.get('accuracy'))}; AUROC per fold {folds}. {cv['note']}"),
            ("Deployed model", cv["deployed"])]


def _seed_ensemble(ensemble: dict | None) -> list[tuple[str, str]]:
    """The --ensemble summary: each member's seed, best epoch and validation AUROC, and what was deployed."""
    if not ensemble:
        return []
    members = "; ".join(f"seed {s}: AUROC {a:.3f} (epoch {e})" for s, a, e in zip(
        ensemble["seeds"], ensemble["val_auroc_per_member"], ensemble["best_epoch_per_member"]))
    return [("Ensemble members", f"{ensemble['members']} networks, validation per member: {members}"),
            ("Deployed model", ensemble["deployed"])]


def _ood_text(ood: dict | None, spec: dict) -> str:
    """The share of the evaluated images the OOD check flagged, with the AUROC on each side."""
    if not ood:
        return "not measured (no OOD detector in this model)" if not spec.get("ood_method") else "not measured"
    auroc = [f"{name} {v:.3f}" for name, v in (("unflagged", ood["auroc_in_distribution"]),
                                                ("flagged", ood["auroc_flagged"])) if v is not None]
    threshold = f"; {spec.get('ood_method', 'feature')} threshold {ood['threshold']:.1f}" if ood["threshold"] else ""
    return (f"{ood['n_flagged']} of {ood['n']} images flagged ({ood['fraction_flagged']:.1%}){threshold}"
            + (f"; AUROC {', '.join(auroc)}" if auroc else ""))


def _operating_point(spec: dict, task: str | None) -> str:
    if not spec:
        return "not recorded"
    if task == "multiclass":
        return "argmax (the most probable class)"
    values = ", ".join(f"{t:.3f}" for t in spec.get("thresholds", []))
    chosen = (spec.get("provenance") or {}).get("thresholds") or {}
    where = chosen.get("split", "val")
    where = "validation" if where == "val" else where
    if chosen.get("views"):  # --threshold-views: training/threshold_views.py
        where += f", each image in {chosen['views']} augmented views (the training augmentation)"
    return f"{spec.get('threshold_rule', '?')} rule, chosen on {where}: threshold(s) {values}"


def _level(metrics: dict, split: str | None) -> str:
    boot = metrics.get("bootstrap") or {}
    if not boot:
        return ""
    return (f"{round(boot['confidence'] * 100)}% CI from {boot['n_resamples']} bootstrap resamples of the "
            f"{split} images")


def _ci_text(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.3f}"
    if entry.get("ci"):
        text += f" ({entry['ci'][0]:.3f} to {entry['ci'][1]:.3f})"
    return text


def _curves(run: RunData, figures: _Figures) -> str:
    if not run.history and run.member_histories:  # an ensemble of members or folds: each network's own curves
        fig = plots.plot_member_curves(run.member_histories)
        best = ", ".join(f"{name} {max(_finite_aurocs(history), default=float('nan')):.3f}"
                         for name, history in run.member_histories.items())
        return h.paragraph(f"{len(run.member_histories)} networks, each trained in its own folder; the best "
                           f"validation AUROC of each: {best}.") + figures.image(
            fig, "training_curves", "validation loss and AUROC by epoch of every network")
    if not run.history:
        return h.note("No history.json: this run has no training curves (for example an evaluate-only run).")
    fig = plots.plot_training_curves(run.history)
    best = max((e for e in run.history if e.get("val_auroc") is not None), key=lambda e: e["val_auroc"],
               default=None)
    text = f"{len(run.history)} epochs"
    if best:
        text += f"; the best validation AUROC {best['val_auroc']:.3f} was reached at epoch {best.get('epoch')}"
    return h.paragraph(text + ".") + figures.image(fig, "training_curves", "training and validation loss and "
                                                   "validation AUROC by epoch")


def _finite_aurocs(history: list) -> list[float]:
    return [e["val_auroc"] for e in history if e.get("val_auroc") is not None and e["val_auroc"] == e["val_auroc"]]


def _metrics_section(run: RunData, split: str | None, metrics: dict | None) -> str:
    if not metrics:
        return h.note("No metrics.json and no predictions: nothing to tabulate.")
    val = run.metrics.get("val") if split == "test" else None
    boot = metrics.get("bootstrap") or {}
    headers = ["Metric", f"{split} value", f"{round(boot['confidence'] * 100)}% CI" if boot else "CI"]
    headers += ["validation value"] if val else []
    rows = []
    for name in OVERALL_METRICS:
        entry = metrics[name]
        row = [metric_label(name, metrics["task"], metrics.get("positive_class")), _value(entry), _interval(entry)]
        rows.append(row + ([_value(val.get(name))] if val else []))
    body = h.table(headers, rows)
    level = _level(metrics, split)
    body += h.note((level + ". " if level else "No bootstrap intervals were computed. ") +
                   "Sensitivity, specificity, PPV (precision), NPV and F1 are at the operating point; "
                   "AUROC and average precision do not depend on it.")
    return body + _per_class_table(metrics)


def _per_class_table(metrics: dict) -> str:
    if metrics["task"] == "binary":
        entry = metrics["per_class"][metrics["positive_class"]]
        return h.note(f"Binary task: the values above are for the positive class {metrics['positive_class']!r} "
                      f"({entry['n_positive']} of {metrics['n']} images) at threshold {_fmt(entry['threshold'])}.")
    multilabel = metrics["task"] == "multilabel"
    headers = ["Class", "n positive", *(["threshold"] if multilabel else [])]
    headers += [LABELS[m] for m in CLASS_METRICS]
    rows = []
    for name, entry in metrics["per_class"].items():
        row = [name, entry["n_positive"], *([_fmt(entry.get("threshold"))] if multilabel else [])]
        rows.append(row + [_ci_cell(entry[m]) for m in CLASS_METRICS])
    text = "one-vs-rest per class" if metrics["task"] == "multiclass" else "per finding at its own threshold"
    return "<h3>Per class</h3>" + h.note(f"Each cell: the value, and its confidence interval below it; {text}; "
                                         f"n/a = undefined (e.g. no positives in this split).") + h.table(headers, rows)


def _ci_cell(entry: dict | None) -> h.Raw:
    if not entry or entry.get("value") is None:
        return h.Raw("n/a")
    if not entry.get("ci"):
        return h.Raw(f"{entry['value']:.3f}")
    low, high = entry["ci"]
    return h.Raw(f"{entry['value']:.3f}<br><small>{low:.3f}–{high:.3f}</small>")


def _value(entry: dict | None) -> str:
    return "n/a" if not entry or entry.get("value") is None else f"{entry['value']:.3f}"


def _interval(entry: dict | None) -> str:
    if not entry or not entry.get("ci"):
        return "–"
    return f"{entry['ci'][0]:.3f} to {entry['ci'][1]:.3f}"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _curve_section(pred: SplitPredictions | None, run: RunData, figures: _Figures, kind: str) -> str:
    if pred is None:
        return h.note("No predictions_*.npz in this run folder: curves need the saved predictions.")
    draw = plots.plot_roc if kind == "roc" else plots.plot_pr
    ax = draw(pred.y_true, pred.y_prob, pred.task, pred.class_names, thresholds=_thresholds(run))
    alt = "ROC curve per class" if kind == "roc" else "precision-recall curve per class"
    return figures.image(ax.figure, kind, alt)


def _confusion(metrics: dict | None, figures: _Figures) -> str:
    if not metrics:
        return h.note("No metrics: no confusion matrix.")
    if metrics.get("confusion_matrix") is not None:
        ax = plots.plot_confusion(np.asarray(metrics["confusion_matrix"]), metrics["class_names"])
        text = "Rows are the true class, columns the predicted class; each cell shows the count and the share of its row."
        return h.note(text) + figures.image(ax.figure, "confusion", "confusion matrix at the operating point")
    rows = []
    for name, entry in metrics["per_class"].items():
        (tn, fp), (fn, tp) = entry.get("confusion_matrix") or ((None, None), (None, None))
        rows.append([name, _fmt(entry.get("threshold")), tp, fp, fn, tn])
    return h.note("Multi-label: one 2x2 table per finding at its own threshold.") + \
        h.table(["Finding", "threshold", "TP", "FP", "FN", "TN"], rows)


def _calibration(pred: SplitPredictions | None, run: RunData, figures: _Figures) -> str:
    if pred is None:
        return h.note("No predictions_*.npz in this run folder: calibration needs the saved predictions.")
    temperature = float((run.spec or {}).get("temperature", 1.0))
    ece = expected_calibration_error(pred.y_true, pred.y_prob, pred.task)
    ax = plots.plot_reliability(pred.y_true, pred.y_prob, pred.task, temperature=temperature)
    scaled = (f"Probabilities are temperature-scaled with T = {temperature:.3f}, fitted on validation."
              if temperature != 1.0 else "No temperature scaling (T = 1).")
    text = (f"Expected calibration error (15 equal-width bins): {ece:.3f}. {scaled} A well calibrated model's "
            f"points lie on the diagonal: of the images given probability 0.8, about 80% are positive.")
    return h.paragraph(text) + figures.image(ax.figure, "reliability", "reliability diagram")


def _gallery(run: RunData) -> str:
    folder = run.path / run_files.GALLERY
    if not run.gallery:
        return h.note("No Grad-CAM gallery in this run (gallery/gallery.json is absent; it needs the 'explain' "
                      "extra and is skipped with --no-gallery).")
    groups: dict[str, list[dict]] = {}
    for entry in run.gallery:
        groups.setdefault(str(entry.get("kind", "other")), []).append(entry)
    body = h.note("The examples the model was most sure of, per kind; errors are the most confidently wrong. "
                  "The heatmap shows which regions drove the score of the class named in each caption.")
    body += _gallery_method(run.gallery)
    for kind, entries in groups.items():
        cards = "".join(_gallery_card(folder, e) for e in entries)
        body += f"<h3>{h.esc(GALLERY_KINDS.get(kind, kind.replace('_', ' ')))} ({len(entries)})</h3>"
        body += f'<div class="gallery">{cards}</div>'
    return body


def _gallery_method(entries: list[dict]) -> str:
    """Which method and layer made the heatmaps, at what map size, and the randomised-weights check."""
    cam = entries[0].get("cam") if isinstance(entries[0].get("cam"), dict) else None
    if cam is None:
        return h.paragraph("This gallery does not record which layer and method made its heatmaps.")
    h_cells, w_cells = cam.get("map_size", ["?", "?"])
    text = (f"Heatmaps: {cam.get('method')} at layer {cam.get('layer')}, whose map is {h_cells}x{w_cells} before "
            "upsampling (the deepest block with at least 8x8 cells at this input size).")
    if cam.get("members", 1) > 1:
        text += (f" The model is an ensemble: each heatmap is the mean of its {cam['members']} members' maps for "
                 "the class the ensemble decided, every member weighted alike.")
    r = [e["randomised_r"] for e in entries if isinstance(e.get("randomised_r"), (int, float))]
    if r:
        text += (f" Randomised-weights check (Adebayo et al. 2018): the same images' heatmaps from a "
                 f"re-initialised model correlate r = {sum(r) / len(r):.2f} on average with these "
                 f"({'passed' if sum(r) / len(r) < 0.5 else 'FAILED'}: under 0.5, the heatmaps depend on "
                 "the trained weights).")
    edge = describe_edge_heat(entries)
    return h.paragraph(text) + (h.paragraph(edge) if edge else "")


def _gallery_card(folder: Path, entry: dict) -> str:
    path = folder / Path(str(entry.get("png", ""))).name  # never read outside the gallery folder
    caption = (f"<b>{h.esc(_short_path(entry.get('file', '?')))}</b><br>true: {h.esc(entry.get('true_label'))}"
               f"<br>predicted: {h.esc(entry.get('predicted_label'))}<br>Grad-CAM for "
               f"{h.esc(entry.get('cam_target'))}, p = {h.esc(_fmt(entry.get('probability')))}")
    if entry.get("peak_at_edge"):
        caption += "<br><b>peaks on the image's edge</b>"
    if not path.is_file():
        return f'<figure><p class="note">missing image {h.esc(path.name)}</p><figcaption>{caption}</figcaption></figure>'
    return h.image(path.read_bytes(), f"Grad-CAM overlay of {entry.get('file')}", caption, cls="card")


def _short_path(file) -> str:
    """The file's folder and name: enough to find it, short enough for a caption."""
    parts = Path(str(file)).parts
    return "/".join(parts[-2:]) if parts else str(file)


def _config(run: RunData) -> str:
    body = ""
    if run.config:
        body += "<h3>Resolved configuration (config.yaml)</h3><pre>" + \
            h.esc(yaml.safe_dump(run.config, sort_keys=False)) + "</pre>"
    if run.spec:
        body += "<h3>Model spec (spec.json)</h3><pre>" + h.esc(json.dumps(run.spec, indent=2)) + "</pre>"
    if run.versions:
        body += "<h3>Versions (versions.json)</h3>" + h.key_values(list(run.versions.items()))
    return body or h.note("No config.yaml, spec.json or versions.json in this run folder.")
