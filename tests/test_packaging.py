"""pyproject (lower bounds), the lock file (exact pins) and environment.yml agree."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_deps() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    out = {}
    for dep in deps:
        name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", dep).groups()
        out[norm(name)] = spec
    return out


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[norm(name)] = version.strip()
    return pins


def environment_deps() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for item in dep["pip"]:
                if "==" in item:
                    name, version = item.split("==")
                    out[norm(name)] = version
        elif "=" in dep and not dep.startswith("python="):
            name, version = dep.split("=", 1)
            out[norm(CONDA_NAMES.get(name, name))] = version
    return out


def test_library_dependencies_have_lower_bounds_only():
    for name, spec in pyproject_deps().items():
        assert "==" not in spec, f"{name}: exact pins belong in requirements/lock.txt"
    assert pyproject_deps()["jupyter-book"] == ">=1.0.4,<2"  # 2.x ignores _config.yml


def test_environment_yml_matches_pyproject_and_lock():
    deps, env, pins = pyproject_deps(), environment_deps(), lock_pins()
    assert set(env) == set(deps), f"only in env: {set(env) - set(deps)}; " \
                                  f"only in pyproject: {set(deps) - set(env)}"
    for name, version in env.items():
        assert pins[name] == version, f"{name}: environment.yml {version} != lock {pins[name]}"


def test_lock_pins_every_dependency_and_torch_cpu_wheel():
    pins = lock_pins()
    assert set(pyproject_deps()) <= set(pins)
    assert pins["torch"] == "2.13.0"
    assert "torchvision" not in pins
    assert pins["jupyter-book"].startswith("1.")
