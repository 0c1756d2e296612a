"""A chapter's session: validated parameters, device, seeding, claims and provenance."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lossbook import claims as protocol
from lossbook import presets
from lossbook.cache import RunCache, check_executor, default_workers, exit_with_parent, sweep
from lossbook.claims import Claim, claims_markdown
from lossbook.io import write_json
from lossbook.paths import build_dir, cache_dir, repo_root

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str) -> str:
    """The torch device for `device` (auto: cuda when available, else cpu), or ConfigError when
    it is unknown or not usable on this machine."""
    import torch

    kind, _, index = device.partition(":") if isinstance(device, str) else ("", "", "")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise presets.ConfigError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}"
                                  " (or cuda:N)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise presets.ConfigError(f"device {device!r} requested but CUDA is not available; "
                                      "use device=cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise presets.ConfigError(f"device {device!r}: only {torch.cuda.device_count()} "
                                      "CUDA device(s)")
    if kind == "mps" and not (sys.platform == "darwin" and torch.backends.mps.is_available()):
        raise presets.ConfigError(f"device {device!r} requested but MPS (Apple GPUs, macOS) is "
                                  "not available; use device=cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dirty_paths(porcelain: str) -> list[str]:
    """Changed tracked paths outside book/ (the build itself rewrites the records there)."""
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in porcelain.splitlines() if line]
    return [p for p in paths if not p.startswith("book/")]


def git_commit() -> str:
    """HEAD, with `+dirty(path, …)` naming the changed tracked files outside book/."""
    try:
        root = repo_root()
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = dirty_paths(status)
    if not dirty:
        return commit
    more = f", +{len(dirty) - 3} more" if len(dirty) > 3 else ""
    return f"{commit}+dirty({', '.join(dirty[:3])}{more})"


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

    def audit_entry(self, id: str) -> dict | None:
        """This claim's stability in the chapter's last audit (book preset only)."""
        if self.preset != "book" or os.environ.get("LOSSBOOK_AUDIT"):
            return None  # an audit run compares the protocol's own verdicts
        from lossbook.book import read_audit

        return (read_audit(self.name) or {}).get("claims", {}).get(id)

    def _add(self, id, statement, paper, ours, verdict, kind, note, rule="", evidence=()):
        final, audit_note = protocol.audited(verdict, self.audit_entry(id))
        note = "; ".join(filter(None, [note, audit_note]))
        claim = Claim(id, statement, paper, ours, final, kind, note, rule, list(evidence),
                      verdict)
        self.claims = [c for c in self.claims if c.id != id] + [claim]
        return claim

    def claim(self, id: str, statement: str, *, paper: str, ours: str,
              holds: bool | None | str, kind: str = "paper", note: str = "",
              rule: str = "") -> Claim:
        """A claim decided without seeds: an exact check within a tolerance (`identity`), or
        one whose rule is not a paired effect. holds=None: not tested at this preset;
        holds="inconclusive": tested, but the rule cannot decide it (e.g. a recalled formula)."""
        if holds == "inconclusive":
            verdict = "inconclusive"
        else:
            verdict = protocol.verdict_of(None if holds is None else bool(holds))
        return self._add(id, statement, paper, ours, verdict, kind, note, rule)

    def claim_effect(self, id: str, statement: str, *, paper: str, a, b=None,
                     threshold: float | dict = 0.0, direction: str | dict = "greater",
                     kind: str = "paper", ours: str = "", note: str = "", digits: int = 3,
                     requires: tuple[bool, str] | None = None) -> Claim:
        """A seeded claim decided by the protocol of `lossbook.claims`: per-seed values `a`
        (minus the seed-paired `b`), their t-interval against `threshold` (stated before the
        result). `a`/`b` are lists, or dicts {condition: list} for a claim over conditions
        (then `threshold` and `direction` may also be dicts {condition: value}).
        `requires=(ok, why)`: the claim's precondition; when it failed the claim is not tested,
        and Ours shows why and the effect it would have had."""
        conditions = {k: list(v) for k, v in (a if isinstance(a, dict) else {"": a}).items()
                      if v is not None and len(v)}
        others = b if isinstance(b, dict) else dict.fromkeys(conditions, b)
        dirs = direction if isinstance(direction, dict) else dict.fromkeys(conditions, direction)
        thr = threshold if isinstance(threshold, dict) else dict.fromkeys(conditions, threshold)
        if requires is not None and not requires[0]:
            unjudged = [protocol.evidence(label, values, others.get(label), thr[label],
                                          dirs[label], digits)["text"]
                        for label, values in conditions.items() if len(values) > 1]
            why = f"not judged: {requires[1]}" + (f"; unjudged effect {'; '.join(unjudged)}"
                                                  if unjudged else "")
            return self._add(id, statement, paper, f"{ours} ({why})" if ours else why,
                             "not tested", kind, note)
        if not conditions:
            return self._add(id, statement, paper, f"{ours} — not tested at this preset"
                             if ours else "not run at this preset",
                             "not tested", kind, note)
        ev = [protocol.evidence(label, conditions[label], others.get(label), thr[label],
                                dirs[label], digits) for label in conditions]
        text = "; ".join(e["text"] for e in ev)
        rule = "; ".join(dict.fromkeys(
            (f"{label}: " if isinstance(threshold, dict) else "")
            + protocol.rule_text(thr[label], dirs[label]) for label in conditions))
        return self._add(id, statement, paper, f"{ours} — {text}" if ours else text,
                         protocol.combine([e["verdict"] for e in ev]), kind, note, rule, ev)

    def claim_best(self, id: str, statement: str, *, paper: str, values: dict, best,
                   threshold: float = 0.0, higher: bool = True, kind: str = "paper",
                   ours: str = "", note: str = "", digits: int = 3,
                   requires: tuple[bool, str] | None = None) -> Claim:
        """A "best of" claim: the best of `best` (by mean) against the runner-up of the rest,
        seed-paired, with the rule of `claim_effect` (and its `requires`). `values` is
        {name: per-seed list}, or {condition: {name: per-seed list}} for a claim over
        conditions."""
        nested = values and isinstance(next(iter(values.values())), dict)
        conditions = values if nested else {"": values}
        a, b = {}, {}
        for label, vals in conditions.items():
            claimed, rival = protocol.runner_up(vals, best, higher)
            key = f"{label + ': ' if label else ''}{claimed} vs {rival}"
            a[key], b[key] = vals[claimed], vals[rival]
        return self.claim_effect(id, statement, paper=paper, a=a, b=b,
                                 threshold=threshold if higher else -threshold,
                                 direction="greater" if higher else "less", kind=kind,
                                 ours=ours, note=note, digits=digits, requires=requires)

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

        from lossbook.claims import code, markdown_table

        record = {"provenance": self.provenance(), "claims": [c.to_dict() for c in self.claims]}
        write_json(self.results_path(), record)
        prov = record["provenance"]
        rows = [[k, code(prov[k]) if isinstance(prov[k], dict) else prov[k]]
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
    check_no_loose_fields(chapter, sys._getframe(1).f_globals, cfg)
    presets.check_seed(seed)
    resolved = resolve_device(device)
    workers = default_workers(resolved)
    parent = os.environ.get("LOSSBOOK_PARENT_PID", "")
    if parent.isdigit() and int(parent) == os.getppid():  # a kernel started by `lossbook run`
        exit_with_parent(int(parent))
    check_executor()  # LOSSBOOK_EXECUTOR
    if resolved == "cpu":
        torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    seed_everything(seed)
    use_book_style()
    return Chapter(chapter, preset, seed, resolved, cfg, dict(overrides or {}), workers)


def check_no_loose_fields(chapter: str, namespace: dict, cfg) -> None:
    """A config field given as a notebook parameter (`papermill -p epochs 3`) would be ignored:
    papermill injects it as a plain variable. Refuse it; config fields go in `overrides`."""
    literal = (bool, int, float, str, list, dict, tuple, type(None))
    loose = sorted(name for name in presets.field_types(type(cfg))
                   if name in namespace and isinstance(namespace[name], literal))
    if loose:
        raise presets.ConfigError(
            f"{', '.join(loose)}: config field(s) of {chapter} given as notebook parameters "
            f"would be ignored; pass them in overrides (papermill: -y 'overrides: "
            f"{{{loose[0]}: ...}}'; lossbook run: -p {loose[0]}=...)")
