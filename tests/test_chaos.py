"""Faults and hostile input, each reproduced for real (corrupt files, kill -9, concurrent runs,
a forged --record): the outcome must be a clear error naming the file or value (before any
compute), or a repaired cache with a warning, and nothing lost. `make chaos` prints the table."""

import gzip
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

import lossbook
from lossbook import audio, book, cache, cli, data, mnist, vision
from lossbook.io import CorruptCache
from lossbook.paths import cache_dir
from lossbook.presets import ConfigError

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
pytestmark = pytest.mark.chaos


@pytest.fixture
def tmp_repo(tmp_path, monkeypatch):
    """A checkout with chapters 01 and 05 (sources and fake records) and a lock file."""
    for folder in ("notebooks", "book/claims", "requirements"):
        (tmp_path / folder).mkdir(parents=True)
    for chapter in ("01_compsum", "05_icl_gd"):
        shutil.copy(REPO / "notebooks" / f"{chapter}.py", tmp_path / "notebooks")
    (tmp_path / "requirements" / "lock.txt").write_text("torch==2.13.0\n")
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("LOSSBOOK_ROOT", str(tmp_path))
    return tmp_path


# --- 1. corrupt caches repair themselves ----------------------------------------------------

def square(spec: dict) -> dict:
    return {"y": spec["x"] ** 2}


CORRUPTIONS = {
    "truncated": lambda p: p.write_text(p.read_text()[:10]),
    "garbage": lambda p: p.write_bytes(os.urandom(64)),
    "wrong-shape JSON": lambda p: p.write_text('{"result": [1, 2]}'),
    "other run's record": lambda p: p.write_text('{"spec": {"x": 9}, "result": {"y": 81}}'),
    "directory": lambda p: (p.unlink(), p.mkdir(), (p / "x").write_text("x")),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_run_cache_entry_is_repaired(tmp_path, corruption, observe):
    runs = cache.RunCache(tmp_path / "runs")
    specs = [{"x": 2}, {"x": 3}]
    cache.sweep(square, specs, cache=runs, progress=False)
    path = runs.path(square, specs[0])
    CORRUPTIONS[corruption](path)
    with pytest.warns(CorruptCache, match=path.name) as caught:
        results = cache.sweep(square, specs, cache=runs, progress=False)
    assert [r["y"] for r in results] == [4, 9]
    assert json.loads(path.read_text())["result"] == {"y": 4}  # rewritten
    message = str(caught[0].message)
    observe(f"warning: …{path.name[:14]}… ({message.split('(')[1].split(':')[0]}); recomputed")


def test_corrupt_mnist1d_cache_is_regenerated(observe):
    first = data.mnist1d(num_samples=200)
    [path] = list((cache_dir() / "data").glob("mnist1d-*.npz"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(CorruptCache, match=path.name):
        again = data.mnist1d(num_samples=200)
    assert torch.equal(first.x_train, again.x_train)
    observe("warning names the .npz; regenerated identically")


def fabricated_mnist(root: Path) -> dict:
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 12), ("test", 6)):
        files[f"{split}_images"] = (f"{split}-images.gz", None)
        files[f"{split}_labels"] = (f"{split}-labels.gz", None)
        mnist.write_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                        root / f"{split}-images.gz")
        mnist.write_idx(rng.integers(0, 10, n).astype(np.uint8), root / f"{split}-labels.gz")
    return files


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04truncated zip"])
def test_corrupt_pt_cache_is_reparsed_without_pickle_advice(tmp_path, content, observe):
    files = fabricated_mnist(tmp_path)
    first = mnist.load_mnist(tmp_path, files=files)
    (tmp_path / "mnist.pt").write_bytes(content)
    with pytest.warns(CorruptCache, match="mnist.pt") as caught:
        again = mnist.load_mnist(tmp_path, files=files)
    assert torch.equal(first["x_train"], again["x_train"])
    assert "weights_only=False" not in str(caught[0].message)
    torch.save({"x_train": torch.zeros(1)}, tmp_path / "svhn.pt")  # wrong keys
    with pytest.raises(FileNotFoundError), pytest.warns(CorruptCache, match="svhn.pt"):
        vision.load_vision("svhn", tmp_path, download=False)
    observe("warning names the .pt, no weights_only=False advice, reparsed")


# --- 2. no orphans after kill -9 / SIGTERM ----------------------------------------------------

SWEEP_SCRIPT = textwrap.dedent("""
    import sys, time
    from lossbook import cache

    def slow(spec):
        time.sleep(120)
        return {}

    if __name__ == "__main__":
        print("started", flush=True)
        cache.sweep(slow, [{"i": i} for i in range(4)], workers=2, progress=False)
""")


def descendants(pid: int) -> set[int]:
    """Live (non-zombie) descendants of `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def at_least(found: set[int], n: int) -> set[int] | None:
    return found if len(found) >= n else None


def kill_ours(pids) -> None:
    """SIGKILL those of `pids` that are still this environment's Python processes."""
    for pid in pids:
        try:
            if alive(pid) and sys.prefix.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float, step: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_sweep_leaves_no_workers(tmp_path, sig, observe):
    script = tmp_path / "sweep_script.py"
    script.write_text(SWEEP_SCRIPT)
    parent = subprocess.Popen([PYTHON, str(script)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    procs: set[int] = set()
    try:
        assert parent.stdout.readline().strip() == "started"
        # two workers and the resource tracker
        procs = wait_for(lambda: at_least(descendants(parent.pid), 3), 60) or set()
        assert procs, f"workers never started: {descendants(parent.pid)}"
        os.kill(parent.pid, sig)  # the parent only, not its process group
        parent.wait(30)
        survivors = wait_for(lambda: not [p for p in procs if alive(p)], 15) or \
            [p for p in procs if alive(p)]
        assert survivors is True, f"orphans left: {survivors}"
    finally:  # never leave our own processes behind, even when the test fails
        kill_ours(descendants(parent.pid) | {parent.pid} | procs)
    observe(f"{len(procs)} child processes (2 workers + resource tracker) all exited")


@pytest.mark.parametrize("kill", ["kill -9 of the process group", "SIGTERM to the run"])
def test_killed_lossbook_run_leaves_no_kernel_or_workers(tmp_path, kill, observe):
    env = {**os.environ, "LOSSBOOK_WORKERS": "2"}
    run = subprocess.Popen([str(Path(PYTHON).with_name("lossbook")), "run", "05_icl_gd",
                            "--preset", "smoke", "-o", str(tmp_path / "out.ipynb"),
                            "-p", "steps=100000", "-p", "deep_steps=100000"],
                           env=env, cwd=REPO, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: set[int] = set()
    try:
        # the kernel (its own session, as jupyter starts it) and its two workers + tracker
        procs = wait_for(lambda: at_least(descendants(run.pid), 4), 120) or set()
        assert procs, f"the sweep never started: {descendants(run.pid)}"
        time.sleep(1)
        procs = descendants(run.pid)
        if kill.startswith("kill -9"):
            os.killpg(run.pid, signal.SIGKILL)  # the whole process group of `lossbook run`
        else:
            os.kill(run.pid, signal.SIGTERM)
        run.wait(60)
        survivors = wait_for(lambda: not [p for p in procs if alive(p)], 20) or \
            [p for p in procs if alive(p)]
        assert survivors is True, f"orphans left: {survivors}"
    finally:  # never leave our own processes behind, even when the test fails
        kill_ours(descendants(run.pid) | procs)
    observe(f"{len(procs)} processes (kernel, workers, tracker) all exited")


# --- 3. the published record is protected -----------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--record", "-p", "preset=smoke"], "takes no -p"),
    (["--record", "-p", "seed=3"], "takes no -p"),
    (["-o", "book/05_icl_gd.ipynb", "--prepare-only"], "published record"),
    (["-o", "book/05_icl_gd.ipynb"], "published record"),
    (["-p", "preset=smoke"], "chosen with --preset"),
])
def test_forged_record_is_refused(tmp_repo, capsys, argv, message, observe, monkeypatch):
    monkeypatch.chdir(tmp_repo)
    record = tmp_repo / "book" / "05_icl_gd.ipynb"
    record.write_text("the published record\n")
    assert cli.main(["run", "05_icl_gd", "--preset", "book", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and record.read_text() == "the published record\n"
    assert [p.name for p in (tmp_repo / "book").iterdir()] == ["claims", "05_icl_gd.ipynb"] or \
        sorted(p.name for p in (tmp_repo / "book").iterdir()) == ["05_icl_gd.ipynb", "claims"]
    observe(f"exit 2, record untouched: {err.strip().removeprefix('lossbook: error: ')[:60]}…")


# --- 4. the run-cache key follows the environment ---------------------------------------------

def test_dependency_change_reruns(tmp_repo, observe):
    runs = cache.RunCache(tmp_repo / "runs")
    before = runs.path(square, {"x": 1})
    (tmp_repo / "requirements" / "lock.txt").write_text("torch==2.14.0\n")
    cache.environment_hash.cache_clear()
    try:
        assert runs.path(square, {"x": 1}) != before
    finally:
        cache.environment_hash.cache_clear()
    observe("lock file change -> new run key (re-run, not reused)")


# --- 5. values are validated before any compute -----------------------------------------------

BAD_VALUES = [
    ({"epochs": 0}, "epochs of 01_compsum must be > 0"),
    ({"epochs": -3}, "epochs of 01_compsum must be > 0"),
    ({"seeds": 0}, "seeds of 01_compsum must be > 0"),
    ({"tasks": ["bogus"]}, "tasks of 01_compsum must be one of mnist1d"),
    ({"tasks": []}, "tasks of 01_compsum must not be empty"),
    ({"lr": -1}, "lr of 01_compsum must be > 0"),
    ({"lr": math.nan}, "lr of 01_compsum must be a finite number"),
    ({"lr": math.inf}, "finite number"),
    ({"batch_size": 0}, "batch_size of 01_compsum must be > 0"),
    ({"noise_rate": 1.5}, r"noise_rate of 01_compsum must be in \[0, 1\]"),
]


@pytest.mark.parametrize("overrides, message", BAD_VALUES,
                         ids=[json.dumps(o) for o, _ in BAD_VALUES])
def test_bad_values_fail_before_compute(overrides, message, monkeypatch, observe):
    import lossbook.session as session

    monkeypatch.setattr(session, "seed_everything", lambda s: pytest.fail("computed"))
    started = time.time()
    with pytest.raises(ConfigError, match=message) as err:
        lossbook.start("01_compsum", preset="smoke", overrides=overrides)
    with pytest.raises(ConfigError, match=message):
        book.split_parameters("01_compsum", "smoke", dict(overrides))
    observe(f"ConfigError in {time.time() - started:.2f} s: {str(err.value)[:55]}")


@pytest.mark.parametrize("params, message", [
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"device": "cuda"}, "CUDA is not available"),
    ({"device": "cuda:x"}, "unknown device"),
    ({"device": "mps"}, "MPS"),
    ({"seed": 2**63}, "seed must be in 0"),
    ({"seed": -1}, "seed must be in 0"),
    ({"overrides": "[1, 2]"}, "overrides must be a dict"),
    ({"overrides": "{epochs: 3"}, "overrides must be a dict"),
])
def test_bad_notebook_parameters_fail_in_the_cli(params, message, observe):
    if params.get("device", "").startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if params.get("device") == "mps" and sys.platform == "darwin":
        pytest.skip("MPS may be available here")
    with pytest.raises(ConfigError, match=message) as err:
        book.split_parameters("01_compsum", "smoke", dict(params))
    observe(f"ConfigError before the kernel starts: {str(err.value)[:55]}")


def test_config_field_as_papermill_parameter_is_refused(observe):
    namespace = {"preset": "smoke", "seed": 0, "epochs": 3}  # papermill -p epochs 3
    with pytest.raises(ConfigError, match="epochs: config field") as err:
        exec("import lossbook\nlossbook.start('01_compsum', preset=preset, seed=seed)",
             namespace)
    observe(str(err.value)[:70])


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_bad_worker_count_is_refused(monkeypatch, value, observe):
    monkeypatch.setenv("LOSSBOOK_WORKERS", value)
    with pytest.raises(ConfigError, match="LOSSBOOK_WORKERS"):
        lossbook.start("01_compsum", preset="smoke")
    observe(f"ConfigError for LOSSBOOK_WORKERS={value}")


# --- 6. the build goes on past a failing chapter ----------------------------------------------

def test_build_keeps_going_and_failed_notebooks_are_listed(tmp_repo, monkeypatch, capsys,
                                                           observe):
    ran = []

    def fake_execute(chapter, preset, params, **kw):
        ran.append(chapter)
        if chapter == "01_compsum":
            failed = book.failed_path(kw["output"], preset)
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text("{}")
            raise RuntimeError("boom")
        return kw["output"]

    monkeypatch.setattr(book, "execute", fake_execute)
    monkeypatch.setattr(book, "recorded_metadata", lambda p: {"duration_s": 1})
    monkeypatch.setattr(book, "build_html", lambda strict: tmp_repo / "index.html")
    with pytest.raises(book.BuildError, match="01_compsum"):
        book.build()
    assert ran == ["01_compsum", "05_icl_gd"] and (tmp_repo / "book" / "status.md").is_file()
    monkeypatch.undo()
    monkeypatch.setenv("LOSSBOOK_ROOT", str(tmp_repo))
    assert cli.main(["list"]) == 0
    assert "01_compsum.failed.ipynb" in capsys.readouterr().out
    observe("later chapters, status page and HTML built; exit 1; list shows the failure")


def test_failed_notebook_is_removed_by_the_next_success(tmp_repo, observe):
    source = tmp_repo / "notebooks" / "01_compsum.py"
    text = source.read_text()
    source.write_text(text.replace("ch = lossbook.start(", "raise RuntimeError('boom')\n"
                                   "ch = lossbook.start(", 1))
    out = tmp_repo / "out" / "ch.ipynb"
    with pytest.raises(Exception, match="boom"):
        book.execute("01_compsum", "smoke", {}, output=out, progress=False)
    assert out.with_name("ch.failed.ipynb").is_file()
    source.write_text(text)  # the fix
    book.execute("01_compsum", "smoke", {}, output=out, prepare_only=True, progress=False)
    assert not out.with_name("ch.failed.ipynb").exists() and out.is_file()
    observe("the .failed.ipynb is gone after the fixed run")


# --- 7. concurrent runs of one chapter/preset -------------------------------------------------

TINY_05 = [f"-p={p}" for p in ("steps=5", "deep_steps=5", "code_steps=5", "eval_every=5",
                                "eval_tasks=100", "line_search_tasks=256", "ood_tasks=50",
                                "batch_size=32", "deep_batch_size=32")]


def test_two_concurrent_runs_write_whole_notebooks(tmp_path, observe):
    out = tmp_path / "05.ipynb"
    cmd = [str(Path(PYTHON).with_name("lossbook")), "run", "05_icl_gd", "--preset", "smoke",
           "-o", str(out), *TINY_05]
    env = {**os.environ, "LOSSBOOK_WORKERS": "1"}
    runs = [subprocess.Popen([*cmd, "-p", f"seed={s}"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for s in (1, 2)]
    outputs = [r.communicate(timeout=600)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    nb = nbformat.read(out, as_version=4)
    meta = nb.metadata["lossbook"]
    seed = meta["parameters"]["seed"]
    claims = out.with_suffix(".claims.json")
    assert meta["claims_sha256"] == book.file_hash(claims)  # the pair is one run's
    assert json.loads(claims.read_text())["provenance"]["seed"] == seed
    assert not [c for c in nb.cells if c.cell_type == "code" and c.execution_count is None
                and c.source.strip() and "injected" not in str(c.metadata)]
    assert not list(tmp_path.glob(".running.*"))
    observe(f"both exit 0; the notebook and claims are one whole run (seed {seed})")


# --- 8. a kill between the claims and the notebook --------------------------------------------

def fake_papermill(monkeypatch, seed):
    import papermill

    def execute_notebook(nb, path, parameters, **kw):
        Path(os.environ["LOSSBOOK_RESULTS"]).write_text(json.dumps(
            {"provenance": {"seed": seed}, "claims": []}))
        nbformat.write(nbformat.v4.new_notebook(), path)

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)


def test_torn_record_pair_is_detected(tmp_repo, monkeypatch, observe):
    fake_papermill(monkeypatch, 0)
    book.execute("05_icl_gd", "book", {}, output=book.record_path("05_icl_gd"),
                 results=book.claims_record_path("05_icl_gd"), record=True)
    assert book.staleness("05_icl_gd") == []
    fake_papermill(monkeypatch, 1)
    real_write = book.write_atomic

    def killed_before_notebook(path, data):
        if Path(path).suffix == ".ipynb":
            raise KeyboardInterrupt("killed")  # as if the process died here
        real_write(path, data)

    monkeypatch.setattr(book, "write_atomic", killed_before_notebook)
    with pytest.raises(KeyboardInterrupt):
        book.execute("05_icl_gd", "book", {}, output=book.record_path("05_icl_gd"),
                     results=book.claims_record_path("05_icl_gd"), record=True)
    reasons = book.staleness("05_icl_gd")
    assert any("claims file does not match" in r for r in reasons)
    observe(f"stale: {reasons[0]}")


# --- 9. loaders name the file and refuse bad content ------------------------------------------

def wav(path: Path, rate=16000, n=1600) -> Path:
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, (np.arange(n) % 100).astype(np.int16))
    return path


def truncated_wav(tmp):
    path = wav(tmp / "t.wav")
    path.write_bytes(path.read_bytes()[:-1000])
    return lambda: audio.read_wav(path), "t.wav"


def wrong_rate_wav(tmp):
    path = wav(tmp / "r.wav", rate=8000)
    return lambda: audio.read_wav(path), "r.wav: sample rate 8000 Hz, expected 16000"


def truncated_tar(tmp):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        payload = os.urandom(3073 * 20)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    path = tmp / "c.tar.gz"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return lambda: vision.parse_cifar_binary(path, "cifar10", "test"), "c.tar.gz"


def unknown_mat(tmp):
    path = tmp / "svhn.mat"
    path.write_bytes(b"MATLAB 7.3 MAT-file" + os.urandom(200))
    return lambda: vision.parse_svhn_mat(path), "svhn.mat"


def svhn(tmp, y):
    from scipy.io import savemat

    path = tmp / "s.mat"
    savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": y})
    return lambda: vision.parse_svhn_mat(path), "s.mat"


def trials_file(tmp, text):
    path = tmp / "trials"
    path.write_text(text)
    return lambda: audio.read_trials(path), "trials:1"


def train_list_escaping(tmp):
    (tmp / "voxceleb1_train").write_text("id1 ../../etc/passwd\n")
    return lambda: audio.train_list(tmp), "escapes the data root"


def idx(tmp, images, labels):
    files = fabricated_mnist(tmp)
    mnist.write_idx(images, tmp / "train-images.gz")
    mnist.write_idx(labels, tmp / "train-labels.gz")
    return lambda: mnist.load_mnist(tmp, files=files), "train-images.gz"


def float_idx_labels(tmp):
    files = fabricated_mnist(tmp)
    raw = bytes([0, 0, 0x0D, 1]) + np.array([12], ">u4").tobytes() + \
        np.full(12, 1.5, ">f4").tobytes()
    (tmp / "train-labels.gz").write_bytes(gzip.compress(raw))
    return lambda: mnist.load_mnist(tmp, files=files), "labels must be integers"


def truncated_idx(tmp):
    files = fabricated_mnist(tmp)
    path = tmp / "test-labels.gz"
    path.write_bytes(path.read_bytes()[:-5])
    return lambda: mnist.load_mnist(tmp, files=files), "test-labels.gz"


LOADER_FAULTS = {
    "truncated WAV data chunk": truncated_wav,
    "WAV at the wrong sample rate": wrong_rate_wav,
    "truncated CIFAR tar": truncated_tar,
    "unknown .mat type": unknown_mat,
    "SVHN float labels": lambda t: svhn(t, np.array([[1.5], [2.0]])),
    "SVHN negative labels": lambda t: svhn(t, np.array([[-1], [2]], np.int16)),
    "malformed trial line": lambda t: trials_file(t, "1 a.wav\n"),
    "trial path escaping the root": lambda t: trials_file(t, "1 /etc/passwd b/c.wav\n"),
    "list path escaping the root": train_list_escaping,
    "IDX negative label": lambda t: idx(t, np.zeros((12, 28, 28), np.uint8),
                                        np.full(12, -1, np.int32)),
    "IDX wrapped pixels": lambda t: idx(t, np.full((12, 28, 28), 300, np.int32),
                                        np.zeros(12, np.uint8)),
    "IDX float labels": float_idx_labels,
    "truncated IDX gzip": truncated_idx,
}


@pytest.mark.parametrize("fault", LOADER_FAULTS)
def test_loader_faults_name_the_file(tmp_path, fault, observe):
    load, message = LOADER_FAULTS[fault](tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=message) as err:
            load()
    observe("ValueError: " + str(err.value).replace(f"{tmp_path}/", "").replace(str(tmp_path), "."))


# --- 10. unreadable notebooks; staleness by import closure ------------------------------------

def test_unreadable_record_does_not_crash_list(tmp_repo, capsys, observe):
    (tmp_repo / "book" / "01_compsum.ipynb").write_text("{not json")
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "record unreadable" in out
    assert book.staleness("01_compsum")[0].startswith("record unreadable")
    observe("list exits 0; the chapter is stale (record unreadable)")


def test_staleness_follows_each_chapters_import_closure(tmp_path, monkeypatch, observe):
    package = tmp_path / "lossbook"
    shutil.copytree(cache.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE_DIR", package)
    monkeypatch.setenv("LOSSBOOK_ROOT", str(REPO))

    def hashes():
        cache.import_closure.cache_clear()
        return {c: book.chapter_library_hash(c) for c in ("01_compsum", "05_icl_gd")}

    try:
        before = hashes()
        closure = {p.name for p in cache.import_closure("lossbook.chapters.icl_gd")}
        assert "icl.py" in closure and "audio.py" not in closure
        speaker = package / "audio.py"  # used by chapter 4 only
        speaker.write_text(speaker.read_text() + "\nX = 1\n")
        assert hashes() == before
        losses = package / "icl.py"
        losses.write_text("# a comment\n" + losses.read_text())
        assert hashes() == before
        losses.write_text(losses.read_text() + "\nY = 2\n")
        after = hashes()
        assert after["05_icl_gd"] != before["05_icl_gd"]
        assert after["01_compsum"] == before["01_compsum"]
    finally:
        cache.import_closure.cache_clear()
    observe("comment: no chapter stale; code in icl.py: only 05 stale")


EXPECTED = {  # the trial table of `make chaos`
    "test_corrupt_run_cache_entry_is_repaired": "warning naming the file; run recomputed",
    "test_corrupt_mnist1d_cache_is_regenerated": "warning naming the .npz; regenerated",
    "test_corrupt_pt_cache_is_reparsed_without_pickle_advice": "warning naming the .pt; reparsed",
    "test_killed_sweep_leaves_no_workers": "workers and resource tracker exit",
    "test_killed_lossbook_run_leaves_no_kernel_or_workers": "kernel and workers exit",
    "test_forged_record_is_refused": "error, the record untouched",
    "test_dependency_change_reruns": "new run-cache key",
    "test_bad_values_fail_before_compute": "ConfigError naming the value, no compute",
    "test_bad_notebook_parameters_fail_in_the_cli": "ConfigError before the kernel starts",
    "test_config_field_as_papermill_parameter_is_refused": "ConfigError: use overrides",
    "test_bad_worker_count_is_refused": "ConfigError naming LOSSBOOK_WORKERS",
    "test_build_keeps_going_and_failed_notebooks_are_listed": "others built, failure listed",
    "test_failed_notebook_is_removed_by_the_next_success": "stale .failed.ipynb removed",
    "test_two_concurrent_runs_write_whole_notebooks": "both succeed; one whole pair",
    "test_torn_record_pair_is_detected": "record reported stale",
    "test_loader_faults_name_the_file": "ValueError naming the file",
    "test_unreadable_record_does_not_crash_list": "list works; record stale",
    "test_staleness_follows_each_chapters_import_closure": "only the importing chapter stale",
}
