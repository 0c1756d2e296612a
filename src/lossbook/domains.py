"""Environments for domain generalisation: Colored MNIST (the IRM construction) on MNIST-1D
signals or on real MNIST digits, its label-shift variant, and MNIST-1D generator domains.

**Colored MNIST** (Arjovsky et al. 2019; `make_environment` of the IRM, Fishr and
Hessian-alignment CMNIST scripts): the label is y = 1[digit < 5], flipped with probability 0.25;
the colour is c = y XOR Bernoulli(e); the input is two copies of the digit with the channel
1 − c zeroed. In training environments with small e the colour predicts the label better (1 − e)
than the shape does (0.75); in the test environment e = 0.9 the correlation reverses. A
grayscale environment keeps both channels (no colour).

Here the "digit" can be an MNIST-1D signal (40 samples, 2 × 40 = 80 inputs) or a real MNIST
image subsampled to 14 × 14 (2 × 196 = 392 inputs), exactly as the scripts do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lossbook import data

# MNIST-1D generator settings that make the shape a reliable feature (research note:
# an MLP's clean digit<5 accuracy 0.999 vs 0.788 with the default arguments).
EASY_MNIST1D = {"corr_noise_scale": 0.1, "iid_noise_scale": 0.01, "shear_scale": 0.2,
                "max_translation": 8, "scale_coeff": 0.2}

# The same with translation limited to ±1 sample (`max_translation=1`): the digit shape is then a
# feature a small MLP learns alongside the colour, so ERM's grayscale accuracy comes within a few
# points of the colour-blind oracle's (the precondition of chapter 3's shift claims).
CENTRED_MNIST1D = {**EASY_MNIST1D, "max_translation": 1}

# Diversity-shift domains: each an MNIST-1D generator setting (research note, domains D1–D5).
MNIST1D_DOMAINS: dict[str, dict] = {
    "default": {},
    "noisy": {"corr_noise_scale": 0.6},
    "sheared": {"shear_scale": 2.0},
    "centred": {"max_translation": 1, "padding": [36, 38]},
    "reversed": {"reverse": True},
}

Env = tuple[torch.Tensor, torch.Tensor]


def bernoulli(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < p).long()


def make_environment(signals: torch.Tensor, digits: torch.Tensor, e: float,
                     generator: torch.Generator, label_flip: float = 0.25,
                     grayscale: bool = False) -> Env:
    """One Colored-MNIST environment: inputs [N, 2, *signal shape], binary labels [N].

    The scripts' `make_environment`: labels = (digit < 5) xor Bernoulli(label_flip),
    colours = labels xor Bernoulli(e), channel (1 − colour) zeroed unless `grayscale`.
    """
    n = len(digits)
    labels = (digits < 5).long() ^ bernoulli(label_flip, n, generator)
    colours = labels ^ bernoulli(e, n, generator)
    x = torch.stack([signals, signals], dim=1).float()
    if not grayscale:
        x[torch.arange(n), 1 - colours] = 0.0
    return x, labels


def grayscale_input(x: torch.Tensor) -> torch.Tensor:
    """The scripts' `--grayscale_model` input: the two channels summed (colour-blind)."""
    return x.sum(1, keepdim=True)


@dataclass
class Environments:
    """Training environments (fit part), their held-out parts, and the test environments."""

    train: list[Env]
    val: list[Env]
    test: dict[str, Env]
    train_e: tuple[float, ...]

    def to(self, device) -> Environments:
        move = lambda env: (env[0].to(device), env[1].to(device))  # noqa: E731
        return Environments([move(v) for v in self.train], [move(v) for v in self.val],
                            {k: move(v) for k, v in self.test.items()}, self.train_e)


def split_holdout(env: Env, fraction: float, generator: torch.Generator) -> tuple[Env, Env]:
    """(fit, held-out) parts of an environment; DomainBed holds out 20 % of every environment."""
    n = len(env[1])
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * fraction))
    val, fit = order[:n_val], order[n_val:]
    return (env[0][fit], env[1][fit]), (env[0][val], env[1][val])


def label_shift_split(digits: torch.Tensor, p: float = 0.97) -> tuple[torch.Tensor, torch.Tensor]:
    """Index sets of the label-shift variant (`cmnist_*_imbalanced.py`): environment 0 gets the
    first fraction p of the digits < 5 and the first 1 − p of the digits ≥ 5; environment 1 the
    rest."""
    low = torch.nonzero(digits < 5).flatten()
    high = torch.nonzero(digits >= 5).flatten()
    k_low, k_high = round(p * len(low)), round((1 - p) * len(high))
    env0 = torch.cat([low[:k_low], high[:k_high]])
    env1 = torch.cat([low[k_low:], high[k_high:]])
    return env0, env1


def colored_environments(train_signals: torch.Tensor, train_digits: torch.Tensor,
                         test_signals: torch.Tensor, test_digits: torch.Tensor, *,
                         seed: int, train_e: tuple[float, ...] = (0.2, 0.1),
                         test_e: float = 0.9, label_flip: float = 0.25,
                         holdout_fraction: float = 0.2, label_shift: float | None = None
                         ) -> Environments:
    """The Colored-MNIST environments of the official scripts, drawn afresh for restart `seed`.

    The training pool is shuffled; environment k takes every E-th example from offset k
    (`mnist_train[0][::2]`, `[1::2]`) with colour-flip probability train_e[k], or — with
    `label_shift=p` — the imbalanced split of `label_shift_split`. The test environment
    (colour flip `test_e`) and the grayscale one are built from the test pool, each with its own
    label flips, as the scripts do. A `holdout_fraction` of every training environment is set
    aside for model selection.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_digits), generator=g)
    signals, digits = train_signals[order], train_digits[order]
    n_envs = len(train_e)
    if label_shift is None:
        parts = [torch.arange(k, len(digits), n_envs) for k in range(n_envs)]
    else:
        if n_envs != 2:
            raise ValueError("the label-shift split has two training environments")
        parts = list(label_shift_split(digits, label_shift))
    train, val = [], []
    for idx, e in zip(parts, train_e):
        env = make_environment(signals[idx], digits[idx], e, g, label_flip)
        fit, held = split_holdout(env, holdout_fraction, g)
        train.append(fit)
        val.append(held)
    test = {"test": make_environment(test_signals, test_digits, test_e, g, label_flip),
            "gray": make_environment(test_signals, test_digits, test_e, g, label_flip,
                                     grayscale=True)}
    return Environments(train, val, test, tuple(train_e))


def mnist1d_signals(num_samples: int, seed: int = 42, **generator_args):
    """(train signals, train digits, test signals, test digits) from the MNIST-1D generator.

    `reverse=True` time-reverses the signals (a "rotation" of a 1-D digit).
    """
    reverse = generator_args.pop("reverse", False)
    ds = data.mnist1d(num_samples=num_samples, seed=seed, **generator_args)
    xs = [ds.x_train, ds.x_test]
    if reverse:
        xs = [x.flip(-1) for x in xs]
    return xs[0], ds.y_train, xs[1], ds.y_test


def domain_environments(domains: dict[str, tuple[torch.Tensor, torch.Tensor]], test_domain: str,
                        *, seed: int, holdout_fraction: float = 0.2) -> Environments:
    """Leave-one-domain-out: every other domain is a training environment (fit + 20 % held
    out), the left-out domain is the test environment (all of it)."""
    if test_domain not in domains:
        raise ValueError(f"unknown test domain {test_domain!r}; valid: {', '.join(domains)}")
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for name, env in domains.items():
        if name == test_domain:
            continue
        fit, held = split_holdout(env, holdout_fraction, g)
        train.append(fit)
        val.append(held)
    return Environments(train, val, {"test": domains[test_domain]}, ())
