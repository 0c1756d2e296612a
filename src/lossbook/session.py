"""A chapter's session: validated parameters, device, seeding, claims and provenance."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lossbook import presets
from lossbook.cache import RunCache, check_executor, default_workers, sweep
from lossbook.claims import Claim, claims_markdown
from lossbook.io import write_json
from lossbook.paths import build_dir, cache_dir, repo_root

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str) -> str:
    import torch

    if not isinstance(device, str) or device.split(":")[0] not in DEVICES:
        raise presets.ConfigError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}"
                                  " (or cuda:N)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise presets.ConfigError(f"device {device!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_commit() -> str:
    try:
        root = repo_root()
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class Chapter:
    name: str
    preset: str
    seed: int
    device: str
    cfg: Any
    overrides: dict
    workers: int
    started: float = field(default_factory=time.time)
    claims: list[Claim] = field(default_factory=list)
    runs_total: int = 0
    runs_cached: int = 0  # the wall time of a chapter whose runs came from the cache is short

    @property
    def run_cache(self) -> RunCache:
        return RunCache(cache_dir() / "runs" / self.name)

    def sweep(self, fn, specs: list[dict], desc: str | None = None) -> list[dict]:
        """Run `fn` over `specs` in parallel workers, reusing finished runs from the cache."""
        self.runs_cached += sum(self.run_cache.get(fn, spec) is not None for spec in specs)
        self.runs_total += len(specs)
        return sweep(fn, specs, cache=self.run_cache, workers=self.workers, desc=desc,
                     gpus=int(self.device.startswith("cuda")))

    def claim(self, id: str, statement: str, *, paper: str, ours: str, holds: bool | None,
              note: str = "") -> None:
        """State a claim of the paper, our evidence, and whether it held (None: not tested)."""
        claim = Claim(id, statement, paper, ours, None if holds is None else bool(holds), note)
        self.claims = [c for c in self.claims if c.id != id] + [claim]

    def claims_table(self):
        from IPython.display import Markdown

        return Markdown(claims_markdown(self.claims))

    def provenance(self) -> dict:
        import torch

        import lossbook

        device_name = self.device
        if self.device.startswith("cuda"):
            device_name = f"{self.device} ({torch.cuda.get_device_name()})"
        else:
            device_name = f"cpu ({platform.processor() or platform.machine()}, " \
                          f"{os.cpu_count()} cores, {self.workers} worker(s))"
        return {
            "chapter": self.name, "preset": self.preset, "seed": self.seed,
            "overrides": self.overrides, "device": device_name,
            "lossbook": lossbook.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "commit": git_commit(),
            "wall_time_s": round(time.time() - self.started, 1),
            "runs": {"total": self.runs_total, "cached": self.runs_cached},
            "config": asdict(self.cfg),
        }

    def results_path(self) -> Path:
        default = build_dir() / self.preset / f"{self.name}.claims.json"
        return Path(os.environ.get("LOSSBOOK_RESULTS", default))

    def finish(self):
        """Write the claims and provenance (JSON, atomically) and show the provenance table."""
        from IPython.display import Markdown

        from lossbook.claims import markdown_table

        record = {"provenance": self.provenance(), "claims": [c.to_dict() for c in self.claims]}
        write_json(self.results_path(), record)
        prov = record["provenance"]
        rows = [[k, f"`{json.dumps(prov[k])}`" if k == "overrides" else prov[k]]
                for k in ("preset", "seed", "overrides", "device", "commit", "lossbook", "torch",
                          "python", "wall_time_s", "runs")]
        return Markdown(markdown_table(["provenance", "value"], rows))


def start(chapter: str, preset: str = "book", seed: int = 0, device: str = "auto",
          overrides: dict | str | None = None) -> Chapter:
    """Validate every parameter (before any compute), then set threads, seeds and style."""
    import warnings

    import torch

    from lossbook.plotting import use_book_style

    with warnings.catch_warnings():  # tqdm.auto warns once when ipywidgets is absent
        warnings.simplefilter("ignore")
        import tqdm.auto  # noqa: F401
    if isinstance(overrides, str):  # papermill passes `-p overrides '{...}'` as a string
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as err:
            raise presets.ConfigError(f"overrides must be a JSON object, got {overrides!r}") \
                from err
    if overrides is not None and not isinstance(overrides, dict):
        raise presets.ConfigError(f"overrides must be a dict, got {type(overrides).__name__}")
    cfg = presets.resolve(chapter, preset, overrides)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise presets.ConfigError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    resolved = resolve_device(device)
    check_executor()  # LOSSBOOK_EXECUTOR
    if resolved == "cpu":
        torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    seed_everything(seed)
    use_book_style()
    return Chapter(chapter, preset, seed, resolved, cfg, dict(overrides or {}),
                   default_workers(resolved))
