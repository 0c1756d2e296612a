import json

import pytest

from lossbook import cache

CALLS = []
INTERRUPT_AT = {"x": None}


def square(spec: dict) -> dict:
    if spec["x"] == INTERRUPT_AT["x"]:
        raise KeyboardInterrupt  # the sweep is interrupted here
    CALLS.append(spec["x"])
    return {"y": spec["x"] ** 2}


def test_sweep_caches_and_resumes_after_interruption(tmp_path):
    runs = cache.RunCache(tmp_path / "runs")
    specs = [{"x": i} for i in range(5)]
    CALLS.clear()
    INTERRUPT_AT["x"] = 3
    with pytest.raises(KeyboardInterrupt):
        cache.sweep(square, specs, cache=runs, progress=False)
    assert CALLS == [0, 1, 2]
    # the finished runs are on disk, complete, with no temporary files left behind
    files = sorted((tmp_path / "runs").iterdir())
    assert len(files) == 3 and not [f for f in files if f.name.startswith(".")]
    CALLS.clear()
    INTERRUPT_AT["x"] = None
    results = cache.sweep(square, specs, cache=runs, progress=False)
    assert CALLS == [3, 4]  # only the unfinished runs
    assert [r["y"] for r in results] == [0, 1, 4, 9, 16]
    CALLS.clear()
    assert cache.sweep(square, specs, cache=runs, progress=False) == results and CALLS == []


def test_resume_with_the_same_function(tmp_path):
    runs = cache.RunCache(tmp_path / "runs")
    specs = [{"x": i} for i in range(4)]
    for spec in specs[:2]:  # as if a previous sweep finished these two
        runs.put(square, spec, {"y": spec["x"] ** 2})
    CALLS.clear()
    results = cache.sweep(square, specs, cache=runs, progress=False)
    assert CALLS == [2, 3] and [r["y"] for r in results] == [0, 1, 4, 9]


def test_key_depends_on_spec_function_and_library(tmp_path, monkeypatch):
    runs = cache.RunCache(tmp_path)
    assert runs.path(square, {"x": 1}) != runs.path(square, {"x": 2})
    assert runs.path(square, {"x": 1, "y": 2}) == runs.path(square, {"y": 2, "x": 1})
    assert runs.path(square, {"x": 1}) != runs.path(test_resume_with_the_same_function,
                                                     {"x": 1})
    before = runs.path(square, {"x": 1})
    monkeypatch.setattr(cache, "compute_hash", lambda module: "changed")
    assert runs.path(square, {"x": 1}) != before
    monkeypatch.undo()
    monkeypatch.setattr(cache, "environment_hash", lambda: "torch 9.9, other lock file")
    assert runs.path(square, {"x": 1}) != before


def test_presentation_modules_do_not_touch_the_run_key():
    names = {p.name for p in cache.PACKAGE_DIR.rglob("*.py")}
    assert cache.PRESENTATION <= names
    assert cache.compute_hash() != cache.library_hash()


def test_cached_file_is_plain_json(tmp_path):
    runs = cache.RunCache(tmp_path)
    runs.put(square, {"x": 3}, {"y": 9})
    stored = json.loads(runs.path(square, {"x": 3}).read_text())
    assert stored == {"spec": {"x": 3}, "result": {"y": 9}}


def test_parallel_workers_match_serial(tmp_path):
    specs = [{"x": i} for i in range(4)]
    serial = cache.sweep(square, specs, workers=1, progress=False)
    parallel = cache.sweep(square, specs, workers=2, progress=False)
    assert serial == parallel
