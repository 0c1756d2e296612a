"""The Ray executor on a real local Ray (2 CPUs): same results and cache as the local executor,
killed workers retried, interrupted sweeps resumed."""

import json
import os
import time
from pathlib import Path

import pytest

from lossbook import cache, presets
from lossbook.chapters import compsum

ray = pytest.importorskip("ray", reason="ray is not installed (pip install .[ray])")
import ray_runs  # noqa: E402  (tests/ is on sys.path; Ray's workers get it from PYTHONPATH)

TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One small Ray for the module, started the way a sweep starts it, then shut down."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_ADDRESS")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, saved["PYTHONPATH"]]))
    cache.ray_init(num_cpus=2)
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def untimed(value):
    """`value` without its wall-clock fields (`time_s`): everything else must be identical."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "time_s"}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def cached_files(folder: Path) -> dict[str, dict]:
    return {p.name: untimed(json.loads(p.read_text())) for p in sorted(folder.iterdir())}


def test_smoke_sweep_matches_local_executor(tmp_path):
    cfg = presets.resolve("01_compsum", "smoke")
    specs = compsum.loss_specs(cfg, 0, "cpu")
    local_cache = cache.RunCache(tmp_path / "local")
    ray_cache = cache.RunCache(tmp_path / "ray")
    local = cache.sweep(compsum.loss_run, specs, cache=local_cache, workers=2,
                        executor="local", progress=False)
    on_ray = cache.sweep(compsum.loss_run, specs, cache=ray_cache, workers=2,
                         executor="ray", progress=False)
    assert untimed(on_ray) == untimed(local)  # exactly: same floats, same order
    assert cached_files(tmp_path / "ray") == cached_files(tmp_path / "local")
    assert len(cached_files(tmp_path / "ray")) == len(specs)


def test_killed_worker_loses_nothing(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    specs = [{"x": x, "log": str(log)} for x in range(6)]
    runs = cache.RunCache(tmp_path / "runs")
    results = cache.sweep(ray_runs.killed_once, specs, cache=runs, executor="ray", workers=2,
                          progress=False)
    assert sorted(p.name for p in log.glob("killed-*")) == ["killed-0", "killed-2", "killed-4"]
    expected = [{"y": x ** 2} for x in range(6)]
    assert results == expected
    assert [runs.get(ray_runs.killed_once, s) for s in specs] == expected
    assert len(list(log.glob("call-*"))) == 9  # 6 runs + 3 retries of the killed ones
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]



def settle(log, quiet_s: float = 1.5, limit_s: float = 30.0) -> None:
    """Wait until no new call leaves a file in `log` for `quiet_s` seconds."""
    seen, quiet_since, start = None, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit_s:
        now = sorted(p.name for p in log.glob("call-*"))
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.1)

def test_failed_ray_sweep_resumes_from_the_cache(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (log / "fail").touch()
    specs = [{"x": x, "log": str(log)} for x in range(6)]
    runs = cache.RunCache(tmp_path / "runs")
    with pytest.raises(ValueError, match="run 3 failed"):  # not retried: it would fail again
        cache.sweep(ray_runs.fails_at_three, specs, cache=runs, executor="ray", workers=2,
                    progress=False)
    finished = {s["x"] for s in specs if runs.get(ray_runs.fails_at_three, s) is not None}
    assert 3 not in finished and len(list(log.glob("call-3-*"))) == 1
    settle(log)  # the sweep cancels the runs still in flight; Ray stops them asynchronously
    (log / "fail").unlink()
    for path in log.glob("call-*"):
        path.unlink()
    results = cache.sweep(ray_runs.fails_at_three, specs, cache=runs, executor="ray",
                          progress=False)
    assert results == [{"y": x ** 2} for x in range(6)]
    again = sorted(int(p.name.split("-")[1]) for p in log.glob("call-*"))
    assert again == sorted(set(range(6)) - finished)  # only the runs not cached before


def test_executor_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBOOK_EXECUTOR", "ray")
    assert cache.check_executor() == "ray"
    log = tmp_path / "log"
    log.mkdir()
    specs = [{"x": x, "log": str(log)} for x in (1, 3)]
    assert cache.sweep(ray_runs.killed_once, specs, progress=False) == [{"y": 1}, {"y": 9}]
