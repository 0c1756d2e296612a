"""Atomic file writes and stable hashing: no half-written results, no pickle."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON form of `obj` (dict key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_files(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over the relative names and contents of `paths` (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        name = str(path.relative_to(root)) if root else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class CorruptCache(Warning):
    """A cache file could not be read; it was removed and its content is being recomputed."""


def discard_corrupt(path: Path, error: BaseException) -> None:
    """Warn that the cache entry `path` is unreadable and remove it (a file or a directory)."""
    import shutil
    import warnings

    path = Path(path)
    warnings.warn(f"corrupt cache entry {path} ({type(error).__name__}: {error}); "
                  "removed, recomputing it", CorruptCache, stacklevel=3)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def read_cached(path: Path, load) -> Any:
    """`load(path)`, or None when `path` is absent or unreadable (then it is removed with a
    warning, so the caller recomputes and rewrites it: caches repair themselves)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if not path.is_file():
            raise IsADirectoryError("not a regular file")
        return load(path)
    except Exception as err:  # noqa: BLE001 — any unreadable entry is recomputed
        discard_corrupt(path, err)
        return None
