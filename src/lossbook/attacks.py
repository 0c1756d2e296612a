"""ℓ∞ attacks: FGSM, PGD (cross-entropy or margin loss), and the divergence-maximising PGD
inner loop used by TRADES and the smooth adversarial comp-sum loss."""

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
    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
        steps: int, loss: str = "ce", random_start: bool = True,
        clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """Projected gradient ascent on CE or margin loss inside the ℓ∞ ball of radius eps."""
    objective = {"ce": lambda z, t: F.cross_entropy(z, t, reduction="sum"),
                 "margin": lambda z, t: margin_loss(z, t).sum()}
    if loss not in objective:
        raise ValueError(f"unknown attack loss {loss!r}; valid: {', '.join(objective)}")
    with _eval_mode(model):
        x_adv = x.detach().clone()
        if random_start:
            x_adv = _project(x_adv + torch.empty_like(x).uniform_(-eps, eps), x, eps, clamp)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(objective[loss](model(x_adv), y), x_adv)
            x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps, clamp)
    return x_adv.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         clamp: tuple[float, float] | None = None) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, clamp=clamp)


def pgd_divergence(model: nn.Module, x: torch.Tensor,
                   divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                   eps: float, step_size: float, steps: int, init_std: float = 0.001,
                   clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """TRADES' inner maximisation: start at x + init_std·N(0, 1), ascend divergence(f(x'), f(x))
    with signed gradients, project on the ℓ∞ ball (official trades.py, `perturb_steps` loop)."""
    with _eval_mode(model):
        with torch.no_grad():
            reference = model(x)
        x_adv = x.detach() + init_std * torch.randn_like(x)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(divergence(model(x_adv), reference), x_adv)
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
                    clamp: tuple[float, float] | None = None, batch_size: int = 1024) -> float:
    """Accuracy under PGD-`steps` (margin loss by default, as in Rice et al. 2020)."""
    correct = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = pgd(model, xb, yb, eps=eps, step_size=step_size, steps=steps, loss=loss,
                    clamp=clamp)
        with torch.no_grad(), _eval_mode(model):
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / len(y)
