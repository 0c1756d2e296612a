"""Real image datasets (CIFAR-10, CIFAR-100, SVHN) for the `full` presets.

No pickle and no torchvision: CIFAR comes from the official *binary* archives (read member by
member with `tarfile`, never extracted), SVHN from the MATLAB v5 files (read with
`scipy.io.loadmat`). Parsed tensors are cached as `root/<name>.pt` and read back with
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lossbook.io import read_cached, write_atomic

CHUNK = 1 << 20  # 1 MiB


# -----------------------------------------------------------------------------
# downloading


class ChecksumError(ValueError):
    """A file's digest is not the expected one."""


def file_digest(path: Path, algo: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _mismatch(path: Path, md5: str | None, sha256: str | None) -> tuple[str, str, str] | None:
    """(algo, expected, actual) for the first digest that differs, else None."""
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            actual = file_digest(path, algo)
            if actual != expected.lower():
                return algo, expected.lower(), actual
    return None


def verify(path: Path, md5: str | None = None, sha256: str | None = None) -> Path:
    """Raise ChecksumError unless `path` has the given digest(s)."""
    bad = _mismatch(Path(path), md5, sha256)
    if bad:
        algo, expected, actual = bad
        raise ChecksumError(f"{path}: {algo} mismatch, expected {expected}, got {actual}")
    return Path(path)


def download(
    url: str,
    dest: Path,
    md5: str | None = None,
    sha256: str | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest` (temp file + checksum + atomic rename); skip if already good.

    With no checksum given, an existing `dest` counts as good.
    """
    dest = Path(dest)
    if dest.is_file() and _mismatch(dest, md5, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            bar = None
            if progress:
                from tqdm.auto import tqdm

                total = int(r.headers.get("Content-Length") or 0) or None
                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=dest.name)
            while chunk := r.read(CHUNK):
                f.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        bad = _mismatch(tmp, md5, sha256)
        if bad:
            algo, expected, actual = bad
            raise ChecksumError(
                f"{dest.name} downloaded from {url}: {algo} mismatch, "
                f"expected {expected}, got {actual}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful os.replace
    return dest


# -----------------------------------------------------------------------------
# registry of the official files


@dataclass
class Remote:
    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass
class VisionDataset:
    num_classes: int
    files: dict[str, Remote]  # "archive" (CIFAR) or "train"/"test" (SVHN)
    members: dict[str, list[str]] = field(default_factory=dict)  # split -> tar members
    label_bytes: int = 1  # CIFAR record header


_C10 = "cifar-10-batches-bin"
DATASETS: dict[str, VisionDataset] = {
    "cifar10": VisionDataset(
        num_classes=10,
        files={"archive": Remote("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                                 "c32a1d4ab5d03f1284b67883e8d87530")},
        members={"train": [f"{_C10}/data_batch_{i}.bin" for i in range(1, 6)],
                 "test": [f"{_C10}/test_batch.bin"]},
        label_bytes=1,
    ),
    "cifar100": VisionDataset(
        num_classes=100,
        files={"archive": Remote("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                                 "03b5dce01913d631647c71ecec9e9cb8")},
        members={"train": ["cifar-100-binary/train.bin"], "test": ["cifar-100-binary/test.bin"]},
        label_bytes=2,
    ),
    "svhn": VisionDataset(
        num_classes=10,
        files={"train": Remote("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                               "e26dedcc434d2e4c54c9b2d4a06d8373"),
               "test": Remote("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                              "eb5a983be6a315427106f1b164d9cef3")},
    ),
}
PIXELS = 3 * 32 * 32


# -----------------------------------------------------------------------------
# parsers


def parse_cifar_binary(
    archive_path: Path, which: str = "cifar10", split: str = "train", label: str = "fine"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N,3,32,32] and labels int64 [N] from a CIFAR binary .tar.gz.

    For CIFAR-100, `label` picks the "fine" (100) or "coarse" (20) label.
    """
    if which not in ("cifar10", "cifar100"):
        raise ValueError(f"which must be 'cifar10' or 'cifar100', not {which!r}")
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', not {label!r}")
    spec = DATASETS[which]
    if split not in spec.members:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    record = spec.label_bytes + PIXELS

    # one streaming pass over the archive, keeping only the members we want
    wanted, found = spec.members[split], {}
    try:
        with tarfile.open(archive_path, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{archive_path}: unreadable archive ({type(err).__name__}: {err})") \
            from None
    chunks = []
    for name in wanted:
        if name not in found:
            raise ValueError(f"{archive_path}: member {name} is missing (corrupt archive?)")
        data = found[name]
        if len(data) == 0 or len(data) % record:
            raise ValueError(
                f"{archive_path}:{name}: {len(data)} bytes is not a whole number of "
                f"{record}-byte records (corrupt file?)"
            )
        chunks.append(np.frombuffer(data, np.uint8).reshape(-1, record))
    rows = np.concatenate(chunks)

    col, num_classes = 0, spec.num_classes
    if which == "cifar100":
        col, num_classes = (1, 100) if label == "fine" else (0, 20)
    labels = rows[:, col].astype(np.int64)
    if labels.max() >= num_classes:
        raise ValueError(
            f"{archive_path}:{split}: label {labels.max()} out of range 0..{num_classes - 1}"
        )
    images = rows[:, spec.label_bytes:].reshape(-1, 3, 32, 32)  # channel-major: R, G, B planes
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def parse_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N,3,32,32] and labels int64 [N] (digit 0 stored as 10 -> 0)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    except Exception as err:  # noqa: BLE001 — scipy raises many kinds; name the file
        raise ValueError(f"{path}: not an SVHN .mat file with X and y "
                         f"({type(err).__name__}: {err})") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise ValueError(f"{path}: X must be uint8 (32,32,3,N), got {x.dtype} {x.shape}")
    if y.size != x.shape[3]:
        raise ValueError(f"{path}: {y.size} labels for {x.shape[3]} images")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers, got {y.dtype}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(f"{path}: labels must be in 1..10, got {labels.min()}..{labels.max()}")
    labels[labels == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H,W,C,N) -> (N,C,H,W)
    return torch.from_numpy(images), torch.from_numpy(labels)


# -----------------------------------------------------------------------------
# loading with a cache


def load_tensor_dict(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A `torch.save`d dict of tensors with exactly `keys`, read with `weights_only=True`
    (anything else raises ValueError naming the file)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's message advises weights_only=False: never do that here
        raise ValueError(f"{path}: not a readable tensor cache ({type(err).__name__})") from None
    if not isinstance(raw, dict) or set(raw) != set(keys) \
            or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: expected a dict of tensors {sorted(keys)}")
    return raw


def _raw_files(name: str, root: Path, download_missing: bool) -> dict[str, Path]:
    spec, paths, missing = DATASETS[name], {}, []
    for role, remote in spec.files.items():
        path = root / remote.filename
        if download_missing:
            download(remote.url, path, md5=remote.md5)
        elif not path.is_file():
            missing.append(f"  {path}  <-  {remote.url}  (md5 {remote.md5})")
        else:
            verify(path, md5=remote.md5)
        paths[role] = path
    if missing:
        raise FileNotFoundError(
            f"{name}: files not found; download them and place them at:\n" + "\n".join(missing)
            + "\n(or call load_vision(..., download=True))"
        )
    return paths


def _parse(name: str, root: Path, download_missing: bool) -> dict[str, torch.Tensor]:
    paths = _raw_files(name, root, download_missing)
    if name == "svhn":
        (xtr, ytr), (xte, yte) = parse_svhn_mat(paths["train"]), parse_svhn_mat(paths["test"])
    else:
        xtr, ytr = parse_cifar_binary(paths["archive"], name, "train")
        xte, yte = parse_cifar_binary(paths["archive"], name, "test")
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def load_vision(
    name: str, root: Path, *, download: bool = True, device: str | torch.device = "cpu"
) -> dict:
    """CIFAR-10/100 or SVHN as float32 images in [0,1] on `device`.

    Returns dict(x_train, y_train, x_test, y_test, num_classes, mean, std), with `mean`/`std`
    the per-channel statistics of the training images.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    root = Path(root)
    cache = root / f"{name}.pt"
    raw = read_cached(cache, lambda p: load_tensor_dict(p, ("x_train", "y_train", "x_test",
                                                           "y_test")))
    if raw is None:  # absent, or corrupt and removed (with a warning)
        raw = _parse(name, root, download)
        buf = io.BytesIO()
        torch.save(raw, buf)
        write_atomic(cache, buf.getvalue())

    # uint8 travels to the device (4x less traffic), the float conversion happens there
    x_train = raw["x_train"].to(device).float().div_(255)
    x_test = raw["x_test"].to(device).float().div_(255)
    return {
        "x_train": x_train,
        "y_train": raw["y_train"].to(device),
        "x_test": x_test,
        "y_test": raw["y_test"].to(device),
        "num_classes": DATASETS[name].num_classes,
        "mean": x_train.mean(dim=(0, 2, 3)),
        "std": x_train.std(dim=(0, 2, 3)),
    }


# -----------------------------------------------------------------------------
# augmentation on batches (any device)


def random_crop_flip(
    x: torch.Tensor,
    *,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero-pad, take a random HxW crop per sample, and mirror half of the samples.

    Vectorised over the batch; deterministic given `generator` (which may live on the CPU
    while `x` is on the GPU).
    """
    B, C, H, W = x.shape
    gdev = generator.device if generator is not None else x.device
    i = torch.randint(0, 2 * padding + 1, (B,), generator=generator, device=gdev).to(x.device)
    j = torch.randint(0, 2 * padding + 1, (B,), generator=generator, device=gdev).to(x.device)
    xp = F.pad(x, (padding, padding, padding, padding)) if padding else x

    rows = i[:, None] + torch.arange(H, device=x.device)  # [B,H]
    cols = j[:, None] + torch.arange(W, device=x.device)  # [B,W]
    if flip:
        mirror = (torch.rand(B, generator=generator, device=gdev) < 0.5).to(x.device)
        cols = torch.where(mirror[:, None], cols.flip(1), cols)

    out = xp.gather(2, rows[:, None, :, None].expand(B, C, H, xp.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, for x of shape [..., C, H, W]."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - mean) / std
