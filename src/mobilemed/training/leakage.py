"""The cross-split checks every training run makes before it spends any time."""
from __future__ import annotations

import logging

from mobilemed.data.table import ImageTable
from mobilemed.errors import MobilemedError

log = logging.getLogger(__name__)


def check_leakage(table: ImageTable, *, strict: bool) -> None:
    """Warn loudly (or, strict, stop) when patients or identical images cross splits."""
    from mobilemed.data.audit import cross_split_checks

    report = cross_split_checks(table)
    if not report.has_leakage:
        return
    message = "LEAKAGE across splits: " + report.format_text().strip().replace("\n", "; ")
    if strict:
        raise MobilemedError(message + " (--strict); re-split with --resplit (and --group-column) or fix the data")
    log.warning("%s", message)
    log.warning("results may look better than they are; run `mobilemed audit` for details, or train with --resplit "
                "(and --group-column when the data has patients) for a patient-grouped split")
