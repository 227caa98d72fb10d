"""The run folder's integrity: one writer at a time, never a mix of two runs, never a false "finished".

Order inside fit(): check_out_dir (no writes) -> every input validated and the weights loaded ->
guarded_run: RunLock -> _begin_run (run_state.json "running"; --overwrite clears the old run) ->
training -> finish_run -> run_state.json "complete". Any failure marks the folder "failed" or "interrupted"; kill -9
leaves "running" with nobody holding the lock, which the next command reports.

Why clear instead of training into a temp folder and swapping it in: the lock and --resume need the run
to live at its final path while it trains, and a swap could not be resumed after a kill. run_state.json
is written "running" before the first old file goes, so a crash mid-clear never looks finished.

The lock is an flock on RUN/.mobilemed.lock: the kernel drops it when its process dies (kill -9
included), so a lock can never be stale; a folder whose run_state.json says "running" while nobody holds
the lock is a dead run, reported by name and pid (never silently continued: only --resume continues it).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from mobilemed import run_files
from mobilemed.run_files import RUN_STATE
from mobilemed.errors import MobilemedError
from mobilemed.fsutil import check_output_dir
from mobilemed.training import run_folder

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the other checks still hold
    fcntl = None

log = logging.getLogger(__name__)
LOCK = ".mobilemed.lock"
# What makes a folder a mobilemed run folder (so --overwrite may clear it and --resume may continue it).
RUN_MARKERS = (RUN_STATE, run_files.CONFIG, run_files.LAST, run_files.BEST)


def read_state(run_dir: Path) -> dict | None:
    try:
        state = json.loads((Path(run_dir) / RUN_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(run_dir: Path, state: str, **info) -> None:
    run_folder.write_json(Path(run_dir) / RUN_STATE, {
        "state": state, "pid": os.getpid(), "host": socket.gethostname(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv), **info})


def check_out_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is read or written, an --out the run cannot safely use."""
    if resume and overwrite:
        raise MobilemedError("--resume continues the run in --out and --overwrite replaces it: pass only one")
    check_output_dir(run_dir)
    _refuse_if_locked(run_dir)
    entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK) if run_dir.is_dir() else []
    if not entries:
        if resume:
            raise MobilemedError(f"--resume: {run_dir} holds no run to continue; start without --resume")
        return
    if not (resume or overwrite):
        raise MobilemedError(f"--out {run_dir} is not empty ({_describe(run_dir, entries)}); pass --resume to "
                             "continue that run, --overwrite to replace it, or choose another --out")
    if not any(name in entries for name in RUN_MARKERS):
        flag = "--resume" if resume else "--overwrite"
        raise MobilemedError(f"--out {run_dir} holds files that are not a mobilemed run ({', '.join(entries[:3])}"
                             f"{', ...' if len(entries) > 3 else ''}); {flag} only applies to a run folder: "
                             "choose another --out")


def _describe(run_dir: Path, entries: list[str]) -> str:
    state = read_state(run_dir)
    if state is None:
        return f"{len(entries)} entries, e.g. {entries[0]}"
    if state.get("state") == "running":
        return f"a run by pid {state.get('pid')} that stopped without finishing (killed?)"
    return f"a {state.get('state')} run"


class RunLock:
    """flock(RUN/.mobilemed.lock) for the duration of the with-block; a second process is refused."""

    def __init__(self, run_dir: Path):
        self.path, self.fd = Path(run_dir) / LOCK, None

    def __enter__(self) -> "RunLock":
        if fcntl is None:
            log.warning("no file locking on this platform: do not run two trainings into %s", self.path.parent)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise MobilemedError(_locked_message(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _refuse_if_locked(run_dir: Path) -> None:
    """Probe the lock without creating anything: another process writing here is refused up front."""
    path = run_dir / LOCK
    if fcntl is None or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise MobilemedError(_locked_message(path)) from None
    finally:
        os.close(fd)


def _locked_message(path: Path) -> str:
    holder = path.read_text().strip() if path.is_file() else ""
    return (f"another mobilemed process ({holder or 'unknown pid'}) is writing to {path.parent}; wait for it "
            "to finish, or choose another --out")


def _begin_run(run_dir: Path, *, overwrite: bool) -> None:
    """Mark the folder "running" (under the lock), then clear the old run (--overwrite) or the temp files
    a killed run left behind (--resume): they are never read, but they must not pile up."""
    previous = read_state(run_dir)
    if previous and previous.get("state") == "running":
        log.warning("the previous run in %s (pid %s) stopped without finishing", run_dir, previous.get("pid"))
    write_state(run_dir, "running", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    for entry in run_dir.iterdir():
        if entry.name in (LOCK, RUN_STATE):
            continue
        if overwrite and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif overwrite:
            entry.unlink()
        elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
            entry.unlink()


@contextlib.contextmanager
def guarded_run(run_dir: Path, *, overwrite: bool):
    """Hold the lock, mark the folder "running", and record how the block ended: "complete" (only after
    finish_run wrote metrics.json and report.html), "interrupted" (Ctrl-C) or "failed" with the error."""
    with RunLock(run_dir):
        _begin_run(run_dir, overwrite=overwrite)
        try:
            yield
        except KeyboardInterrupt:
            _end_run(run_dir, "interrupted")
            raise
        except BaseException as err:
            _end_run(run_dir, "failed", error=f"{type(err).__name__}: {err}"[:500])
            raise
        _end_run(run_dir, "complete")


def _end_run(run_dir: Path, state: str, **info) -> None:
    write_state(run_dir, state, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info)
