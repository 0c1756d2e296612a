"""`lossbook sweep`: grid parsing, validation before any execution, resume, the summary."""

import json

import nbformat
import pytest

from lossbook import book, cli, grid, presets

CH = "05_icl_gd"


def test_parse_grid():
    assert grid.parse_grid(["seed=0,1,2", "input_range=0.5, 1.0", "device=cpu"]) == {
        "seed": [0, 1, 2], "input_range": [0.5, 1.0], "device": ["cpu"]}
    assert grid.parse_grid(["milestones=(2,3),(4,5)"]) == {"milestones": [(2, 3), (4, 5)]}
    for bad in (["seed"], ["seed="], ["=1"], ["seed=1", "seed=2"]):
        with pytest.raises(presets.ConfigError):
            grid.parse_grid(bad)


def test_point_names_come_from_the_parameters():
    assert grid.point_name({"seed": 1, "input_range": 0.5}) == "seed1-input_range0.5"
    assert grid.point_name({"milestones": (2, 3)}) == "milestones_2_3_"
    assert grid.point_name({}) == "default"


def test_every_point_is_validated_before_any_execution(monkeypatch):
    calls = []
    monkeypatch.setattr(grid, "execute_point", lambda *a: calls.append(a))
    with pytest.raises(presets.ConfigError, match="input_range"):  # the last point is bad
        grid.run(CH, "smoke", {"seed": [0, 1], "input_range": [1.0, "wide"]}, jobs=1)
    with pytest.raises(presets.ConfigError, match="unknown parameter 'tau'"):
        grid.run(CH, "smoke", {"tau": [0.5]}, jobs=1)
    with pytest.raises(presets.ConfigError, match="both as -p and as -g"):
        grid.run(CH, "smoke", {"seed": [0]}, {"seed": 1}, jobs=1)
    with pytest.raises(presets.ConfigError, match="valid executors"):
        grid.run(CH, "smoke", {"seed": [0]}, executor="dask", jobs=1)
    assert calls == []
    assert cli.main(["sweep", CH, "--preset", "nope", "-g", "seed=0"]) == 2
    assert calls == []


def fake_point(calls: list, fail: set):
    """Stands in for a papermill execution: a notebook with the metadata `book.execute` writes
    and claims with (seed 0) or without (seed 1) the protocol's numeric effect."""
    def execute_point(chapter, preset, parameters):
        calls.append(parameters)
        if parameters.get("seed") in fail:
            return {"error": "PapermillExecutionError: boom\nmore", "notebook": "{}"}
        nb = nbformat.v4.new_notebook()
        nb.metadata["lossbook"] = {"parameters": parameters, "inputs": book.input_hashes(chapter)}
        claim = {"id": "loss", "statement": "LSA matches GD", "ours": f"seed {parameters['seed']}",
                 "verdict": "held" if parameters["seed"] == 0 else "not held"}
        if parameters["seed"] == 0:
            claim.update(effect=0.25, interval=[0.125, 0.5])
        return {"notebook": nbformat.writes(nb),
                "claims": {"provenance": {}, "claims": [claim]}}
    return execute_point


def test_grid_writes_notebooks_and_summary_and_resumes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(grid, "execute_point", fake_point(calls, fail={2}))
    out = tmp_path / "sweep"
    summary = grid.run(CH, "smoke", {"seed": [0, 1, 2]}, {"input_range": 1.0}, jobs=1, out=out,
                       progress=False)
    assert [c["seed"] for c in calls] == [0, 1, 2]
    assert calls[0]["overrides"] == {"input_range": 1.0}
    assert sorted(p.name for p in out.iterdir()) == [
        "seed0.claims.json", "seed0.ipynb", "seed1.claims.json", "seed1.ipynb",
        "seed2.failed.ipynb", "summary.json", "summary.md"]
    assert json.loads((out / "summary.json").read_text()) == summary
    (claim,) = summary["claims"]
    assert claim["counts"] == {"held": 1, "not held": 1}
    assert claim["points"] == {
        "seed0": {"verdict": "held", "ours": "seed 0", "effect": 0.25, "interval": [0.125, 0.5]},
        "seed1": {"verdict": "not held", "ours": "seed 1"}}
    assert [p["error"] for p in summary["points"]] == [None, None,
                                                       "PapermillExecutionError: boom\nmore"]
    md = (out / "summary.md").read_text()
    assert "| loss | LSA matches GD | 1 | 1 |" in md
    assert "| seed0 | held | seed 0 | 0.25 [0.125, 0.5] |" in md
    assert "| seed1 | not held | seed 1 | – |" in md
    assert "| seed2 | failed | – | – |" in md and "`seed2`: PapermillExecutionError: boom" in md
    # a re-run executes only the point that failed; --force executes all
    calls.clear()
    monkeypatch.setattr(grid, "execute_point", fake_point(calls, fail=set()))
    summary = grid.run(CH, "smoke", {"seed": [0, 1, 2]}, {"input_range": 1.0}, jobs=1, out=out,
                       progress=False)
    assert [c["seed"] for c in calls] == [2] and not (out / "seed2.failed.ipynb").exists()
    assert summary["claims"][0]["counts"] == {"held": 1, "not held": 2}
    calls.clear()
    grid.run(CH, "smoke", {"seed": [0, 1, 2]}, {"input_range": 1.0}, jobs=1, out=out,
             force=True, progress=False)
    assert len(calls) == 3


def test_cli_sweep_exit_status(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "execute_point", fake_point([], fail={1}))
    args = ["sweep", CH, "--preset", "smoke", "-j", "1", "-o", str(tmp_path)]
    assert cli.main([*args, "-g", "seed=0,1"]) == 1  # one point failed
    assert cli.main([*args, "-g", "seed=0"]) == 0
