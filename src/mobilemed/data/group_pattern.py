"""Patients from file names (--group-pattern), for image folders whose names encode them.

Public sets often name files by patient and not in a table: Kermany's `person1_bacteria_1.jpeg` and
`NORMAL2-IM-0381-0001.jpeg`, ISIC's lesion ids, many hospital exports. Without patients, validation carved
from the train folder takes other images of training patients and scores better than it should, and the
operating point chosen there is too confident. The pattern is a regular expression searched in each file
name (not the folders); its first group, or the whole match when it has none, is the patient id.
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)


def groups_from_names(table: ImageTable, pattern: str) -> ImageTable:
    """The same rows with `groups` read from the file names; refuses a pattern that misses any file."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise MobilemedError(f"--group-pattern '{pattern}' is not a regular expression ({error}); e.g. "
                             r"'^(person\d+|IM-\d+)'") from None
    if table.groups is not None:
        raise MobilemedError("--group-pattern and --group-column (or the NIH table's Patient ID) both name the "
                             "patients; keep one")
    matches = [regex.search(Path(str(path)).name) for path in table.paths]
    missed = [path for path, match in zip(table.paths, matches) if match is None]
    if missed:
        raise MobilemedError(f"--group-pattern '{pattern}' finds no patient in {len(missed)} of {len(table)} file "
                             f"names, e.g. {missed[0]}; widen the pattern so that every file name matches")
    groups = np.array([match.group(1) if regex.groups else match.group(0) for match in matches], dtype=object)
    if any(group == "" for group in groups):
        raise MobilemedError(f"--group-pattern '{pattern}' matches an empty patient id in some file names, e.g. "
                             f"{table.paths[list(groups).index('')]}; make the pattern match at least one character")
    log.info("--group-pattern: %d images of %d patients", len(groups), len(set(groups)))
    return replace(table, groups=groups)
