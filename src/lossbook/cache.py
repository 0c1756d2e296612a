"""On-disk cache of finished runs, and sweeps that run the missing ones in worker processes.

A run is a module-level function `fn(spec) -> dict` of a JSON-able spec. Its result is stored as
JSON under a key made of the function name, the spec, the code of the library modules the run's
module imports (transitively; comments do not count), the lock file and the numpy/torch versions,
written atomically as each run finishes, so an interrupted sweep resumes and nothing is
recomputed. Editing presentation-only modules (figures, tables, the book builder) keeps finished
runs. An unreadable entry is removed with a warning and recomputed.

Executors (`LOSSBOOK_EXECUTOR`): `local`, spawned worker processes on this machine (default);
`ray`, one Ray task per run on the cluster at `RAY_ADDRESS` (or a Ray started here). Results
always come back to this process and go into its run cache.
"""

from __future__ import annotations

import ast
import concurrent.futures as futures
import contextlib
import hashlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

from lossbook.io import discard_corrupt, hash_files, read_cached, read_json, stable_hash, write_json
from lossbook.paths import PACKAGE_DIR, repo_root

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


def module_path(name: str) -> Path | None:
    """The source file of the `lossbook` module `name` (None for other packages)."""
    parts = name.split(".")
    if parts[0] != "lossbook":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Names of the modules an AST imports anywhere (also inside functions), with their parents."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}


@cache
def import_closure(*modules: str) -> tuple[Path, ...]:
    """The `lossbook` source files that `modules` import, transitively (found statically)."""
    todo, seen = [m for m in modules if module_path(m)], {}
    while todo:
        name = todo.pop()
        path = module_path(name)
        if path is None or path in seen.values():
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_bytes(), filename=str(path))
        todo += [m for m in imported_modules(tree, package) if m not in seen]
    return tuple(sorted(seen.values()))


def code_hash(paths) -> str:
    """Hash of the code of `paths`: their syntax trees, so comments and layout do not count."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        tree = ast.dump(ast.parse(Path(path).read_bytes(), filename=str(path)))
        digest.update(str(Path(path).relative_to(PACKAGE_DIR)).encode() + b"\0"
                      + tree.encode() + b"\0")
    return digest.hexdigest()


@cache
def compute_hash(module: str = "lossbook") -> str:
    """Hash of the library code a run defined in `module` can depend on: its import closure
    without the presentation modules (the whole library for a module outside `lossbook`)."""
    if module_path(module) is None or module == "lossbook":
        files = list(PACKAGE_DIR.rglob("*.py"))
    else:
        files = import_closure(module)
    return code_hash([p for p in files
                      if p.name not in PRESENTATION and not p.name.endswith("_figures.py")])


@cache
def environment_hash() -> str:
    """The locked dependencies and the numerical libraries' versions: a change re-runs."""
    import numpy
    import torch

    lock = repo_root() / "requirements" / "lock.txt"
    return stable_hash({"lock": lock.read_text() if lock.is_file() else "",
                        "numpy": numpy.__version__, "torch": torch.__version__})


class RunCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, fn: Callable, spec: dict) -> Path:
        key = stable_hash({"fn": f"{fn.__module__}.{fn.__qualname__}", "spec": spec,
                           "library": compute_hash(fn.__module__),
                           "environment": environment_hash()})
        return self.folder / f"{fn.__name__}-{key[:24]}.json"

    def get(self, fn: Callable, spec: dict) -> dict | None:
        """The cached result, or None; an unreadable entry is removed (with a warning)."""
        path = self.path(fn, spec)
        stored = read_cached(path, read_json)
        if stored is None:
            return None
        if not isinstance(stored, dict) or not isinstance(stored.get("result"), dict) \
                or stable_hash(stored.get("spec")) != stable_hash(spec):
            discard_corrupt(path, ValueError("not a {spec, result} record of this run"))
            return None
        return stored["result"]

    def put(self, fn: Callable, spec: dict, result: dict) -> None:
        write_json(self.path(fn, spec), {"spec": spec, "result": result})


def exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this process as soon as `parent` is no longer its parent (it was killed, even with
    SIGKILL, and this process was re-parented): no orphaned workers or kernels."""
    if any(t.name == "exit-with-parent" for t in threading.enumerate()):
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init_worker(parent: int | None = None) -> None:
    """One intra-op thread per worker process: two busy threads on two cores thrash."""
    import torch

    if parent is not None:
        exit_with_parent(parent)

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

    jobs = replicate_groups(fn, specs, todo, workers)
    if executor == "ray" and todo:
        _run_ray(fn, {i: specs[i] for i in todo}, finish, cpus=max(1, workers), gpus=gpus)
    elif workers <= 1 or len(jobs) <= 1:
        init_worker()
        for job in jobs:
            for i, result in zip(job, run_job(fn, [specs[i] for i in job])):
                finish(i, result)
    else:
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context,
                                         initializer=init_worker,
                                         initargs=(os.getpid(),)) as pool, terminate_on(pool):
            running = {pool.submit(run_job, fn, [specs[i] for i in job]): job for job in jobs}
            for done in futures.as_completed(running):
                for i, result in zip(running[done], done.result()):
                    finish(i, result)
    bar.close()
    return results  # type: ignore[return-value]


@contextlib.contextmanager
def terminate_on(pool: futures.ProcessPoolExecutor, signals=(signal.SIGTERM,)):
    """While the pool runs, SIGTERM stops its workers and raises SystemExit (as Ctrl-C would)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    text = os.environ.get("LOSSBOOK_WORKERS", "").strip()
    if not text:
        return min(2, os.cpu_count() or 1)
    if not text.isdigit() or not 1 <= int(text) <= 256:
        from lossbook.presets import ConfigError

        raise ConfigError(f"LOSSBOOK_WORKERS must be a whole number from 1 to 256, got {text!r}")
    return int(text)
