"""The official MedMNIST files: names, md5 checks against the medmnist package, download when online."""
from __future__ import annotations

import logging
import os
import shutil
import urllib.request
from pathlib import Path

from mobilemed.assets.home import copy_atomic, file_digest, home, require_file
from mobilemed.assets.index import record
from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write

log = logging.getLogger(__name__)
MEDMNIST_SIZES = (28, 64, 128, 224)


def medmnist_info(name: str) -> dict:
    from medmnist import INFO

    name = name.lower()
    if name not in INFO or "3d" in name:
        names = ", ".join(n for n in INFO if "3d" not in n)
        raise MobilemedError(f"unknown MedMNIST dataset {name!r}; the 2D sets are: {names}")
    return INFO[name]


def medmnist_filename(name: str, size: int) -> str:
    if size not in MEDMNIST_SIZES:
        raise MobilemedError(f"MedMNIST size must be one of {MEDMNIST_SIZES}, got {size}")
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def _medmnist_md5(name: str, size: int) -> tuple[str, str]:
    info = medmnist_info(name)
    suffix = "" if size == 28 else f"_{size}"
    return info[f"url{suffix}"], info[f"MD5{suffix}"]


def ensure_medmnist(name: str, size: int = 28, *, download: bool = True) -> Path:
    """Path of the verified official file: from the cache, else downloaded when online, else an error
    naming the exact file to place and where."""
    name = name.lower()
    url, md5 = _medmnist_md5(name, size)
    path = home() / "medmnist" / medmnist_filename(name, size)
    if path.exists():
        _verify_once(path, md5)
        return path
    if download and _try_download(url, path, md5):
        return path
    raise MobilemedError(
        f"{path.name} is not in the cache and could not be downloaded (offline?). Get it from {url} "
        f"(md5 {md5}) and run: mobilemed assets add {path.name}  (or place it at {path})")


def _verify_once(path: Path, md5: str) -> None:
    """md5 a file the first time it is used; a stamp beside it (size + mtime) skips later checks."""
    stat = path.stat()
    stamp = path.with_suffix(path.suffix + ".verified")
    expected_stamp = f"{md5} {stat.st_size} {int(stat.st_mtime)}"
    if stamp.exists() and stamp.read_text() == expected_stamp:
        return
    actual = file_digest(path, "md5")
    if actual != md5:
        raise MobilemedError(f"{path} has md5 {actual}, expected {md5}: the file is corrupt or not the "
                             "official release; delete it and add the official file again")
    with atomic_write(stamp) as handle:
        handle.write(expected_stamp)


def _try_download(url: str, path: Path, md5: str) -> bool:
    if os.environ.get("MOBILEMED_OFFLINE"):
        return False
    try:
        log.info("downloading %s", url)
        with urllib.request.urlopen(url, timeout=30) as response, atomic_write(path, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        log.info("download failed: %s", err)
        return False
    _verify_once(path, md5)
    return True


def add_medmnist_file(source: Path) -> Path:
    """Copy an official MedMNIST .npz into the cache after checking its md5 against medmnist's INFO."""
    name, size = _parse_medmnist_filename(source.name)
    require_file(source)
    _, md5 = _medmnist_md5(name, size)
    actual = file_digest(source, "md5")
    if actual != md5:
        raise MobilemedError(f"{source} has md5 {actual}, but the official {source.name} has {md5}; "
                             "download the official file again")
    target = home() / "medmnist" / medmnist_filename(name, size)
    copy_atomic(source, target)
    record(target, kind="medmnist", dataset=name, size=size, md5=md5, source=str(source))
    return target


def _parse_medmnist_filename(filename: str) -> tuple[str, int]:
    stem = filename.removesuffix(".npz")
    name, _, size = stem.partition("_")
    if not filename.endswith(".npz") or (size and not size.isdigit()):
        raise MobilemedError(f"{filename} is not a MedMNIST file name (expected NAME.npz or NAME_SIZE.npz, "
                             "e.g. pneumoniamnist.npz); for weights add --weights-for ARCH")
    medmnist_info(name)
    return name, int(size or 28)
