"""On-disk cache of finished runs, and sweeps that run the missing ones in worker processes.

A run is a module-level function `fn(spec) -> dict` of a JSON-able spec. Its result is stored as
JSON under a key made of the function name, the spec and a hash of the library source, written
atomically as each run finishes, so an interrupted sweep resumes and nothing is recomputed.
Editing presentation-only modules (figures, tables, the book builder) keeps finished runs.

Executors (`LOSSBOOK_EXECUTOR`): `local`, spawned worker processes on this machine (default);
`ray`, one Ray task per run on the cluster at `RAY_ADDRESS` (or a Ray started here). Results
always come back to this process and go into its run cache.
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
PRESENTATION = {"book.py", "cli.py", "claims.py", "plotting.py", "session.py", "__main__.py",
                "grid.py"}
EXECUTORS = ("local", "ray")
RAY_RETRIES = 3  # a Ray task whose worker or node dies is re-run this many times


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


def check_executor(executor: str | None = None) -> str:
    """The executor to use (default: `LOSSBOOK_EXECUTOR`, else local); fails on an unknown one."""
    executor = executor or os.environ.get("LOSSBOOK_EXECUTOR") or "local"
    if executor not in EXECUTORS:
        from lossbook.presets import ConfigError

        raise ConfigError(f"unknown executor {executor!r}; valid executors: "
                          f"{', '.join(EXECUTORS)}")
    return executor


def sweep(fn: Callable[[dict], dict], specs: list[dict], *, cache: RunCache | None = None,
          workers: int = 1, desc: str | None = None, progress: bool = True,
          executor: str | None = None, gpus: int = 0) -> list[dict]:
    """Results of `fn(spec)` for every spec, in order: cached ones read, the rest computed
    (`gpus`: GPUs each run requests from Ray)."""
    from tqdm.auto import tqdm

    executor = check_executor(executor)

    results: list[dict | None] = [cache.get(fn, s) if cache else None for s in specs]
    todo = [i for i, r in enumerate(results) if r is None]
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=desc or fn.__name__,
               disable=not progress, mininterval=2.0)

    def finish(i: int, result: dict) -> None:
        results[i] = result
        if cache:
            cache.put(fn, specs[i], result)
        bar.update()

    if executor == "ray" and todo:
        _run_ray(fn, {i: specs[i] for i in todo}, finish, cpus=max(1, workers), gpus=gpus)
    elif workers <= 1 or len(todo) <= 1:
        init_worker()
        for i in todo:
            finish(i, fn(specs[i]))
    else:
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(min(workers, len(todo)), mp_context=context,
                                         initializer=init_worker) as pool:
            jobs = {pool.submit(fn, specs[i]): i for i in todo}
            for job in futures.as_completed(jobs):
                finish(jobs[job], job.result())
    bar.close()
    return results  # type: ignore[return-value]


def ray_init(num_cpus: int | None = None) -> None:
    """Connect to the Ray cluster at `RAY_ADDRESS`, or start a small Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False, logging_level="WARNING")
    else:  # results are small JSON dicts: a 200 MB object store and no dashboard are plenty
        ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=200 * 2**20,
                 log_to_driver=False, logging_level="WARNING")


def _ray_run(fn: Callable[[dict], dict], spec: dict, library: str) -> dict:
    if compute_hash() != library:  # its result would be cached under the driver's key
        raise RuntimeError(f"lossbook's source on this Ray node ({PACKAGE_DIR}) differs from "
                           "the driver's: install the same commit on every node, or ship it "
                           "with Ray's runtime_env (README: Sweeps and clusters)")
    init_worker()
    return fn(spec)


def _run_ray(fn, todo: dict[int, dict], finish: Callable[[int, dict], None], *, cpus: int,
             gpus: int) -> None:
    """One Ray task per run; each result is cached here as soon as it arrives. A task whose
    worker dies is retried; an exception raised by the run itself is not (it would recur)."""
    import ray

    ray_init(cpus)
    task = ray.remote(_ray_run).options(num_cpus=1, num_gpus=gpus, max_retries=RAY_RETRIES,
                                        retry_exceptions=False)
    pending = {task.remote(fn, spec, compute_hash()): i for i, spec in todo.items()}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            finish(pending.pop(done[0]), ray.get(done[0]))
    finally:
        for ref in pending:  # interrupted or failed: stop the runs still queued or running
            ray.cancel(ref, force=True)


def default_workers(device: str) -> int:
    if device != "cpu":
        return 1
    return int(os.environ.get("LOSSBOOK_WORKERS", min(2, os.cpu_count() or 1)))
