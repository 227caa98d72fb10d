"""Offline-first assets: a cache folder for datasets and weights that an air-gapped site can fill by hand.

Layout under MOBILEMED_HOME (default: $XDG_CACHE_HOME/mobilemed or ~/.cache/mobilemed):
  medmnist/<name>[_<size>].npz     official MedMNIST files, md5-verified against the medmnist package
  weights/<arch>_imagenet.pth      ImageNet state_dicts for torchvision architectures
  manifest.json                    what was added, from where, with its checksum
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import urllib.request
from pathlib import Path

from mobilemed.errors import MobilemedError
from mobilemed.fsutil import atomic_write

log = logging.getLogger(__name__)
MEDMNIST_SIZES = (28, 64, 128, 224)


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


# --- MedMNIST -------------------------------------------------------------------------------------

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


# --- weights --------------------------------------------------------------------------------------

def weights_path(arch: str) -> Path:
    return home() / "weights" / f"{arch}_imagenet.pth"


def load_imagenet_state(arch: str, *, download: bool = True) -> dict:
    """ImageNet state_dict for `arch` from our cache, torch's cache, or torchvision's download."""
    import torch

    from mobilemed.models.registry import get_backbone

    info = get_backbone(arch)
    if info.imagenet is None:
        raise MobilemedError(f"torchvision publishes no ImageNet weights for {arch}; use --weights PATH "
                             "with a state_dict for this architecture, or --weights none to train from scratch")
    ours = weights_path(arch)
    if ours.exists():
        return torch.load(ours, map_location="cpu", weights_only=True)
    enum = _weights_enum(info.imagenet)
    torch_cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if torch_cached.exists():
        return torch.load(torch_cached, map_location="cpu", weights_only=True)
    if download and not os.environ.get("MOBILEMED_OFFLINE"):
        try:
            return enum.get_state_dict(progress=True)
        except OSError as err:
            log.info("weight download failed: %s", err)
    raise MobilemedError(
        f"no ImageNet weights for {arch} offline. Get {enum.url} and run: mobilemed assets add FILE "
        f"--weights-for {arch}  (or pass --weights PATH, or --weights none to train from scratch)")


def _weights_enum(qualified: str):
    from torchvision import models as tvm

    enum_name, member = qualified.split(".")
    return getattr(getattr(tvm, enum_name), member)


# --- the manifest: what an air-gapped site put in the cache --------------------------------------

def _manifest_path() -> Path:
    return home() / "manifest.json"


def read_manifest() -> dict:
    path = _manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def _record(entry_path: Path, **fields) -> None:
    manifest = read_manifest()
    manifest[str(entry_path.relative_to(home()))] = {**fields, "added": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_write(_manifest_path()) as handle:
        json.dump(manifest, handle, indent=2)


def add_medmnist_file(source: Path) -> Path:
    """Copy an official MedMNIST .npz into the cache after checking its md5 against medmnist's INFO."""
    name, size = _parse_medmnist_filename(source.name)
    _require_file(source)
    _, md5 = _medmnist_md5(name, size)
    actual = file_digest(source, "md5")
    if actual != md5:
        raise MobilemedError(f"{source} has md5 {actual}, but the official {source.name} has {md5}; "
                             "download the official file again")
    target = home() / "medmnist" / medmnist_filename(name, size)
    _copy_atomic(source, target)
    _record(target, kind="medmnist", dataset=name, size=size, md5=md5, source=str(source))
    return target


def _parse_medmnist_filename(filename: str) -> tuple[str, int]:
    stem = filename.removesuffix(".npz")
    name, _, size = stem.partition("_")
    if not filename.endswith(".npz") or (size and not size.isdigit()):
        raise MobilemedError(f"{filename} is not a MedMNIST file name (expected NAME.npz or NAME_SIZE.npz, "
                             "e.g. pneumoniamnist.npz); for weights add --weights-for ARCH")
    medmnist_info(name)
    return name, int(size or 28)


def add_weights_file(source: Path, arch: str) -> Path:
    """Copy a state_dict into the cache as `arch`'s ImageNet weights, after checking that it loads."""
    import torch

    from mobilemed.models.registry import get_backbone

    _require_file(source)
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
        get_backbone(arch).build().load_state_dict(state)
    except MobilemedError:
        raise
    except Exception as err:  # noqa: BLE001 - any load failure means: not weights for this arch
        raise MobilemedError(f"{source} is not a state_dict for {arch}: {str(err).splitlines()[0]}") from None
    target = weights_path(arch)
    _copy_atomic(source, target)
    _record(target, kind="weights", arch=arch, sha256=file_digest(target), source=str(source))
    return target


def _require_file(source: Path) -> None:
    if not source.is_file():
        raise MobilemedError(f"{source} does not exist or is not a file; check the path")


def _copy_atomic(source: Path, target: Path) -> None:
    _require_file(source)
    with open(source, "rb") as src, atomic_write(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def verify_cache() -> list[dict]:
    """One row per manifest entry: path, kind, whether the file is present and its checksum matches."""
    rows = []
    for rel, entry in read_manifest().items():
        path = home() / rel
        algorithm, expected = ("md5", entry["md5"]) if "md5" in entry else ("sha256", entry["sha256"])
        ok = path.exists() and file_digest(path, algorithm) == expected
        rows.append({"path": str(path), "kind": entry["kind"], "present": path.exists(), "ok": ok})
    return rows
