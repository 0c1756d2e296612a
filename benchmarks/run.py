"""Benchmarks: `python benchmarks/run.py` (or `make bench`) prints one table per question.

1. Our fit loop (tensors indexed in memory) vs a plain torch DataLoader loop: same model, data,
   batch size, epochs and optimiser on MNIST-1D; samples/s and the ratio, measured in one run.
2. Thread count and flush-denormal settings for the same fit loop.
3. Two independent runs: sequential in one process vs `lossbook.cache.sweep` with 2 workers.
4. M seed replicates: M sequential `train.fit` calls vs one `lossbook.batched.fit_batched`
   (the M models stacked), one process, one thread.
5. Each chapter's wall time at the `book` preset: recorded by its last `make book` (default), or
   re-executed now with an empty run cache (`--chapters`).
6. Executors: one chapter's `book`-preset runs through `cache.sweep` on the local process pool vs
   a Ray started on this machine (same CPUs, an empty run cache each time).

`--tables 4 5` prints only those tables; `--chapters` re-executes the chapters for table 5
(with an empty run cache and data cache each: the cold book).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from lossbook import batched, cache, data, models, train
from lossbook.claims import markdown_table

EPOCHS, BATCH, REPEAT = 10, 128, 3
BATCHED_EPOCHS = 3


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build(kind, 40, 10, hidden=(100, 100))


def fit_loop(kind: str, dataset: data.Dataset) -> float:
    model = build(kind)
    start = time.perf_counter()
    train.fit(model, dataset, train.logit_objective(torch.nn.functional.cross_entropy),
              epochs=EPOCHS, batch_size=BATCH, lr=1e-3, evaluate=lambda m: {})
    return time.perf_counter() - start


def dataloader_loop(kind: str, dataset: data.Dataset) -> float:
    model = build(kind)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(dataset.x_train, dataset.y_train), batch_size=BATCH,
        shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def best_of(fn, *args) -> float:
    """The fastest of REPEAT timings: the least disturbed by other load on the machine."""
    return min(fn(*args) for _ in range(REPEAT))


def one_run(spec: dict) -> dict:
    dataset = data.mnist1d(num_samples=5000)
    return {"seconds": sum(fit_loop(spec["model"], dataset) for _ in range(spec["repeat"]))}


def throughput(seconds: float, n: int) -> str:
    return f"{EPOCHS * n / seconds:,.0f}"


def loop_table(dataset: data.Dataset) -> str:
    n = (len(dataset.y_train) // BATCH) * BATCH
    rows = []
    for kind in ("mlp", "cnn1d"):
        fit_loop(kind, dataset)  # warm-up
        ours, plain = best_of(fit_loop, kind, dataset), best_of(dataloader_loop, kind, dataset)
        rows.append([kind, throughput(ours, n), throughput(plain, n), f"{plain / ours:.2f}×"])
    return markdown_table(["model", "lossbook.train.fit (samples/s)", "DataLoader loop "
                           "(samples/s)", "speed-up"], rows)


def settings_table(dataset: data.Dataset) -> str:
    n = (len(dataset.y_train) // BATCH) * BATCH
    rows = []
    for threads in (1, 2):
        for flush in (True, False):
            torch.set_num_threads(threads)
            torch.set_flush_denormal(flush)
            cells = [throughput(best_of(fit_loop, kind, dataset), n) for kind in ("mlp", "cnn1d")]
            rows.append([threads, "on" if flush else "off", *cells])
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    return markdown_table(["torch threads", "flush denormal", "MLP samples/s",
                           "CNN samples/s"], rows)


def parallel_table() -> str:
    """Sequential vs 2 spawned workers; spawning costs a few seconds, so sweep size matters."""
    rows = []
    for count in (2, 8):
        specs = [{"model": "cnn1d", "seed": i, "repeat": 2} for i in range(count)]
        start = time.perf_counter()
        cache.sweep(one_run, specs, workers=1, progress=False)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        cache.sweep(one_run, specs, workers=2, progress=False)
        parallel = time.perf_counter() - start
        rows.append([count, f"{sequential:.1f}", f"{parallel:.1f}",
                     f"{sequential / parallel:.2f}×"])
    return markdown_table([f"CNN runs of {2 * EPOCHS} epochs", "sequential, 1 process (s)",
                           "2 worker processes, spawn included (s)", "speed-up"], rows)


def replicates(kind: str, dataset: data.Dataset, count: int, stacked: bool) -> float:
    """Seconds to train `count` seeds of `kind` one after another or stacked (no evaluation)."""
    def build_seed(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return models.build(kind, 40, 10, hidden=(100, 100))

    loss, seeds = torch.nn.functional.cross_entropy, list(range(count))
    kw = dict(epochs=BATCHED_EPOCHS, batch_size=BATCH, lr=1e-3)
    start = time.perf_counter()
    if stacked:
        batched.fit_batched([build_seed(s) for s in seeds], [dataset] * count, loss, seeds=seeds,
                            evaluate=[lambda m: {}] * count, **kw)
    else:
        for seed in seeds:
            train.fit(build_seed(seed), dataset, train.logit_objective(loss), seed=seed,
                      evaluate=lambda m: {}, **kw)
    return time.perf_counter() - start


def batched_table(dataset: data.Dataset) -> str:
    rows = []
    for kind in ("mlp", "cnn1d"):
        replicates(kind, dataset, 2, True)  # warm-up
        for count in (1, 4, 8, 16):
            alone = min(replicates(kind, dataset, count, False) for _ in range(2))
            together = min(replicates(kind, dataset, count, True) for _ in range(2))
            rows.append([kind, count, f"{alone:.2f}", f"{together:.2f}",
                         f"{alone / together:.2f}×"])
    return markdown_table(["model", "seeds M", f"M × fit, {BATCHED_EPOCHS} epochs (s)",
                           "fit_batched (s)", "speed-up"], rows)


def chapter_table(execute: bool) -> str:
    from lossbook import book

    rows, saved_cache = [], os.environ.get("LOSSBOOK_CACHE")
    for chapter in book.chapters():
        if execute:
            with tempfile.TemporaryDirectory() as tmp:
                os.environ["LOSSBOOK_CACHE"] = tmp  # empty run cache and data cache: cold
                start = time.perf_counter()
                book.execute(chapter, "book", {}, output=f"{tmp}/{chapter}.ipynb",
                             progress=False)
                rows.append([chapter, f"{time.perf_counter() - start:.0f} s", "now, empty cache"])
            if saved_cache is None:
                os.environ.pop("LOSSBOOK_CACHE")
            else:
                os.environ["LOSSBOOK_CACHE"] = saved_cache
        else:
            meta = book.recorded_metadata(book.record_path(chapter)) or {}
            rows.append([chapter, f"{meta.get('duration_s', float('nan')):.0f} s",
                         f"recorded {meta.get('executed_at', '–')}"])
    return markdown_table(["chapter", "book-preset wall time", "measured"], rows)


def executor_table(chapter: str = "06_ldam_drw") -> str:
    """The chapter's runs are independent: the sweep is all of its compute."""
    from lossbook import presets
    from lossbook.chapters import ldam_drw

    cfg = presets.resolve(chapter, "book")
    specs = ldam_drw.specs(cfg, 0, "cpu")
    for task in cfg.tasks:  # generate the data on disk once, as the chapter does before its sweep
        ldam_drw.base_data(task, cfg.mnist1d_samples, cfg.data_dir, cfg.download)
    workers, seconds = cache.default_workers("cpu"), {}
    for executor in ("local", "ray"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            if executor == "ray":
                cache.ray_init(workers)
                seconds["ray start"] = time.perf_counter() - start
            cache.sweep(ldam_drw.run, specs, cache=cache.RunCache(tmp), workers=workers,
                        executor=executor, progress=False)
            seconds[executor] = time.perf_counter() - start
    import ray

    ray.shutdown()
    rows = [[f"{chapter}, {len(specs)} runs", f"{seconds['local']:.0f}",
             f"{seconds['ray']:.0f} (start {seconds['ray start']:.0f})",
             f"{seconds['local'] / seconds['ray']:.2f}×"]]
    return markdown_table(["book-preset runs", f"local pool, {workers} workers (s)",
                           f"Ray here, {workers} CPUs, start included (s)", "speed-up"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", action="store_true",
                        help="re-execute every chapter at `book` (minutes) instead of reading "
                             "the recorded wall times")
    parser.add_argument("--tables", type=int, nargs="+", choices=range(1, 7), metavar="N",
                        help="print only these tables (1-6; default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    dataset = data.mnist1d(num_samples=5000)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; MNIST-1D {len(dataset.y_train)} "
          f"training samples, batch {BATCH}, {EPOCHS} epochs, Adam\n")
    tables = [
        ("1. Fit loop vs DataLoader loop (1 thread, flush denormal on)",
         lambda: loop_table(dataset)),
        ("2. Threads and flush-denormal (lossbook.train.fit)", lambda: settings_table(dataset)),
        ("3. Independent runs in parallel workers", parallel_table),
        ("4. Seed replicates: sequential fits vs one stacked fit (1 thread)",
         lambda: batched_table(dataset)),
        ("5. Chapters at the book preset", lambda: chapter_table(args.chapters)),
        ("6. Executors: local process pool vs Ray", executor_table),
    ]
    for number, (title, table) in enumerate(tables, 1):
        if not args.tables or number in args.tables:
            print(f"{title}\n{table()}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
