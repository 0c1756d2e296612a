"""On-disk cache of finished runs, and sweeps that run the missing ones in worker processes.

A run is a module-level function `fn(spec) -> dict` of a JSON-able spec. Its result is stored as
JSON under a key made of the function name, the spec and a hash of the library source, written
atomically as each run finishes, so an interrupted sweep resumes and nothing is recomputed.
Editing presentation-only modules (figures, tables, the book builder) keeps finished runs.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

from lossbook.io import hash_files, read_json, stable_hash, write_json
from lossbook.paths import PACKAGE_DIR

# Modules that only present results or drive a notebook (book building, CLI, tables, figures,
# the chapter session) cannot change what a run `fn(spec)` computes, so editing them does not
# invalidate finished runs; anything else does.
PRESENTATION = {"book.py", "cli.py", "claims.py", "plotting.py", "session.py", "__main__.py"}


@cache
def library_hash() -> str:
    """Hash of every Python file of the installed `lossbook` source."""
    return hash_files(list(PACKAGE_DIR.rglob("*.py")), root=PACKAGE_DIR)


@cache
def compute_hash() -> str:
    """Hash of the library source that runs can depend on (all but the presentation modules)."""
    files = [p for p in PACKAGE_DIR.rglob("*.py")
             if p.name not in PRESENTATION and not p.name.endswith("_figures.py")]
    return hash_files(files, root=PACKAGE_DIR)


class RunCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, fn: Callable, spec: dict) -> Path:
        key = stable_hash({"fn": f"{fn.__module__}.{fn.__qualname__}", "spec": spec,
                           "library": compute_hash()})
        return self.folder / f"{fn.__name__}-{key[:24]}.json"

    def get(self, fn: Callable, spec: dict) -> dict | None:
        path = self.path(fn, spec)
        if not path.is_file():
            return None
        return read_json(path)["result"]

    def put(self, fn: Callable, spec: dict, result: dict) -> None:
        write_json(self.path(fn, spec), {"spec": spec, "result": result})


def init_worker() -> None:
    """One intra-op thread per worker process: two busy threads on two cores thrash."""
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


def replicate_groups(fn: Callable, specs: list[dict], todo: list[int],
                     workers: int) -> list[list[int]]:
    """The runs `todo` as jobs: one run each, or, if `fn` has a batched twin `fn.batched(specs)
    -> results` (see `lossbook.batched`), the seed replicates (specs equal but for "seed")
    together, split so that every worker gets a job."""
    if not hasattr(fn, "batched"):
        return [[i] for i in todo]
    groups: dict[str, list[int]] = {}
    for i in todo:
        groups.setdefault(stable_hash({k: v for k, v in specs[i].items() if k != "seed"}),
                          []).append(i)
    size = max(1, -(-len(todo) // max(1, workers)))
    return [g[j:j + size] for g in groups.values() for j in range(0, len(g), size)]


def run_job(fn: Callable[[dict], dict], specs: list[dict]) -> list[dict]:
    return fn.batched(specs) if len(specs) > 1 else [fn(specs[0])]  # type: ignore[attr-defined]


def sweep(fn: Callable[[dict], dict], specs: list[dict], *, cache: RunCache | None = None,
          workers: int = 1, desc: str | None = None, progress: bool = True) -> list[dict]:
    """Results of `fn(spec)` for every spec, in order: cached ones read, the rest computed."""
    from tqdm.auto import tqdm

    results: list[dict | None] = [cache.get(fn, s) if cache else None for s in specs]
    todo = [i for i, r in enumerate(results) if r is None]
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=desc or fn.__name__,
               disable=not progress, mininterval=2.0)

    def finish(i: int, result: dict) -> None:
        results[i] = result
        if cache:
            cache.put(fn, specs[i], result)
        bar.update()

    jobs = replicate_groups(fn, specs, todo, workers)
    if workers <= 1 or len(jobs) <= 1:
        init_worker()
        for job in jobs:
            for i, result in zip(job, run_job(fn, [specs[i] for i in job])):
                finish(i, result)
    else:
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context,
                                         initializer=init_worker) as pool:
            running = {pool.submit(run_job, fn, [specs[i] for i in job]): job for job in jobs}
            for done in futures.as_completed(running):
                for i, result in zip(running[done], done.result()):
                    finish(i, result)
    bar.close()
    return results  # type: ignore[return-value]


def default_workers(device: str) -> int:
    if device != "cpu":
        return 1
    return int(os.environ.get("LOSSBOOK_WORKERS", min(2, os.cpu_count() or 1)))
