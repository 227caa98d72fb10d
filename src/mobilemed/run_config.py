"""Reading a run folder's config.yaml: one reader for resume, the report, export and the scripts.

Beside run_files (numpy only, which names the file) because it needs yaml.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from mobilemed.errors import MobilemedError
from mobilemed.run_files import CONFIG


def read_config(run_dir) -> dict | None:
    """config.yaml's "config" section (the run's resolved TrainConfig.to_dict()), or None when the run folder
    has no config.yaml. The one reader of that file: resume, report, export and the scripts all come here."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        config = (yaml.safe_load(path.read_text(encoding="utf-8")) or {})["config"]
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise MobilemedError(f"{path} is not a config.yaml written by mobilemed train ({type(err).__name__}); "
                             "restore it from the run, or train again with --overwrite") from None
    if not isinstance(config, dict):
        raise MobilemedError(f"{path}: its config section is not a mapping; restore it from the run, or train "
                             "again with --overwrite")
    return config
