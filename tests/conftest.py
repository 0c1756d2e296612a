import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test writes generated data and runs under its own temporary cache."""
    monkeypatch.setenv("LOSSBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LOSSBOOK_BUILD", str(tmp_path / "build"))
    torch.set_num_threads(1)


# --- `make chaos`: the fault trials of tests/test_chaos.py as one table -----------------------

CHAOS_ROWS: list[tuple[str, str, str, str]] = []


def pytest_addoption(parser):
    parser.addoption("--chaos-table", action="store_true",
                     help="print the table of fault trials (trial, expected, observed, verdict)")


def pytest_configure(config):
    config.addinivalue_line("markers", "chaos: a fault-injection trial (make chaos)")


@pytest.fixture
def observe(request):
    """Record what a chaos trial observed (shown in the `make chaos` table)."""
    notes = request.node.__dict__.setdefault("chaos_observed", [])
    return notes.append


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("chaos") is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        expected = getattr(item.module, "EXPECTED", {}).get(item.originalname, "")
        observed = "; ".join(item.__dict__.get("chaos_observed", []))
        if report.failed:
            observed = str(report.longrepr).strip().splitlines()[-1][:100]
        verdict = "skipped" if report.skipped else "PASS" if report.passed else "FAIL"
        CHAOS_ROWS.append((item.name.removeprefix("test_"), expected, observed, verdict))


def pytest_terminal_summary(terminalreporter, config):
    if not config.getoption("--chaos-table") or not CHAOS_ROWS:
        return
    header = ("trial", "expected", "observed", "verdict")
    widths = [min(70, max(len(r[i]) for r in [header, *CHAOS_ROWS])) for i in range(4)]
    write = terminalreporter.write_line
    write("")
    for row in [header, tuple("-" * w for w in widths), *CHAOS_ROWS]:
        write(" | ".join(c[:w].ljust(w) for c, w in zip(row, widths)))
    passed = sum(r[3] == "PASS" for r in CHAOS_ROWS)
    write(f"\n{passed} of {len(CHAOS_ROWS)} fault trials passed")
