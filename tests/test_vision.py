"""lossbook.vision on tiny fabricated files in the official on-disk formats (no network)."""

from __future__ import annotations

import io
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from lossbook import vision
from lossbook.vision import (
    DATASETS,
    ChecksumError,
    download,
    file_digest,
    load_vision,
    normalize,
    parse_cifar_binary,
    parse_svhn_mat,
    random_crop_flip,
)

RNG = np.random.default_rng(0)


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def records(n: int, heads: list[int]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n CIFAR records: label byte(s) + 3072 channel-major pixels."""
    pixels = RNG.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = RNG.integers(0, heads, size=(n, len(heads)), dtype=np.uint8)
    rows = np.concatenate([labels, pixels.reshape(n, -1)], axis=1)
    return rows.tobytes(), pixels, labels


def fake_cifar10(path: Path, n: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    members, parts = {}, {"train": ([], []), "test": ([], [])}
    for split, names in DATASETS["cifar10"].members.items():
        for name in names:
            data, x, y = records(n + (split == "test"), [10])
            members[name] = data
            parts[split][0].append(x)
            parts[split][1].append(y[:, 0])
    make_tar(path, members)
    return {s: (np.concatenate(xs), np.concatenate(ys)) for s, (xs, ys) in parts.items()}


def fake_cifar100(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out, members = {}, {}
    for split, n in (("train", 4), ("test", 3)):
        data, x, y = records(n, [20, 100])
        members[DATASETS["cifar100"].members[split][0]] = data
        out[split] = (x, y)
    make_tar(path, members)
    return out


def fake_svhn(path: Path, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, includes 10
    y[0, 0] = 10
    savemat(path, {"X": x, "y": y})
    return x, y


# -----------------------------------------------------------------------------
# parsers


def test_parse_cifar10_roundtrip(tmp_path):
    truth = fake_cifar10(tmp_path / "c10.tar.gz")
    for split in ("train", "test"):
        x, y = parse_cifar_binary(tmp_path / "c10.tar.gz", "cifar10", split)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape == ((10 if split == "train" else 3), 3, 32, 32)
        assert np.array_equal(x.numpy(), truth[split][0])
        assert np.array_equal(y.numpy(), truth[split][1])
    # channel-major: the first 1024 pixel bytes of a record are the red plane, row by row
    raw = tarfile.open(tmp_path / "c10.tar.gz").extractfile(DATASETS["cifar10"].members["test"][0])
    first = np.frombuffer(raw.read(), np.uint8)[: 1 + 3072]
    x, _ = parse_cifar_binary(tmp_path / "c10.tar.gz", "cifar10", "test")
    assert np.array_equal(x[0, 0].numpy().ravel(), first[1:1025])
    assert np.array_equal(x[0, 2].numpy().ravel(), first[1 + 2048:])


def test_parse_cifar100_fine_and_coarse(tmp_path):
    truth = fake_cifar100(tmp_path / "c100.tar.gz")
    for split in ("train", "test"):
        x, y = parse_cifar_binary(tmp_path / "c100.tar.gz", "cifar100", split)
        assert np.array_equal(x.numpy(), truth[split][0])
        assert np.array_equal(y.numpy(), truth[split][1][:, 1])
        _, yc = parse_cifar_binary(tmp_path / "c100.tar.gz", "cifar100", split, label="coarse")
        assert np.array_equal(yc.numpy(), truth[split][1][:, 0])


def test_parse_cifar_corrupt(tmp_path):
    c10 = DATASETS["cifar10"].members
    good, _, _ = records(2, [10])
    bad = {name: good for name in c10["train"] + c10["test"]}
    bad[c10["train"][2]] = good[:-7]  # truncated record
    with pytest.raises(ValueError, match="record"):
        parse_cifar_binary(make_tar(tmp_path / "a.tar.gz", bad), "cifar10", "train")

    out_of_range = bytearray(good)
    out_of_range[0] = 11
    bad = {name: bytes(out_of_range) for name in c10["train"] + c10["test"]}
    with pytest.raises(ValueError, match="label 11"):
        parse_cifar_binary(make_tar(tmp_path / "b.tar.gz", bad), "cifar10", "test")

    missing = {name: good for name in c10["train"][:4]}
    with pytest.raises(ValueError, match="missing"):
        parse_cifar_binary(make_tar(tmp_path / "c.tar.gz", missing), "cifar10", "train")


def test_parse_svhn(tmp_path):
    xs, ys = fake_svhn(tmp_path / "train_32x32.mat")
    x, y = parse_svhn_mat(tmp_path / "train_32x32.mat")
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (5, 3, 32, 32) and y.shape == (5,)
    for n in range(5):
        for c in range(3):
            assert np.array_equal(x[n, c].numpy(), xs[:, :, c, n])  # [H,W] plane of sample n
    assert y[0] == 0 and y.tolist() == [v % 10 for v in ys[:, 0]]
    assert 10 not in y.tolist()


# -----------------------------------------------------------------------------
# download


def test_download_checksum(tmp_path):
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(RNG.bytes(3000))
    md5, sha = file_digest(src, "md5"), file_digest(src, "sha256")
    dest_dir = tmp_path / "dest"

    with pytest.raises(ChecksumError) as err:
        download(src.as_uri(), dest_dir / "blob.bin", md5="0" * 32, progress=False)
    assert "blob.bin" in str(err.value) and "0" * 32 in str(err.value) and md5 in str(err.value)
    assert isinstance(err.value, ValueError)
    assert list(dest_dir.iterdir()) == []  # neither dest nor the temp file

    got = download(src.as_uri(), dest_dir / "blob.bin", md5=md5, sha256=sha, progress=True)
    assert got == dest_dir / "blob.bin" and got.read_bytes() == src.read_bytes()
    assert list(dest_dir.iterdir()) == [got]


def test_download_skips_good_file_and_replaces_bad(tmp_path, monkeypatch):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"payload" * 100)
    md5 = file_digest(src)
    dest = tmp_path / "d" / "blob.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"stale")
    assert download(src.as_uri(), dest, md5=md5, progress=False).read_bytes() == src.read_bytes()

    def no_network(*args, **kwargs):
        raise AssertionError("should not download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert download(src.as_uri(), dest, md5=md5, progress=False) == dest


# -----------------------------------------------------------------------------
# load_vision


def test_load_vision_cifar10_and_cache(tmp_path, monkeypatch):
    remote = DATASETS["cifar10"].files["archive"]
    archive = tmp_path / remote.filename
    truth = fake_cifar10(archive)
    monkeypatch.setattr(remote, "md5", file_digest(archive))

    d = load_vision("cifar10", tmp_path, download=False)
    assert d["num_classes"] == 10
    assert d["x_train"].dtype == torch.float32 and d["x_train"].shape == (10, 3, 32, 32)
    assert torch.equal(d["x_train"], torch.from_numpy(truth["train"][0]).float() / 255)
    assert torch.equal(d["y_test"], torch.from_numpy(truth["test"][1]).long())
    assert 0 <= d["x_test"].min() and d["x_test"].max() <= 1
    assert d["mean"].shape == d["std"].shape == (3,)
    assert torch.allclose(d["mean"], d["x_train"].mean(dim=(0, 2, 3)))
    assert (tmp_path / "cifar10.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # second call: from the cache only (raw archive gone), via torch.load(weights_only=True)
    archive.unlink()
    calls, real_load = [], torch.load

    def spy_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    d2 = load_vision("cifar10", tmp_path, download=False)
    assert calls and all(kw.get("weights_only") is True for kw in calls)
    for key in ("x_train", "y_train", "x_test", "y_test", "mean", "std"):
        assert torch.equal(d[key], d2[key])


def test_load_vision_svhn(tmp_path, monkeypatch):
    for split, n in (("train", 6), ("test", 4)):
        remote = DATASETS["svhn"].files[split]
        fake_svhn(tmp_path / remote.filename, n)
        monkeypatch.setattr(remote, "md5", file_digest(tmp_path / remote.filename))
    d = load_vision("svhn", tmp_path, download=False)
    assert d["x_train"].shape == (6, 3, 32, 32) and d["x_test"].shape == (4, 3, 32, 32)
    assert d["y_train"].min() >= 0 and d["y_train"].max() <= 9


def test_load_vision_wrong_md5(tmp_path):
    fake_cifar10(tmp_path / DATASETS["cifar10"].files["archive"].filename)
    with pytest.raises(ChecksumError):
        load_vision("cifar10", tmp_path, download=False)


def test_load_vision_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_vision("svhn", tmp_path / "nowhere", download=False)
    for remote in DATASETS["svhn"].files.values():
        assert remote.url in str(err.value)
    with pytest.raises(FileNotFoundError, match="cifar-10-binary.tar.gz"):
        load_vision("cifar10", tmp_path, download=False)
    assert not list(tmp_path.iterdir())


# -----------------------------------------------------------------------------
# augmentation


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_crop_flip_identity_and_determinism():
    x = torch.rand(16, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, padding=0, flip=False, generator=gen()), x)
    a = random_crop_flip(x, generator=gen(1))
    b = random_crop_flip(x, generator=gen(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, random_crop_flip(x, generator=gen(2)))


def test_random_crop_flip_flip_only():
    x = torch.rand(64, 3, 5, 7)
    y = random_crop_flip(x, padding=0, generator=gen())
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


def crops(x: torch.Tensor, p: int) -> list[torch.Tensor]:
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    H, W = x.shape[-2:]
    return [xp[..., i:i + H, j:j + W] for i in range(2 * p + 1) for j in range(2 * p + 1)]


@pytest.mark.parametrize("flip", [False, True])
def test_random_crop_flip_crops(flip):
    x = torch.rand(32, 3, 6, 6) + 0.1  # nonzero, so padding is distinguishable
    p = 2
    y = random_crop_flip(x, padding=p, flip=flip, generator=gen(3))
    options = crops(x, p)
    if flip:
        options += [c.flip(-1) for c in options]
    for n in range(len(x)):
        assert any(torch.equal(y[n], c[n]) for c in options)
    assert not torch.equal(y, x)  # something moved


def test_normalize():
    x = torch.rand(4, 3, 2, 2)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    y = normalize(x, mean, std)
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.4) / 0.25)
    assert torch.allclose(normalize(x, x.mean((0, 2, 3)), x.std((0, 2, 3))).mean((0, 2, 3)),
                          torch.zeros(3), atol=1e-6)


def test_registry_names():
    assert DATASETS["cifar10"].files["archive"].filename == "cifar-10-binary.tar.gz"
    assert DATASETS["cifar100"].files["archive"].filename == "cifar-100-binary.tar.gz"
    assert {r.filename for r in DATASETS["svhn"].files.values()} == {
        "train_32x32.mat", "test_32x32.mat"}
    assert vision.PIXELS == 3072
