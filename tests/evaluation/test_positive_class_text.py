"""Every sensitivity, specificity, PPV and NPV names the positive class; an external evaluation says so."""
import json

from mobilemed.evaluation.metrics import format_summary
from mobilemed.evaluation.report import write_report

FOR_POSITIVE = ("Sensitivity", "Specificity", "PPV", "NPV")


def test_summary_and_report_name_the_positive_class(binary_run):
    metrics = json.loads((binary_run / "metrics.json").read_text())["test"]
    assert metrics["positive_class"] == "PNEUMONIA"
    lines = format_summary(metrics).splitlines()
    for label in FOR_POSITIVE:
        assert sum(line.startswith(f"{label} for PNEUMONIA ") for line in lines) == 1, label
    assert not any(line.startswith(("AUROC for", "Accuracy for")) for line in lines)
    html = write_report(binary_run).read_text(encoding="utf-8")
    for label in FOR_POSITIVE:
        assert f"<td>{label} for PNEUMONIA</td>" in html, label
    assert "PNEUMONIA (sensitivity, specificity, PPV and NPV describe detecting it)" in html


def test_report_of_an_external_evaluation_says_so(binary_run, tmp_path):
    metrics = json.loads((binary_run / "metrics.json").read_text())["test"]
    metrics["evaluation"] = {"kind": "external", "split": "all", "data": "/data/site-b", "n_images": metrics["n"],
                             "class_counts": {"NORMAL": 200, "PNEUMONIA": metrics["n"] - 200}}
    folder = tmp_path / "eval-all"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    html = write_report(folder).read_text(encoding="utf-8")
    assert f"external evaluation: every labelled image of /data/site-b ({metrics['n']} images)" in html
