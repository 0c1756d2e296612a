"""ℓ∞ attacks: FGSM, PGD (cross-entropy or margin loss), and the divergence-maximising PGD
inner loop used by TRADES and the smooth adversarial comp-sum loss.

Every attack also runs on M stacked models at once (`lossbook.batched`): `model` may be any
callable mapping inputs [M, B, ...] to logits [M, B, C], with labels [M, B]. The attack
objectives are sums over examples, so each model's inputs get exactly the gradient of its own
objective; with `generator` a list of M generators the random starts are drawn per model, as
the same attack on each model alone with that model's generator would draw them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j≠y} z_j − z_y per example (the CW / 'margin' attack objective)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.max(1).values - true


def _project(x_adv, x, eps, clamp):
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    return x_adv.clamp(*clamp) if clamp is not None else x_adv


class _eval_mode:
    """Eval mode for an nn.Module during an attack (a plain callable is left alone)."""

    def __init__(self, model):
        self.model = model if isinstance(model, nn.Module) else None
        self.was_training = self.model.training if self.model is not None else False

    def __enter__(self):
        if self.model is not None:
            self.model.eval()

    def __exit__(self, *exc):
        if self.model is not None:
            self.model.train(self.was_training)


Generators = torch.Generator | list[torch.Generator] | tuple[torch.Generator, ...] | None


def _draw(x: torch.Tensor, generator: Generators, fill) -> torch.Tensor:
    """fill(tensor shaped like x, generator) per model (a list: one generator per x[m])."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != len(x):
            raise ValueError(f"one generator per stacked model: {len(generator)} for {len(x)}")
        return torch.stack([fill(torch.empty_like(x[m]), g) for m, g in enumerate(generator)])
    return fill(torch.empty_like(x), generator)


def _flat(z: torch.Tensor) -> torch.Tensor:
    return z.reshape(-1, z.shape[-1])


ATTACK_LOSSES = {"ce": lambda z, t: F.cross_entropy(_flat(z), t.reshape(-1), reduction="sum"),
                 "margin": lambda z, t: margin_loss(_flat(z), t.reshape(-1)).sum()}


def pgd(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
        steps: int, loss: str = "ce", random_start: bool = True,
        clamp: tuple[float, float] | None = None,
        generator: Generators = None) -> torch.Tensor:
    """Projected gradient ascent on CE or margin loss inside the ℓ∞ ball of radius eps, from a
    uniform random start (drawn from `generator`, or torch's global generator if None)."""
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"unknown attack loss {loss!r}; valid: {', '.join(ATTACK_LOSSES)}")
    with _eval_mode(model):
        x_adv = x.detach().clone()
        if random_start:
            noise = (torch.empty_like(x).uniform_(-eps, eps) if generator is None else
                     _draw(x, generator, lambda t, g: t.uniform_(-eps, eps, generator=g)))
            x_adv = _project(x_adv + noise, x, eps, clamp)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(ATTACK_LOSSES[loss](model(x_adv), y), x_adv)
            x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps, clamp)
    return x_adv.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         clamp: tuple[float, float] | None = None) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, clamp=clamp)


def pgd_divergence(model, x: torch.Tensor,
                   divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                   eps: float, step_size: float, steps: int, init_std: float = 0.001,
                   clamp: tuple[float, float] | None = None,
                   generator: Generators = None) -> torch.Tensor:
    """TRADES' inner maximisation: start at x + init_std·N(0, 1), ascend divergence(f(x'), f(x))
    with signed gradients, project on the ℓ∞ ball (official trades.py, `perturb_steps` loop).

    `divergence` gets logits flattened to [M·B, C] (stacked models) and must be a sum over rows.
    """
    with _eval_mode(model):
        with torch.no_grad():
            reference = _flat(model(x))
        noise = (torch.randn_like(x) if generator is None else
                 _draw(x, generator, lambda t, g: t.normal_(generator=g)))
        x_adv = x.detach() + init_std * noise
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(divergence(_flat(model(x_adv)), reference), x_adv)
            x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps, clamp)
    return x_adv.detach()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    with _eval_mode(model):
        correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                      for i in range(0, len(y), batch_size))
    return correct / len(y)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                    step_size: float, steps: int, loss: str = "margin",
                    clamp: tuple[float, float] | None = None, batch_size: int = 1024,
                    generator: torch.Generator | None = None) -> float:
    """Accuracy under PGD-`steps` (margin loss by default, as in Rice et al. 2020)."""
    correct = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = pgd(model, xb, yb, eps=eps, step_size=step_size, steps=steps, loss=loss,
                    clamp=clamp, generator=generator)
        with torch.no_grad(), _eval_mode(model):
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / len(y)


def worst_case_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                       steps: int, restarts: int, losses: tuple[str, ...] = ("margin", "ce"),
                       clamp: tuple[float, float] | None = None,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per example, whether the model stays correct under every one of `restarts` random-start
    PGD-`steps` runs (step 2.5·eps/steps) on each loss in `losses` (CW margin and CE): the
    worst case over attacks and restarts per example. Returns {loss: correct [B]} and "all"."""
    with torch.no_grad(), _eval_mode(model):
        correct = model(x).argmax(-1) == y
    out = {}
    for loss in losses:
        held = correct.clone()
        for _ in range(restarts):
            x_adv = pgd(model, x, y, eps=eps, step_size=2.5 * eps / steps, steps=steps,
                        loss=loss, clamp=clamp, generator=generator)
            with torch.no_grad(), _eval_mode(model):
                held &= model(x_adv).argmax(-1) == y
        out[loss] = held
    out["all"] = torch.stack([out[loss] for loss in losses]).all(0)
    return out
