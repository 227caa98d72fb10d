"""The cache index (manifest.json): what an air-gapped site put in the cache, and whether it is intact."""
from __future__ import annotations

import json
import time
from pathlib import Path

from mobilemed.assets.home import file_digest, home
from mobilemed.fsutil import atomic_write


def _manifest_path() -> Path:
    return home() / "manifest.json"


def read_manifest() -> dict:
    path = _manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def record(entry_path: Path, **fields) -> None:
    """Add (or replace) the entry of a file under home() with its checksum and origin."""
    manifest = read_manifest()
    manifest[str(entry_path.relative_to(home()))] = {**fields, "added": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_write(_manifest_path()) as handle:
        json.dump(manifest, handle, indent=2)


def verify_cache() -> list[dict]:
    """One row per manifest entry: path, kind, whether the file is present and its checksum matches."""
    rows = []
    for rel, entry in read_manifest().items():
        path = home() / rel
        algorithm, expected = ("md5", entry["md5"]) if "md5" in entry else ("sha256", entry["sha256"])
        ok = path.exists() and file_digest(path, algorithm) == expected
        rows.append({"path": str(path), "kind": entry["kind"], "present": path.exists(), "ok": ok})
    return rows
