import pytest

from lossbook import cache, presets


def test_unknown_executor_fails_before_any_run(monkeypatch):
    calls = []
    with pytest.raises(presets.ConfigError, match="valid executors: local, ray"):
        cache.sweep(calls.append, [{"x": 1}], executor="dask", progress=False)
    monkeypatch.setenv("LOSSBOOK_EXECUTOR", "slurm")
    with pytest.raises(presets.ConfigError, match="'slurm'"):
        cache.sweep(calls.append, [{"x": 1}], progress=False)
    assert calls == []


def test_local_is_the_default(monkeypatch):
    monkeypatch.delenv("LOSSBOOK_EXECUTOR", raising=False)
    assert cache.check_executor() == "local"
    assert cache.check_executor("ray") == "ray"


def test_a_ray_task_refuses_a_different_library_source():
    with pytest.raises(RuntimeError, match="differs from the driver's"):
        cache._ray_run(dict, {"x": 1}, library="another commit")
    assert cache._ray_run(dict, {"x": 1}, library=cache.compute_hash()) == {"x": 1}
