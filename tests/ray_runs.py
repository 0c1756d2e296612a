"""Run functions for tests/test_ray.py, importable by Ray's worker processes. Each call leaves a
file in the folder `spec["log"]`, so a test can count the calls made in other processes."""

import os
import signal
import uuid
from pathlib import Path


def logged(spec: dict) -> Path:
    log = Path(spec["log"])
    (log / f"call-{spec['x']}-{uuid.uuid4().hex}").touch()
    return log


def killed_once(spec: dict) -> dict:
    """Kills its own worker process the first time it runs an even `x`."""
    log = logged(spec)
    marker = log / f"killed-{spec['x']}"
    if spec["x"] % 2 == 0 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": spec["x"] ** 2}


def fails_at_three(spec: dict) -> dict:
    """Raises at x = 3 while the file `fail` is in the log folder."""
    log = logged(spec)
    if spec["x"] == 3 and (log / "fail").exists():
        raise ValueError("run 3 failed")
    return {"y": spec["x"] ** 2}
