"""Atomic file writes: a reader never sees a half-written output, a failed run leaves none behind."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from mobilemed.errors import MobilemedError


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **open_kwargs):
    """Yield a file object for a temp file beside `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600: give the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (os.umask would briefly set 0,
    racing with other threads' file creation)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save_figure(fig, path, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=fmt, **savefig_kwargs)
    return path


def check_output_file(path, flag: str = "--out") -> Path:
    """Refuse, before any work, an output file path that is a folder or cannot be created."""
    path = Path(path)
    if path.is_dir():
        raise MobilemedError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'out'}")
    _check_creatable(path.parent, flag, path)
    return path


def check_output_dir(path, flag: str = "--out") -> Path:
    """Refuse, before any work, an output folder path that is a file or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MobilemedError(f"{flag} {path} is a file, but a folder is needed; choose another {flag}")
    _check_creatable(path, flag, path)
    return path


def _check_creatable(folder: Path, flag: str, target: Path) -> None:
    """The nearest existing ancestor must be a folder we may write into (root passes any permission)."""
    ancestor = folder.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MobilemedError(f"{flag} {target} cannot be created: {ancestor} is a file; choose another {flag}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise MobilemedError(f"{flag} {target} cannot be written: no write permission in {ancestor}")
