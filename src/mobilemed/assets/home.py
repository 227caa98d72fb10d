"""The cache folder, file hashing and the atomic copy every asset goes through."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write


def home() -> Path:
    if os.environ.get("MOBILEMED_HOME"):
        return Path(os.environ["MOBILEMED_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mobilemed"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(source: Path) -> None:
    if not source.is_file():
        raise MobilemedError(f"{source} does not exist or is not a file; check the path")


def copy_atomic(source: Path, target: Path) -> None:
    require_file(source)
    with open(source, "rb") as src, atomic_write(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
