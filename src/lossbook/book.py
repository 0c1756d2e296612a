"""From chapter source to published record: execute (jupytext → papermill), detect staleness,
write the reproduction-status page, build the HTML book.

A chapter `notebooks/NN_slug.py` executed at the `book` preset becomes `book/NN_slug.ipynb`
(outputs kept, injected-parameters cell hidden) plus `book/claims/NN_slug.json`. The notebook's
metadata `lossbook.inputs` records the hashes of its source, of the library code it imports
(its `lossbook` import closure, comments excluded) and of the lock file; a chapter is stale when
any of them, or its parameters, differ from now, or when its claims file is not the one written
with the notebook (`lossbook.claims_sha256`: an interrupted write).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lossbook import presets
from lossbook.cache import code_hash, import_closure, imported_modules
from lossbook.claims import KINDS, audited, markdown_table, score_line, stability, summarize
from lossbook.io import read_json, write_atomic, write_json
from lossbook.paths import build_dir, repo_root

LOCK_FILE = "requirements/lock.txt"
BOOK_PRESET = "book"
REPO_URL_ENV = "LOSSBOOK_REPO_URL"


def root() -> Path:
    return repo_root()


def book_config() -> dict:
    import yaml

    path = root() / "_config.yml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def repo_url() -> str:
    """The repository's URL: $LOSSBOOK_REPO_URL, else `repository.url` of _config.yml; '' if
    neither is set (then the book has no repository or launch buttons)."""
    url = os.environ.get(REPO_URL_ENV) or (book_config().get("repository") or {}).get("url")
    return (url or "").strip().rstrip("/")


def install_cell_source(url: str) -> str:
    """The first code cell of every record: installs lossbook where it is not importable (Colab,
    Binder); a no-op in a clone, where lossbook is installed."""
    install = (f'subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+{url}"], '
               'check=True)' if url else
               'print("lossbook is not installed: `pip install -e .` in a clone of its '
               'repository")')
    return ("# Outside a clone of the repository (Colab, Binder), install lossbook first.\n"
            "import importlib.util\nimport subprocess\nimport sys\n\n"
            f'if importlib.util.find_spec("lossbook") is None:\n    {install}')


def chapters() -> list[str]:
    return sorted(p.stem for p in (root() / "notebooks").glob("[0-9][0-9]_*.py"))


def source_path(chapter: str) -> Path:
    path = root() / "notebooks" / f"{chapter}.py"
    if not path.is_file():
        raise presets.ConfigError(f"unknown chapter {chapter!r}; valid chapters: "
                                  f"{', '.join(chapters())}")
    return path


def record_path(chapter: str) -> Path:
    return root() / "book" / f"{chapter}.ipynb"


def claims_record_path(chapter: str) -> Path:
    return root() / "book" / "claims" / f"{chapter}.json"


def audit_path(chapter: str) -> Path:
    return root() / "book" / "audit" / f"{chapter}.json"


def read_audit(chapter: str) -> dict | None:
    path = audit_path(chapter)
    return read_json(path) if path.is_file() else None


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def chapter_library_hash(chapter: str) -> str:
    """Hash of the library code the chapter uses: the `lossbook` modules its notebook and its
    chapter module import, transitively (a comment or an unrelated module does not count)."""
    source = source_path(chapter)
    tree = ast.parse(source.read_bytes(), filename=str(source))
    modules = sorted(m for m in imported_modules(tree, "") if m.startswith("lossbook"))
    return code_hash(import_closure(presets.CHAPTERS[chapter], *modules))


def input_hashes(chapter: str) -> dict[str, str]:
    return {"source": file_hash(source_path(chapter)), "library": chapter_library_hash(chapter),
            "lock": file_hash(root() / LOCK_FILE)}


def notebook_parameters(chapter: str) -> dict[str, Any]:
    """Names and default values of the chapter's `parameters` cell (literals only)."""
    import jupytext

    nb = jupytext.read(source_path(chapter))
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign)}
    raise ValueError(f"{chapter} has no cell tagged 'parameters'")


def split_parameters(chapter: str, preset: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate `params` (notebook parameters or config fields) before any compute and return
    the papermill parameters: config fields are moved into `overrides`."""
    defaults = notebook_parameters(chapter)
    module = presets.chapter_module(chapter)
    fields = presets.field_types(module.Config)
    if "preset" in params:
        raise presets.ConfigError(f"the preset is chosen with --preset, not as a parameter "
                                  f"(got preset={params['preset']!r})")
    overrides = params.pop("overrides", None) or {}
    if isinstance(overrides, str):
        overrides = presets.parse_cli_value(overrides)
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise presets.ConfigError(f"overrides must be a dict of config fields, got {overrides!r}")
    overrides = dict(overrides)
    top: dict[str, Any] = {"preset": preset}
    for name, value in params.items():
        if name in defaults:
            top[name] = value
        elif name in fields:
            overrides[name] = value
        else:
            raise presets.ConfigError(
                f"unknown parameter {name!r} for chapter {chapter}; notebook parameters: "
                f"{', '.join(defaults)}; config parameters: {', '.join(fields)}")
    if "seed" in top:
        presets.check_seed(top["seed"])
    presets.resolve(chapter, preset, overrides)  # raises on a bad preset/field/type/value
    if "device" in top:
        from lossbook.session import resolve_device

        resolve_device(top["device"])  # before the kernel starts: cuda/mps usable here?
    if overrides:
        top["overrides"] = overrides
    return top


def output_name(chapter: str, params: dict[str, Any]) -> str:
    extras = [f"{k}{v}" for k, v in sorted(params.items()) if k not in ("preset", "overrides")]
    if params.get("overrides"):
        from lossbook.io import stable_hash

        extras.append("o" + stable_hash(params["overrides"])[:8])
    return "-".join([chapter, *extras])


def is_published(path: Path) -> bool:
    """Whether `path` lies in the published record (book/)."""
    return Path(path).resolve().is_relative_to((root() / "book").resolve())


def execute(chapter: str, preset: str, params: dict[str, Any] | None = None, *,
            output: Path | None = None, results: Path | None = None,
            prepare_only: bool = False, progress: bool = True, record: bool = False) -> Path:
    """Execute one chapter with papermill; returns the output notebook's path.

    Only `record=True` (the `book` preset, default parameters) may write into book/. The claims
    JSON and the notebook are committed as a pair: each written to a private temporary file,
    then renamed (claims first) under a lock; the notebook's metadata holds the claims' hash.
    """
    import jupytext
    import nbformat
    import papermill

    parameters = split_parameters(chapter, preset, dict(params or {}))
    name = output_name(chapter, parameters)
    output = Path(output or build_dir() / preset / f"{name}.ipynb")
    results = Path(results or output.with_suffix(".claims.json"))
    if record:
        if parameters != {"preset": BOOK_PRESET} or prepare_only:
            raise presets.ConfigError("the published record is the book preset with default "
                                      f"parameters, executed; got {parameters}"
                                      + (" with prepare-only" if prepare_only else ""))
    elif is_published(output) or is_published(results):
        raise presets.ConfigError(f"{output if is_published(output) else results} is in the "
                                  "published record (book/): only `lossbook run --record` or "
                                  "`lossbook build` write there")
    output.parent.mkdir(parents=True, exist_ok=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(source_path(chapter))
    url = repo_url()
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first_code, nbformat.v4.new_code_cell(
        install_cell_source(url), metadata={"tags": ["remove-cell", "lossbook-install"]}))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    token = f"{os.getpid()}.{secrets.token_hex(4)}"  # concurrent runs never share a file
    tmp = output.with_name(f".running.{output.stem}.{token}.ipynb")
    tmp_results = results.with_name(f".running.{results.name}.{token}")
    os.environ["LOSSBOOK_RESULTS"] = str(tmp_results)
    os.environ["LOSSBOOK_PARENT_PID"] = str(os.getpid())  # the kernel exits when we die
    # prefer this environment's kernel over a user-wide `python3` kernelspec
    venv_kernels = str(Path(sys.prefix) / "share" / "jupyter")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [venv_kernels, *filter(None, [os.environ.get("JUPYTER_PATH")])])
    os.environ.setdefault("LOSSBOOK_ROOT", str(root()))
    started = time.time()
    failed = failed_path(output, preset)
    try:
        papermill.execute_notebook(nb, str(tmp), parameters=parameters, kernel_name="python3",
                                   prepare_only=prepare_only, progress_bar=progress,
                                   cwd=str(root() / "notebooks"))
        executed = nbformat.read(tmp, as_version=4)
    except BaseException:
        if tmp.is_file():  # keep the partial notebook, with the traceback, for `lossbook list`
            failed.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(failed)
        tmp_results.unlink(missing_ok=True)
        raise
    finally:
        os.environ.pop("LOSSBOOK_RESULTS", None)
        os.environ.pop("LOSSBOOK_PARENT_PID", None)
        tmp.unlink(missing_ok=True)
    for cell in executed.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.metadata.setdefault("tags", []).append("remove-cell")
        if cell.cell_type == "code":
            cell.outputs = settle_progress_bars(cell.outputs)
    claims = tmp_results.read_bytes() if tmp_results.is_file() and not prepare_only else None
    tmp_results.unlink(missing_ok=True)
    executed.metadata["lossbook"] = {
        "chapter": chapter, "preset": preset, "parameters": parameters,
        "inputs": input_hashes(chapter), "prepare_only": prepare_only,
        "executed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "provenance": json.loads(claims)["provenance"] if claims else {},
        "claims_sha256": hashlib.sha256(claims).hexdigest() if claims else None,
        "repo_url": url,
    }
    with pair_lock(output):  # two runs of one output: one whole pair wins, never a mix
        if claims:
            write_atomic(results, claims)
        write_atomic(output, nbformat.writes(executed))
        failed.unlink(missing_ok=True)
    return output


def failed_path(output: Path, preset: str) -> Path:
    """Where a failed run's partial notebook goes: beside the output, or build/<preset>/ for
    the published record (book/ holds only complete records)."""
    name = f"{output.stem}.failed.ipynb"
    return build_dir() / preset / name if is_published(output) else output.with_name(name)


@contextlib.contextmanager
def pair_lock(output: Path):
    lock = output.with_name(f".{output.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_stderr(output) -> bool:
    return output.get("output_type") == "stream" and output.get("name") == "stderr"


def _settle(text: str) -> str:
    kept: list[str] = []
    bars: dict[str, int] = {}
    for line in (part.rsplit("\r", 1)[-1] for part in text.split("\n")):
        if not line.strip():
            continue
        key = line.split(":", 1)[0] if "%|" in line else None
        if key is not None and key in bars:
            kept[bars[key]] = line
            continue
        if key is not None:
            bars[key] = len(kept)
        kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def settle_progress_bars(outputs: list) -> list:
    """Keep what a terminal would show at the end: the last state of each progress bar.

    tqdm redraws its bar with carriage returns, and a notebook stores every redraw.
    """
    merged: list = []
    for output in outputs:
        if _is_stderr(output) and merged and _is_stderr(merged[-1]):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    for output in filter(_is_stderr, merged):
        output["text"] = _settle(output["text"])
    return [o for o in merged if not _is_stderr(o) or o["text"]]


def recorded_metadata(path: Path) -> dict | None:
    """The notebook's `lossbook` metadata; None when absent; {"unreadable": why} when the file
    cannot be read as a notebook (it is then re-executed, never a crash)."""
    import nbformat

    if not path.is_file():
        return None
    try:
        meta = nbformat.read(path, as_version=4).metadata.get("lossbook")
    except Exception as err:  # noqa: BLE001 — any unreadable notebook is reported, not fatal
        return {"unreadable": f"{path}: {type(err).__name__}: {err}"[:200]}
    return meta if isinstance(meta, dict) else {"unreadable": f"{path}: no lossbook metadata"}


def staleness(chapter: str) -> list[str]:
    """Why the committed `book` record of `chapter` is out of date ([] when it is current)."""
    meta = recorded_metadata(record_path(chapter))
    if meta is None:
        return ["never executed"]
    if "unreadable" in meta:
        return [f"record unreadable ({meta['unreadable']})"]
    now, then = input_hashes(chapter), meta.get("inputs", {})
    labels = {"source": "chapter source changed", "library": "library changed",
              "lock": "locked dependencies changed"}
    reasons = [labels[k] for k in labels if then.get(k) != now[k]]
    if meta.get("parameters") != {"preset": BOOK_PRESET}:
        reasons.append("executed with other parameters")
    if "claims_sha256" not in meta:
        reasons.append("record has no claims hash (written before pairing)")
    elif meta["claims_sha256"] != file_hash(claims_record_path(chapter)):
        reasons.append("claims file does not match the notebook (interrupted write?)")
    if meta.get("repo_url", "") != repo_url():  # its install cell names the repository
        reasons.append("repository URL changed")
    return reasons


def execute_stale(force: bool = False) -> dict[str, str]:
    """Execute every stale chapter, going on past failures; returns {chapter: error} of those
    that failed (their partial notebooks are in build/book/*.failed.ipynb)."""
    failures = {}
    for chapter in chapters():
        reasons = ["forced"] if force else staleness(chapter)
        if not reasons:
            print(f"[lossbook] {chapter}: up to date", flush=True)
            continue
        print(f"[lossbook] executing {chapter} at preset {BOOK_PRESET}: {'; '.join(reasons)}",
              flush=True)
        try:
            path = execute(chapter, BOOK_PRESET, {}, output=record_path(chapter),
                           results=claims_record_path(chapter), record=True)
        except Exception as err:  # noqa: BLE001 — the other chapters still run
            failures[chapter] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}"
            print(f"[lossbook] {chapter} FAILED ({failures[chapter]}); partial notebook: "
                  f"{failed_path(record_path(chapter), BOOK_PRESET)}", flush=True)
            continue
        print(f"[lossbook] {chapter}: {recorded_metadata(path)['duration_s']} s", flush=True)
    return failures


def chapter_title(chapter: str) -> str:
    for line in source_path(chapter).read_text().splitlines():
        if line.startswith("# # "):
            return line[4:].strip()
    return chapter


def record_claims(chapter: str, record: dict) -> list[dict]:
    """The record's claims with the audit rule applied and each claim's audit stability."""
    audit = (read_audit(chapter) or {}).get("claims", {})
    out = []
    for claim in record["claims"]:
        raw = claim.get("protocol_verdict", claim["verdict"])
        entry = audit.get(claim["id"])
        verdict, _ = audited(raw, entry)
        if claim["verdict"] == "inconclusive":  # already downgraded when it was executed
            verdict = "inconclusive"
        frac = stability(raw, entry.get("verdicts", [])) if entry else None
        out.append({**claim, "kind": claim.get("kind", "paper"), "verdict": verdict,
                    "stability": frac, "audit_runs": len(entry["verdicts"]) if entry else 0})
    return out


def commit_cell(commit: str) -> str:
    """The hash as code, the dirty paths as plain text (a long code span cannot wrap)."""
    head, _, dirty = commit.partition("+")
    return f"`{head}`" + (f" +{dirty.replace(',', ', ')}" if dirty else "")


def status_page() -> str:
    """Markdown of the reproduction-status page, built from the committed records."""
    lines = ["# Reproduction status", "",
             "Every chapter's claims and verdicts at the `book` preset, as recorded by its last "
             "execution. The reproduction score counts only the paper's empirical claims "
             "(kind `paper`); derivation and implementation checks (`identity`) and claims that "
             "are not the paper's (`context`) are listed apart. A seeded claim is *held* when "
             "the 95 % t-interval of its seed-paired effect lies beyond the threshold stated in "
             "the chapter, *not held* when it lies on the other side, and *inconclusive* "
             "otherwise. **Stability** is the fraction of fresh seed-sets giving the book's "
             "verdict in the last `lossbook audit`; a held / not held verdict that changed "
             "there is shown as inconclusive. A chapter is **stale** when its source, the "
             "library or the locked dependencies changed since its execution; `make book` "
             "re-executes exactly those.", ""]
    rows, details, every = [], [], []
    for chapter in chapters():
        claims_file = claims_record_path(chapter)
        try:
            record = read_json(claims_file) if claims_file.is_file() else None
            record["provenance"]["preset"], record["claims"]  # noqa: B018 — shape check
        except Exception:  # noqa: BLE001 — a broken claims file shows as a missing record
            record = None
        reasons = staleness(chapter)
        state = "current" if not reasons else "stale: " + "; ".join(reasons)
        if record is None:
            rows.append([f"[{chapter}]({chapter}.ipynb)", *["–"] * 4, state])
            continue
        claims = record_claims(chapter, record)
        every += claims
        prov, counts = record["provenance"], summarize(claims)
        others = ", ".join(f"{sum(c['kind'] == k for c in claims)} {k}" for k in KINDS[1:])
        audit = read_audit(chapter)
        audit_cell = f"{len(audit['seed_sets'])} seed-sets" if audit else "none"
        runs = prov.get("runs", {})
        wall = f"{prov['wall_time_s']:.0f} s"
        if runs.get("cached"):
            wall += f" ({runs['cached']} of {runs['total']} runs from the cache)"
        paper = " / ".join(str(counts[v]) for v in ("held", "not held", "inconclusive",
                                                    "not tested"))
        rows.append([f"[{chapter_title(chapter)}]({chapter}.ipynb)", paper, others, audit_cell,
                     wall, commit_cell(prov["commit"]) + f" — {state}"])
        details += [f"## {chapter_title(chapter)}", "",
                    markdown_table(["Claim", "Kind", "Verdict", "Stability", "Ours"],
                                   [[c["statement"], c["kind"], c["verdict"],
                                     "–" if c["stability"] is None
                                     else f"{c['stability']:.0%} of {c['audit_runs']}",
                                     c["ours"]] for c in claims]), ""]
    # one column for the four counts: ten columns overflow the page at 1280 px (make site)
    lines.append(markdown_table(["Chapter", "Paper claims: held / not held / inconclusive / "
                                 "not tested", "Not counted", "Audit", "Wall time (book preset)",
                                 "Commit / state"], rows))
    lines += ["", score_line(every)]
    return "\n".join([*lines, "", *details])


AUDIT_SEED_STRIDE = 1000  # seed-set i starts at i × 1000: disjoint from the book's seeds 0 … n−1


def audit(chapter: str, seed_sets: int = 3, preset: str = BOOK_PRESET) -> Path:
    """Re-execute `chapter` with `seed_sets` fresh seed-sets and write, per claim, the verdicts
    and the fraction that match the book's (`book/audit/<chapter>.json`; other presets compare
    with a seed-0 run at that preset and write under build/audit/)."""
    source_path(chapter)
    presets.resolve(chapter, preset)
    if isinstance(seed_sets, bool) or not isinstance(seed_sets, int) or seed_sets < 1:
        raise presets.ConfigError(f"--seeds must be a positive int, got {seed_sets!r}")
    work = build_dir() / "audit" / preset
    if preset == BOOK_PRESET:
        baseline_file, out = claims_record_path(chapter), audit_path(chapter)
        if not baseline_file.is_file():
            raise presets.ConfigError(f"{chapter} has no book record to audit; run `make book`")
    else:
        baseline_nb, out = work / f"{chapter}-seed0.ipynb", work / f"{chapter}.json"
        baseline_file = baseline_nb.with_suffix(".claims.json")
    os.environ["LOSSBOOK_AUDIT"] = "1"  # fresh runs report the protocol's verdicts
    try:
        if preset != BOOK_PRESET:
            execute(chapter, preset, {"seed": 0}, output=baseline_nb)
        seeds = [AUDIT_SEED_STRIDE * (i + 1) for i in range(seed_sets)]
        fresh = []
        for seed in seeds:
            print(f"[lossbook] audit {chapter}: seed-set starting at {seed}", flush=True)
            nb = execute(chapter, preset, {"seed": seed}, output=work / f"{chapter}-seed{seed}"
                         ".ipynb")
            fresh.append({c["id"]: c.get("protocol_verdict", c["verdict"])
                          for c in read_json(nb.with_suffix(".claims.json"))["claims"]})
    finally:
        os.environ.pop("LOSSBOOK_AUDIT", None)
    baseline = read_json(baseline_file)
    result = {"chapter": chapter, "preset": preset, "seed_sets": seeds,
              "book_commit": baseline["provenance"]["commit"],
              "executed_at": datetime.now(UTC).isoformat(timespec="seconds"), "claims": {}}
    for claim in baseline["claims"]:
        book_verdict = claim.get("protocol_verdict", claim["verdict"])
        verdicts = [run.get(claim["id"], "not tested") for run in fresh]
        result["claims"][claim["id"]] = {"book": book_verdict, "verdicts": verdicts,
                                         "stability": stability(book_verdict, verdicts)}
    write_json(out, result)
    return out


def audit_report(path: Path) -> str:
    result = read_json(path)
    rows = [[cid, e["book"], ", ".join(e["verdicts"]), f"{e['stability']:.0%}"]
            for cid, e in result["claims"].items()]
    return markdown_table(["claim", "book verdict", "fresh seed-sets", "stability"], rows)


def write_status_page() -> Path:
    path = root() / "book" / "status.md"
    text = status_page()
    if not path.is_file() or path.read_text() != text:
        write_atomic(path, text)
    return path


def site_config() -> dict:
    """_config.yml with the repository URL applied: repository and launch buttons (Binder,
    Colab) and the intro's install line when it is set, no buttons when it is not."""
    import copy

    config = copy.deepcopy(book_config())
    url = repo_url()
    if url:
        config.setdefault("repository", {})["url"] = url
        config.setdefault("html", {})["use_repository_button"] = True
        config.setdefault("launch_buttons", {}).update(
            binderhub_url="https://mybinder.org", colab_url="https://colab.research.google.com")
        subs = config.setdefault("parse", {}).setdefault("myst_substitutions", {})
        subs["install"] = f"`pip install git+{url}`"
    return config


def build_html(strict: bool = False) -> Path:
    import yaml

    config = build_dir() / "_config.yml"  # _config.yml with the repository URL applied
    config.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(config, "# generated by `lossbook build` from _config.yml\n"
                 + yaml.safe_dump(site_config(), sort_keys=False, allow_unicode=True))
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root()), "--toc",
           str(root() / "book" / "_toc.yml"), "--config", str(config)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)
    return root() / "_build" / "html" / "index.html"


class BuildError(RuntimeError):
    """Some chapters failed; the others, the status page and the HTML were still built."""


def build(force: bool = False, execute: bool = True, strict: bool = False) -> Path:
    failures = execute_stale(force) if execute else {}
    write_status_page()
    index = build_html(strict)
    print(f"[lossbook] book built: {index}")
    if failures:
        raise BuildError("chapters failed: " + "; ".join(f"{c} ({e})" for c, e in
                                                         failures.items()))
    return index
