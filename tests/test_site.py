"""The rendered book's inputs: repository URL and buttons, the install cell, figure metadata."""

import re
import shutil
import subprocess
from pathlib import Path

import jupytext
import nbformat
import pytest

from lossbook import book
from lossbook.plotting import panel_grid

REPO = Path(__file__).resolve().parents[1]
URL = "https://example.org/someone/lossbook"


@pytest.fixture
def tmp_repo(tmp_path, monkeypatch):
    for folder in ("notebooks", "book", "requirements"):
        (tmp_path / folder).mkdir()
    shutil.copy(REPO / "notebooks" / "01_compsum.py", tmp_path / "notebooks")
    shutil.copy(REPO / "_config.yml", tmp_path)
    (tmp_path / "requirements" / "lock.txt").write_text("torch==2.13.0\n")
    monkeypatch.setenv("LOSSBOOK_ROOT", str(tmp_path))
    monkeypatch.delenv(book.REPO_URL_ENV, raising=False)
    return tmp_path


def test_buttons_are_hidden_until_the_repository_url_is_set(tmp_repo, monkeypatch):
    assert book.repo_url() == ""
    config = book.site_config()
    assert config["html"]["use_repository_button"] is False
    assert not config["launch_buttons"]["colab_url"]
    assert not config["launch_buttons"]["binderhub_url"]
    monkeypatch.setenv(book.REPO_URL_ENV, URL + "/")
    assert book.repo_url() == URL
    config = book.site_config()
    assert config["repository"]["url"] == URL and config["html"]["use_repository_button"]
    assert config["launch_buttons"]["colab_url"] and config["launch_buttons"]["binderhub_url"]
    assert URL in config["parse"]["myst_substitutions"]["install"]
    assert "{{ install }}" in (REPO / "book" / "intro.md").read_text()


def run_install_cell(url: str, importable: bool, monkeypatch) -> list:
    import importlib.util

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: real(name) if importable or name != "lossbook" else None)
    exec(book.install_cell_source(url), {})
    return calls


def test_install_cell_installs_only_outside_a_clone(monkeypatch):
    assert run_install_cell(URL, importable=True, monkeypatch=monkeypatch) == []
    calls = run_install_cell(URL, importable=False, monkeypatch=monkeypatch)
    assert len(calls) == 1 and calls[0][-1] == f"git+{URL}" and "pip" in calls[0]
    assert run_install_cell("", importable=False, monkeypatch=monkeypatch) == []


def test_records_begin_with_the_install_cell_and_track_the_url(tmp_repo, monkeypatch):
    monkeypatch.setenv(book.REPO_URL_ENV, URL)
    out = book.execute("01_compsum", "smoke", {}, prepare_only=True,
                       output=tmp_repo / "build" / "01_compsum.ipynb", progress=False)
    shutil.copyfile(out, tmp_repo / "book" / "01_compsum.ipynb")  # staleness reads book/
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "lossbook-install" in code[0].metadata["tags"]
    assert "remove-cell" in code[0].metadata["tags"] and f"git+{URL}" in code[0].source
    assert "parameters" in code[1].metadata["tags"]
    assert nb.metadata["lossbook"]["repo_url"] == URL
    monkeypatch.setenv(book.REPO_URL_ENV, URL + "-fork")
    assert "repository URL changed" in book.staleness("01_compsum")


@pytest.mark.parametrize("chapter", book.chapters())
def test_every_figure_has_a_caption_a_name_and_alt_text(chapter):
    nb = jupytext.read(REPO / "notebooks" / f"{chapter}.py")
    names = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not re.search(r"\bfig = figures\.", cell.source):
            continue
        meta = cell.metadata.get("mystnb", {})
        caption, alt = meta.get("figure", {}).get("caption", ""), meta.get("image", {}).get("alt")
        assert len(caption) > 20 and alt and len(alt) > 20, cell.source[:80]
        assert not re.search(r"\.(png|svg)$", alt)
        names.append(meta["figure"]["name"])
    assert names and len(set(names)) == len(names)


def test_panel_grid_keeps_rows_legible():
    fig, axes = panel_grid(5, 3)
    assert len(axes) == 5 and len(fig.axes) == 5
    assert max(len({round(a.get_position().y0, 3) for a in axes}), 1) == 2
