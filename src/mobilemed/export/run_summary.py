"""What a model was trained on and how it scored on test, read from its run folder: shown by the service and
carried inside an exported file, so a reading room sees it without the run folder."""
from __future__ import annotations

import json
from pathlib import Path

from mobilemed import run_files
from mobilemed.run_config import read_config


def run_summary(run_dir: Path) -> dict:
    """What the model was trained on and how it scored on test, from the run folder (empty when absent)."""
    metrics_file, config = run_dir / run_files.METRICS, read_config(run_dir)
    summary = {}
    if config is not None:
        summary.update(data=str(config.get("data")), mode=run_files.config_value(config, "model", "mode"))
    if metrics_file.is_file():
        test = json.loads(metrics_file.read_text()).get("test") or {}
        auroc = test.get("auroc_macro") or {}
        if auroc:
            summary.update(test_auroc=auroc.get("value"), test_auroc_ci=auroc.get("ci"), test_n=test.get("n"))
    return summary
