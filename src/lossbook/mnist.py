"""MNIST from the official IDX files (gzip), for `full` presets: a checksummed download and a
small parser — no torchvision, no pickle.

The four files and their MD5 digests are torchvision's `MNIST.resources` (the same digests other
loaders list for Yann LeCun's files); the mirror is torchvision's
(`https://ossci-datasets.s3.amazonaws.com/mnist/`). `lossbook.vision.download` writes to a
temporary file, checks the digest and renames atomically. Parsed arrays are cached as
`root/mnist.pt` (read back with `weights_only=True`).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import torch

from lossbook.io import read_cached, write_atomic
from lossbook.vision import download, load_tensor_dict, verify

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
# IDX element types (third byte of the magic number)
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes) -> np.ndarray:
    """An IDX array: magic 0x00 0x00 <type> <ndim>, ndim big-endian uint32 sizes, then data.

    Raises ValueError on a bad magic number, an unknown type or a size mismatch.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("not an IDX file (bad magic number)")
    dtype, ndim = raw[2], raw[3]
    if dtype not in IDX_TYPES:
        raise ValueError(f"unknown IDX element type 0x{dtype:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError("truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    dt = np.dtype(IDX_TYPES[dtype])
    expected = int(np.prod(shape)) * dt.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"IDX payload has {len(raw) - header} bytes, shape {shape} needs "
                         f"{expected}")
    return np.frombuffer(raw, dtype=dt, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """`parse_idx` of a file, gunzipped when its name ends in .gz."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return parse_idx(raw)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def write_idx(array: np.ndarray, path: Path) -> Path:
    """Write `array` (uint8 or int32) as an IDX file, gzipped for a .gz name (test fixtures)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    array = np.asarray(array)
    if array.dtype == np.int32:
        array = array.astype(">i4")
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    path = Path(path)
    write_atomic(path, gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def load_mnist(root: Path, *, download_missing: bool = False,
               files: dict[str, tuple[str, str | None]] | None = None) -> dict[str, torch.Tensor]:
    """MNIST as uint8 images [N, 28, 28] and int64 labels: x_train, y_train, x_test, y_test.

    Files are looked for in `root` (downloaded and checked when `download_missing`); `files`
    overrides the names/digests (tests use fabricated files, digest None = unchecked).
    """
    root = Path(root)
    cache = root / "mnist.pt"
    cached = read_cached(cache, lambda p: load_tensor_dict(p, ("x_train", "y_train", "x_test",
                                                              "y_test")))
    if cached is not None:
        return cached
    files = files or FILES
    arrays, missing = {}, []
    for role, (name, md5) in files.items():
        path = root / name
        if download_missing:
            download(MIRROR + name, path, md5=md5)
        elif not path.is_file():
            missing.append(f"  {path}  <-  {MIRROR + name}  (md5 {md5})")
            continue
        elif md5 is not None:
            verify(path, md5=md5)
        arrays[role] = read_idx(path)
    if missing:
        raise FileNotFoundError("MNIST files not found; download them and place them at:\n"
                                + "\n".join(missing) + "\n(or pass download_missing=True)")
    out = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"MNIST {split}: images {images.shape} and labels {labels.shape} "
                             "do not match")
        where = f"MNIST {split} ({files[f'{split}_images'][0]}, {files[f'{split}_labels'][0]} "\
                f"in {root})"
        if images.dtype != np.uint8:
            raise ValueError(f"{where}: images must be uint8 pixels, got {images.dtype}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{where}: labels must be integers, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{where}: labels {labels.min()}..{labels.max()} out of range 0..9")
        out[f"x_{split}"] = torch.from_numpy(np.array(images, dtype=np.uint8))
        out[f"y_{split}"] = torch.from_numpy(labels.astype(np.int64))
    buffer = io.BytesIO()
    torch.save(out, buffer)
    write_atomic(cache, buffer.getvalue())
    return out


def cmnist_pools(mnist: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The Colored-MNIST scripts' pools: the first 50,000 of the 60,000 training images
    (training environments) and the last 10,000 (test environments), subsampled 2× to 14 × 14,
    in [0, 1]. (For a smaller fabricated file: the first 5/6 and the rest.)

    Returns (train images, train digits, test images, test digits).
    """
    images = mnist["x_train"][:, ::2, ::2].float() / 255.0
    digits = mnist["y_train"]
    cut = len(digits) * 5 // 6
    return images[:cut], digits[:cut], images[cut:], digits[cut:]
