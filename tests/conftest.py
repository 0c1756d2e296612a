import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test writes generated data and runs under its own temporary cache."""
    monkeypatch.setenv("LOSSBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LOSSBOOK_BUILD", str(tmp_path / "build"))
    torch.set_num_threads(1)
