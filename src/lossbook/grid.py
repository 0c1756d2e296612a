"""`lossbook sweep`: one chapter executed at every point of a parameter grid, in parallel, then
one summary of every claim's verdict across the grid.

Each point is a papermill execution of the chapter (`book.execute`), run in a local worker
process or as a Ray task (`cache.EXECUTORS`). The executed notebook and its claims come back to
this process, which writes them atomically to `<out>/<name>.ipynb` and `<name>.claims.json`,
the name made of the point's parameters. A point whose notebook is already there, executed from
the same inputs and parameters, is not run again: an interrupted sweep resumes.
"""

from __future__ import annotations

import concurrent.futures as futures
import itertools
import multiprocessing
import os
import re
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lossbook import book, cache, presets
from lossbook.claims import markdown_table
from lossbook.io import read_json, stable_hash, write_atomic, write_json
from lossbook.paths import build_dir


def split_values(text: str) -> list[str]:
    """`0,1,(2,3)` → ['0', '1', '(2,3)']: commas inside brackets or quotes do not split."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def parse_grid(pairs: list[str]) -> dict[str, list]:
    """`-g seed=0,1,2 -g tau=0.5,1.0` → {"seed": [0, 1, 2], "tau": [0.5, 1.0]}."""
    grid: dict[str, list] = {}
    for pair in pairs:
        name, sep, values = pair.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise presets.ConfigError(f"a grid axis is written name=v1,v2,..., got {pair!r}")
        if name in grid:
            raise presets.ConfigError(f"grid axis {name!r} given twice")
        grid[name] = [presets.parse_cli_value(v.strip()) for v in split_values(values)]
    return grid


def point_name(point: dict[str, Any]) -> str:
    """A file name from a point's parameters: {"seed": 1, "tau": 0.5} → "seed1-tau0.5"."""
    text = "-".join(f"{k}{v}" for k, v in point.items()) or "default"
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)


def plan(chapter: str, preset: str, grid: dict[str, list],
         fixed: dict[str, Any] | None = None) -> list[dict]:
    """Every grid point, validated before anything runs: name, grid values, papermill
    parameters."""
    fixed = dict(fixed or {})
    both = set(grid) & set(fixed)
    if both:
        raise presets.ConfigError(f"{', '.join(sorted(both))} given both as -p and as -g")
    points = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        parameters = book.split_parameters(chapter, preset, {**fixed, **point})
        points.append({"name": point_name(point), "point": point, "parameters": parameters})
    names = Counter(p["name"] for p in points)
    if max(names.values()) > 1:
        clash = [n for n, count in names.items() if count > 1]
        raise presets.ConfigError(f"grid points share the file name {clash[0]!r}: use values "
                                  "that differ in more than punctuation")
    return points


def execute_point(chapter: str, preset: str, parameters: dict) -> dict:
    """Execute one point in this process (a worker); returns the executed notebook's text and
    its claims, or the error. The chapter's own runs go one at a time: points run in parallel."""
    os.environ["LOSSBOOK_WORKERS"] = "1"
    os.environ["LOSSBOOK_EXECUTOR"] = "local"
    with tempfile.TemporaryDirectory() as tmp:
        output, results = Path(tmp) / "point.ipynb", Path(tmp) / "point.claims.json"
        try:
            book.execute(chapter, preset, parameters, output=output, results=results,
                         progress=False)
        except Exception as err:  # the point failed: keep its notebook, run the others
            failed = output.with_suffix(".failed.ipynb")
            return {"error": f"{type(err).__name__}: {err}"[:2000],
                    "notebook": failed.read_text() if failed.is_file() else None}
        return {"notebook": output.read_text(), "claims": read_json(results)}


def is_done(notebook: Path, chapter: str, parameters: dict) -> bool:
    """The point's notebook and claims exist, executed from today's inputs and parameters."""
    meta = book.recorded_metadata(notebook) or {}
    return (notebook.with_suffix(".claims.json").is_file()
            and stable_hash(meta.get("parameters")) == stable_hash(parameters)
            and meta.get("inputs") == book.input_hashes(chapter))


def _execute_local(chapter: str, preset: str, todo: list[dict], jobs: int, finish) -> None:
    if jobs <= 1 or len(todo) <= 1:
        for p in todo:
            finish(p, execute_point(chapter, preset, p["parameters"]))
        return
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context) as pool:
        running = {pool.submit(execute_point, chapter, preset, p["parameters"]): p
                   for p in todo}
        for job in futures.as_completed(running):
            finish(running[job], job.result())


def _execute_ray(chapter: str, preset: str, todo: list[dict], jobs: int | None, finish) -> None:
    """One Ray task per point: 1 CPU, and 1 GPU where the point runs on CUDA (device `cuda`,
    or `auto` on a cluster that has GPUs)."""
    import ray

    cache.ray_init(jobs)
    has_gpus = ray.cluster_resources().get("GPU", 0) >= 1
    task = ray.remote(execute_point)
    pending = {}
    for p in todo:
        device = str(p["parameters"].get("device", "auto"))
        gpus = int(device.startswith("cuda") or (device == "auto" and has_gpus))
        options = {"num_cpus": 1, "num_gpus": gpus, "max_retries": cache.RAY_RETRIES}
        pending[task.options(**options).remote(chapter, preset, p["parameters"])] = p
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            finish(pending.pop(done[0]), ray.get(done[0]))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def run(chapter: str, preset: str, grid: dict[str, list], fixed: dict[str, Any] | None = None,
        *, executor: str | None = None, jobs: int | None = None, out: Path | None = None,
        force: bool = False, progress: bool = True) -> dict:
    """Execute every grid point not already done, then write `summary.md` and `summary.json`
    into `out` (default build/<preset>/sweeps/<chapter>/); returns the summary."""
    from tqdm.auto import tqdm

    executor = cache.check_executor(executor)
    if jobs is not None and jobs < 1:
        raise presets.ConfigError(f"jobs must be at least 1, got {jobs}")
    points = plan(chapter, preset, grid, fixed)
    out = Path(out or build_dir() / preset / "sweeps" / chapter)
    for p in points:
        p["notebook"] = out / f"{p['name']}.ipynb"
    todo = [p for p in points if force or not is_done(p["notebook"], chapter, p["parameters"])]
    errors: dict[str, str] = {}
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"{chapter} grid",
               disable=not progress)

    def finish(p: dict, result: dict) -> None:
        failed = p["notebook"].with_suffix(".failed.ipynb")
        if "error" in result:
            errors[p["name"]] = result["error"]
            if result["notebook"]:
                write_atomic(failed, result["notebook"])
        else:
            write_json(p["notebook"].with_suffix(".claims.json"), result["claims"])
            write_atomic(p["notebook"], result["notebook"])  # written last: marks it done
            failed.unlink(missing_ok=True)
        bar.update()

    if executor == "ray" and todo:
        _execute_ray(chapter, preset, todo, jobs, finish)
    else:
        _execute_local(chapter, preset, todo, jobs or cache.default_workers("cpu"), finish)
    bar.close()
    summary = summarize(chapter, preset, grid, points, errors, executor)
    write_json(out / "summary.json", summary)
    write_atomic(out / "summary.md", summary_markdown(summary))
    return summary


def summarize(chapter: str, preset: str, grid: dict[str, list], points: list[dict],
              errors: dict[str, str], executor: str) -> dict:
    """Per claim: its verdict (and `ours`, `effect`, `interval` where the claims have them) at
    every grid point, and the count of each verdict across the grid."""
    claims: dict[str, dict] = {}
    rows = []
    for p in points:
        path = p["notebook"].with_suffix(".claims.json")
        record = read_json(path) if p["name"] not in errors and path.is_file() else {}
        rows.append({"name": p["name"], "point": p["point"], "notebook": p["notebook"].name,
                     "error": errors.get(p["name"])})
        for claim in record.get("claims", []):
            entry = claims.setdefault(claim["id"], {"id": claim["id"],
                                                    "statement": claim.get("statement", ""),
                                                    "counts": {}, "points": {}})
            verdict = claim.get("verdict", "?")
            entry["counts"][verdict] = entry["counts"].get(verdict, 0) + 1
            entry["points"][p["name"]] = {k: claim[k] for k in ("verdict", "ours", "effect",
                                                                "interval") if k in claim}
    return {"chapter": chapter, "preset": preset, "grid": grid, "executor": executor,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "points": rows, "claims": list(claims.values())}


def _effect(cell: dict) -> str:
    effect, interval = cell.get("effect"), cell.get("interval")
    if not isinstance(effect, int | float):
        return "–"
    text = f"{effect:.4g}"
    if isinstance(interval, list | tuple) and len(interval) == 2:
        text += f" [{interval[0]:.4g}, {interval[1]:.4g}]"
    return text


def summary_markdown(summary: dict) -> str:
    grid = " · ".join(f"{k} = {', '.join(map(str, v))}" for k, v in summary["grid"].items())
    points = summary["points"]
    lines = [f"# {summary['chapter']}: a grid at the `{summary['preset']}` preset", "",
             f"{grid or 'no grid'} ({len(points)} points; executor {summary['executor']}; "
             f"{summary['written_at']})", ""]
    failed = [p for p in points if p["error"]]
    if failed:
        lines += ["**Failed points** (their notebooks: `<name>.failed.ipynb`):", ""]
        lines += [f"- `{p['name']}`: {p['error'].splitlines()[0]}" for p in failed] + [""]
    verdicts = sorted({v for c in summary["claims"] for v in c["counts"]})
    rows = [[c["id"], c["statement"], *(c["counts"].get(v, 0) for v in verdicts)]
            for c in summary["claims"]]
    lines += ["## Verdicts across the grid", "",
              markdown_table(["claim", "statement", *verdicts], rows), ""]
    show_effect = any("effect" in cell for c in summary["claims"] for cell in c["points"].values())
    for c in summary["claims"]:
        rows = []
        for p in points:
            cell = c["points"].get(p["name"], {})
            row = [p["name"], cell.get("verdict", "failed" if p["error"] else "–"),
                   cell.get("ours", "–")]
            rows.append(row + [_effect(cell)] if show_effect else row)
        headers = ["point", "verdict", "ours"] + (["effect [interval]"] if show_effect else [])
        lines += [f"## `{c['id']}`: {c['statement']}", "", markdown_table(headers, rows), ""]
    return "\n".join(lines)
