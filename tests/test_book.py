"""The published record: staleness detection, execution metadata, and the committed chapters."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from lossbook import book, cache
from lossbook.claims import KINDS as CLAIM_KINDS
from lossbook.claims import MIN_SEEDS
from lossbook.claims import VERDICTS as CLAIM_VERDICTS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp_repo(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "requirements").mkdir()
    shutil.copy(REPO / "notebooks" / "01_compsum.py", tmp_path / "notebooks")
    (tmp_path / "requirements" / "lock.txt").write_text("torch==2.13.0\n")
    monkeypatch.setenv("LOSSBOOK_ROOT", str(tmp_path))
    return tmp_path


def fake_record(repo: Path, parameters=None) -> Path:
    claims = book.claims_record_path("01_compsum")
    claims.parent.mkdir(exist_ok=True)
    claims.write_text('{"provenance": {}, "claims": []}\n')
    nb = nbformat.v4.new_notebook()
    nb.metadata["lossbook"] = {"inputs": book.input_hashes("01_compsum"),
                               "parameters": parameters or {"preset": "book"},
                               "claims_sha256": book.file_hash(claims)}
    path = repo / "book" / "01_compsum.ipynb"
    path.write_text(nbformat.writes(nb))
    return path


def test_staleness_tracks_source_library_lock_and_parameters(tmp_repo, monkeypatch):
    assert book.staleness("01_compsum") == ["never executed"]
    fake_record(tmp_repo)
    assert book.staleness("01_compsum") == []
    source = tmp_repo / "notebooks" / "01_compsum.py"
    source.write_text(source.read_text() + "\n# %%\nprint('edited')\n")
    assert book.staleness("01_compsum") == ["chapter source changed"]
    fake_record(tmp_repo)
    (tmp_repo / "requirements" / "lock.txt").write_text("torch==2.14.0\n")
    assert book.staleness("01_compsum") == ["locked dependencies changed"]
    fake_record(tmp_repo)
    monkeypatch.setattr(book, "chapter_library_hash", lambda chapter: "other")
    assert book.staleness("01_compsum") == ["library changed"]
    monkeypatch.undo()
    monkeypatch.setenv("LOSSBOOK_ROOT", str(tmp_repo))
    fake_record(tmp_repo, {"preset": "book", "seed": 3})
    assert book.staleness("01_compsum") == ["executed with other parameters"]


def test_prepare_only_injects_hidden_parameters_and_records_inputs(tmp_repo):
    out = book.execute("01_compsum", "smoke", {"seed": 2, "epochs": 1}, prepare_only=True,
                       output=tmp_repo / "out.ipynb", progress=False)
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert "seed = 2" in injected[0].source and '"epochs": 1' in injected[0].source
    meta = nb.metadata["lossbook"]
    assert meta["inputs"] == book.input_hashes("01_compsum")
    assert meta["parameters"] == {"preset": "smoke", "seed": 2, "overrides": {"epochs": 1}}
    assert not list(tmp_repo.glob(".running.*"))


def test_output_names_distinguish_sweep_members():
    assert book.output_name("01_compsum", {"preset": "full"}) == "01_compsum"
    assert book.output_name("01_compsum", {"preset": "full", "seed": 3}) == "01_compsum-seed3"
    a = book.output_name("01_compsum", {"preset": "full", "overrides": {"epochs": 1}})
    assert a != book.output_name("01_compsum", {"preset": "full", "overrides": {"epochs": 2}})


def test_library_hash_covers_the_package():
    assert len(cache.library_hash()) == 64


# --- the committed record (fails `make test` when a chapter is older than its source) --------

@pytest.mark.parametrize("chapter", book.chapters())
def test_committed_record_is_current_and_complete(chapter, monkeypatch):
    monkeypatch.setenv("LOSSBOOK_ROOT", str(REPO))
    record = book.record_path(chapter)
    assert record.is_file(), f"{record} missing: run `make book`"
    nb = nbformat.read(record, as_version=4)
    meta = nb.metadata["lossbook"]
    assert meta["inputs"]["source"] == book.file_hash(book.source_path(chapter)), (
        f"{record.name} was executed from an older {chapter}.py: run `make book` and commit it")
    assert meta["parameters"] == {"preset": "book"} and not meta["prepare_only"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("outputs") is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2
    injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    assert all("remove-cell" in c.metadata["tags"] for c in injected)
    claims = json.loads(book.claims_record_path(chapter).read_text())
    assert claims["provenance"]["preset"] == "book" and claims["claims"]
    assert {c["verdict"] for c in claims["claims"]} <= set(CLAIM_VERDICTS)
    assert {c["kind"] for c in claims["claims"]} <= set(CLAIM_KINDS)
    seeded = [e for c in claims["claims"] for e in c["evidence"]]
    assert all(e["n"] >= MIN_SEEDS for e in seeded), "book claims need at least 5 seeds"


@pytest.mark.parametrize("chapter", book.chapters())
def test_sources_have_literal_parameters_and_are_in_the_toc(chapter, monkeypatch):
    monkeypatch.setenv("LOSSBOOK_ROOT", str(REPO))
    params = book.notebook_parameters(chapter)
    assert {"preset", "seed", "device"} <= set(params) and params["device"] == "auto"
    assert f"book/{chapter}" in (REPO / "book" / "_toc.yml").read_text()
    assert not list((REPO / "notebooks").glob("*.ipynb"))


def test_status_page_lists_every_chapter(monkeypatch):
    monkeypatch.setenv("LOSSBOOK_ROOT", str(REPO))
    page = book.status_page()
    assert page.startswith("# Reproduction status")
    for chapter in book.chapters():
        assert f"({chapter}.ipynb)" in page


def test_progress_bars_are_settled_to_their_final_state():
    stream = [nbformat.v4.new_output("stream", name="stderr", text=t) for t in (
        "runs:   0%|  | 0/3\n", "runs:  33%|█ | 1/3\r", "runs: 100%|██| 3/3\n",
        "a real warning\n")]
    stdout = nbformat.v4.new_output("stream", name="stdout", text="hello\n")
    settled = book.settle_progress_bars([stdout, *stream])
    assert settled[0] is stdout and len(settled) == 2
    assert settled[1]["text"] == "runs: 100%|██| 3/3\na real warning\n"
    empty = nbformat.v4.new_output("stream", name="stderr", text="\n\n")
    assert book.settle_progress_bars([empty]) == []


def test_failed_run_keeps_the_partial_notebook(tmp_repo):
    source = tmp_repo / "notebooks" / "01_compsum.py"
    source.write_text(source.read_text().replace(
        "ch = lossbook.start(", "raise RuntimeError('boom')\nch = lossbook.start(", 1))
    out = tmp_repo / "out" / "ch.ipynb"
    with pytest.raises(Exception, match="boom"):
        book.execute("01_compsum", "smoke", {}, output=out, progress=False)
    failed = out.with_suffix(".failed.ipynb")
    assert failed.is_file() and not out.exists()
    assert "boom" in failed.read_text()


def test_status_page_scores_paper_claims_and_shows_audit_stability(tmp_repo):
    fake_record(tmp_repo)
    claims = [{"id": "p1", "statement": "paper claim", "verdict": "held", "kind": "paper",
               "ours": "x"},
              {"id": "p2", "statement": "flaky claim", "verdict": "held", "kind": "paper",
               "ours": "y"},
              {"id": "i1", "statement": "identity", "verdict": "held", "kind": "identity",
               "ours": "z"},
              {"id": "c1", "statement": "context", "verdict": "not held", "kind": "context",
               "ours": "w"}]
    (tmp_repo / "book" / "claims").mkdir(exist_ok=True)
    book.claims_record_path("01_compsum").write_text(json.dumps({
        "provenance": {"preset": "book", "wall_time_s": 10, "device": "cpu (x)",
                       "commit": "abc"}, "claims": claims}))
    (tmp_repo / "book" / "audit").mkdir()
    book.audit_path("01_compsum").write_text(json.dumps({
        "seed_sets": [1000, 2000], "claims": {
            "p1": {"book": "held", "verdicts": ["held", "held"], "stability": 1.0},
            "p2": {"book": "held", "verdicts": ["held", "inconclusive"], "stability": 0.5}}}))
    page = book.status_page()
    # paper claims only: 1 held, 0 not held, 1 inconclusive (p2 changed in the audit)
    assert "| 1 / 0 / 1 / 0 | 1 identity, 1 context | 2 seed-sets |" in page
    assert "| flaky claim | paper | inconclusive | 50% of 2 |" in page
    assert "| paper claim | paper | held | 100% of 2 |" in page
    assert "| identity | identity | held | – |" in page


def test_audit_reexecutes_with_disjoint_seed_sets_and_writes_stability(tmp_repo, monkeypatch):
    ran = []

    def fake_execute(chapter, preset, params, output=None, **_):
        import os

        ran.append((params["seed"], os.environ.get("LOSSBOOK_AUDIT")))
        held = params["seed"] != 2000  # the second fresh seed-set flips claim "a"
        claims = [{"id": "a", "verdict": "held" if held else "inconclusive"},
                  {"id": "b", "verdict": "not held"}]
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).with_suffix(".claims.json").write_text(json.dumps(
            {"provenance": {"commit": "abc"}, "claims": claims}))
        return Path(output)

    monkeypatch.setattr(book, "execute", fake_execute)
    out = book.audit("01_compsum", 3, "smoke")
    assert ran == [(0, "1"), (1000, "1"), (2000, "1"), (3000, "1")]
    result = json.loads(out.read_text())
    assert result["seed_sets"] == [1000, 2000, 3000]
    assert result["claims"]["a"]["verdicts"] == ["held", "inconclusive", "held"]
    assert result["claims"]["a"]["stability"] == pytest.approx(2 / 3)
    assert result["claims"]["b"]["stability"] == 1.0
    assert "book" not in str(out.relative_to(tmp_repo))  # smoke audits stay under build/
    assert "67%" in book.audit_report(out)
    with pytest.raises(Exception, match="no book record"):
        book.audit("01_compsum", 2)
