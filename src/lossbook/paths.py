"""Where things live: the repository, caches and build outputs."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The checkout's root (holds pyproject.toml); falls back to the working directory."""
    if "LOSSBOOK_ROOT" in os.environ:
        return Path(os.environ["LOSSBOOK_ROOT"]).resolve()
    for folder in [PACKAGE_DIR, *PACKAGE_DIR.parents, Path.cwd(), *Path.cwd().parents]:
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return Path.cwd()


def cache_dir() -> Path:
    """Root of generated data and finished training runs (never committed)."""
    return Path(os.environ.get("LOSSBOOK_CACHE", repo_root() / ".cache")).resolve()


def build_dir() -> Path:
    return Path(os.environ.get("LOSSBOOK_BUILD", repo_root() / "build")).resolve()


def data_dir() -> Path:
    """Downloaded datasets (full presets only)."""
    return Path(os.environ.get("LOSSBOOK_DATA", cache_dir() / "data")).resolve()
