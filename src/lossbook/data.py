"""Data that needs no download: MNIST-1D (procedural), sklearn digits, synthetic mixtures;
and the label-noise and class-imbalance transforms chapters apply to them.

Every dataset is a `Dataset` of tensors that fit in memory; move it once with `.to(device)`.
Real image datasets for `full` presets live in `lossbook.vision`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from lossbook.io import read_cached, stable_hash, write_atomic
from lossbook.paths import cache_dir


@dataclass
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def to(self, device) -> Dataset:
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if f.name != "num_classes"})

    def __repr__(self) -> str:
        return (f"Dataset(train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"classes={self.num_classes})")


def _from_numpy(x_train, y_train, x_test, y_test, num_classes: int) -> Dataset:
    return Dataset(torch.as_tensor(x_train, dtype=torch.float32),
                   torch.as_tensor(y_train, dtype=torch.int64),
                   torch.as_tensor(x_test, dtype=torch.float32),
                   torch.as_tensor(y_test, dtype=torch.int64), int(num_classes))


def random_templates(num_classes: int, seed: int, length: int = 12) -> dict:
    """Smooth random 1-D templates, normalised like `mnist1d.data.get_templates`."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(num_classes, length))
    kernel = np.array([0.25, 0.5, 0.25])
    x = np.stack([np.convolve(r, kernel, mode="same") for r in raw])
    x -= x.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]
    return {"x": x / 6.0, "t": np.linspace(-5, 5, length) / 6.0, "y": np.arange(num_classes)}


def mnist1d(num_samples: int = 5000, seed: int = 42, num_classes: int = 10,
            template_seed: int | None = None, **generator_args) -> Dataset:
    """MNIST-1D from the `mnist1d` package's procedural generator (no download), cached as .npz.

    `num_classes != 10` (or a `template_seed`) uses random smooth templates instead of the ten
    digit templates; `generator_args` override `mnist1d.data.get_dataset_args()` fields.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    unknown = set(generator_args) - set(args)
    if unknown:
        raise ValueError(f"unknown mnist1d generator args {sorted(unknown)}; valid: {sorted(args)}")
    args.update(generator_args, num_samples=num_samples, seed=seed)
    custom = num_classes != 10 or template_seed is not None
    key = stable_hash({"args": args, "classes": num_classes, "templates": template_seed})[:16]
    path = cache_dir() / "data" / f"mnist1d-{key}.npz"
    arrays = read_cached(path, _read_mnist1d)  # a corrupt file is removed and regenerated
    if arrays is None:
        from mnist1d.utils import ObjectView

        templates = random_templates(num_classes, template_seed or 0) if custom else None
        data = make_dataset(ObjectView(args), template=templates)
        buffer = io.BytesIO()  # parallel workers may generate the same file: write atomically
        np.savez(buffer, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
        write_atomic(path, buffer.getvalue())
        arrays = _read_mnist1d(path)
    return _from_numpy(*arrays, num_classes)


def _read_mnist1d(path):
    with np.load(path, allow_pickle=False) as f:
        arrays = [np.asarray(f[k]) for k in ("x", "y", "x_test", "y_test")]
    x, y, x_test, y_test = arrays
    if x.ndim != 2 or x_test.ndim != 2 or y.shape != (len(x),) or y_test.shape != (len(x_test),):
        raise ValueError(f"array shapes {[a.shape for a in arrays]} are not those of MNIST-1D")
    return arrays


def digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images), flattened and scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data / 16.0, bunch.target
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return _from_numpy(x[train], y[train], x[test], y[test], 10)


def gaussian_mixture(num_classes: int = 100, dim: int = 32, train_per_class: int = 100,
                     test_per_class: int = 50, noise: float = 1.0, seed: int = 0) -> Dataset:
    """Class means drawn from N(0, I); samples = mean + noise · N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=g)

    def draw(per_class: int):
        y = torch.arange(num_classes).repeat_interleave(per_class)
        x = means[y] + noise * torch.randn(len(y), dim, generator=g)
        order = torch.randperm(len(y), generator=g)
        return x[order], y[order]

    (x_train, y_train), (x_test, y_test) = draw(train_per_class), draw(test_per_class)
    return Dataset(x_train, y_train, x_test, y_test, num_classes)


def symmetric_noise(y: torch.Tensor, rate: float, num_classes: int, seed: int) -> torch.Tensor:
    """Each label flips with probability `rate` to one of the *other* classes, uniformly."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=g) < rate
    offset = torch.randint(1, num_classes, (len(y),), generator=g)
    return torch.where(flip, (y.cpu() + offset) % num_classes, y.cpu()).to(y.device)


def asymmetric_noise(y: torch.Tensor, rate: float, mapping: dict[int, int] | None,
                     num_classes: int, seed: int) -> torch.Tensor:
    """Class-dependent flips y → mapping[y] with probability `rate` (default: the next class)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    table = torch.arange(num_classes)
    table = (table + 1) % num_classes if mapping is None else table
    for source, target in (mapping or {}).items():
        table[source] = target
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=g) < rate
    return torch.where(flip, table[y.cpu()], y.cpu()).to(y.device)


def long_tail_counts(max_per_class: int, num_classes: int, ratio: float,
                     profile: str = "exp") -> list[int]:
    """Per-class sizes n_c decaying from n_max to n_max/ratio (exponential or step profile)."""
    if profile == "exp":
        return [int(max_per_class * ratio ** (-c / max(1, num_classes - 1)))
                for c in range(num_classes)]
    if profile == "step":
        return [max_per_class if c < num_classes // 2 else int(max_per_class / ratio)
                for c in range(num_classes)]
    raise ValueError(f"unknown imbalance profile {profile!r}; valid: exp, step")


def long_tail_indices(y: torch.Tensor, ratio: float, num_classes: int, profile: str = "exp",
                      seed: int = 0) -> torch.Tensor:
    """Indices of a class-imbalanced subset of `y` (class 0 the head, the last class the tail)."""
    per_class = min(int((y == c).sum()) for c in range(num_classes))
    return class_subset_indices(y, long_tail_counts(per_class, num_classes, ratio, profile), seed)


def class_counts(y: torch.Tensor, num_classes: int) -> list[int]:
    """n_c, the number of labels equal to c, for c = 0 … num_classes − 1."""
    return torch.bincount(y.cpu(), minlength=num_classes)[:num_classes].tolist()


def class_subset_indices(y: torch.Tensor, counts: list[int], seed: int = 0) -> torch.Tensor:
    """Sorted indices of a random subset of `y` with exactly `counts[c]` labels of class c.

    With `counts = long_tail_counts(...)` this is the long-tailed subsample of Cao et al. (2019,
    official `IMBALANCECIFAR10.gen_imbalanced_data`: a random `counts[c]` of each class); with
    equal counts it is a class-balanced subsample (e.g. a balanced test set).
    """
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c, count in enumerate(counts):
        members = torch.nonzero(y.cpu() == c).flatten()
        if count > len(members):
            raise ValueError(f"class {c} has {len(members)} examples, {count} requested")
        chosen.append(members[torch.randperm(len(members), generator=g)[:count]])
    return torch.cat(chosen).sort().values


def effective_number_weights(counts: list[int], beta: float) -> torch.Tensor:
    """Class-balanced weights w_c ∝ (1 − β)/(1 − β^{n_c}), normalised to sum to the class count.

    1/w_c is the "effective number of samples" of Cui et al. (CVPR 2019); β = 0 gives equal
    weights, β → 1 inverse class frequency. The normalisation Σ_c w_c = C is the one of the
    LDAM-DRW official code (`cifar_train.py`, train rules `Reweight` and `DRW`).
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = np.asarray(counts, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError(f"every class needs at least one example, got counts {list(counts)}")
    weights = (1.0 - beta) / (1.0 - np.power(beta, n))
    return torch.as_tensor(weights / weights.sum() * len(n), dtype=torch.float32)


def class_balanced_sample(y: torch.Tensor, class_weights: torch.Tensor, num_samples: int,
                          generator: torch.Generator) -> torch.Tensor:
    """`num_samples` indices drawn i.i.d. with replacement, P(i) ∝ class_weights[y_i].

    The re-sampling rule of the LDAM-DRW official code (`utils.ImbalancedDatasetSampler` with
    effective-number weights); drawn on the CPU with `generator`.
    """
    per_sample = class_weights.double().cpu()[y.cpu()]
    return torch.multinomial(per_sample, num_samples, replacement=True, generator=generator)
