"""fit's train_model, recorded and interruptible: the resume tests of --cv folds and --ensemble members."""
from __future__ import annotations

from pathlib import Path

from mobilemed.training import fit as fit_module


class TrainingCalls:
    """Stands in for fit.train_model: records the folder of every network it trains (a fold, a member, the run)
    and, with interrupt_at=n, raises KeyboardInterrupt when the n-th network starts, as Ctrl-C would."""

    def __init__(self, monkeypatch, *, interrupt_at: int | None = None):
        self.real, self.interrupt_at, self.folders = fit_module.train_model, interrupt_at, []
        monkeypatch.setattr(fit_module, "train_model", self)

    def __call__(self, model, spec, data, config, run_dir, resume):
        self.folders.append(Path(run_dir).name)
        if len(self.folders) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.real(model, spec, data, config, run_dir, resume)

    def restart(self) -> None:
        """Count afresh and interrupt no more: the resumed run."""
        self.folders, self.interrupt_at = [], None
