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
