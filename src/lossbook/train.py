"""The one fit loop every chapter uses: in-memory tensors, explicit device, seeded shuffling."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from lossbook.attacks import accuracy
from lossbook.data import Dataset

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def logit_objective(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Objective:
    """Turn a loss on (logits, y) into an objective on (model, x, y)."""
    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(x), y)
    return objective


def make_optimizer(params, name: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, adam, adamw")


def lr_factor(schedule: str, step: int, total: int, milestones=(0.5, 0.75), gamma: float = 0.1,
              steps_per_decay: int = 1) -> float:
    """Learning-rate multiplier at `step` of `total`: constant; cosine; multistep (× gamma at
    each milestone, given as fractions of training); step (× gamma every `steps_per_decay`)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    if schedule == "multistep":
        return gamma ** sum(step >= m * total for m in milestones)
    if schedule == "step":
        return gamma ** (step // steps_per_decay)
    raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine, multistep, step")


def fit(model: nn.Module, data: Dataset, objective: Objective, *, batch_size: int,
        lr: float, epochs: int | None = None, steps: int | None = None,
        optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0,
        nesterov: bool = False, schedule: str = "constant", milestones=(0.5, 0.75),
        gamma: float = 0.1, decay_every: int = 1, seed: int = 0,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        evaluate: Callable[[nn.Module], dict] | None = None, eval_every: int = 1,
        select: str | None = None, progress: bool = False, desc: str = "train") -> dict:
    """Train `model` in place on `data` (already on the model's device) and return its history.

    Give either `epochs` or `steps` (fixed optimisation steps, for subset comparisons). The
    learning rate follows `schedule` (see `lr_factor`; `decay_every` is in epochs). After
    every `eval_every` epochs and at the end, `evaluate(model)` (default: train/test accuracy) is
    logged; with `select`, the
    weights with the best value of that metric are restored at the end (early stopping).
    """
    from tqdm.auto import tqdm

    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    device = data.x_train.device
    n = len(data.y_train)
    per_epoch = max(1, n // batch_size)  # drop the last partial batch
    total = steps if steps is not None else epochs * per_epoch
    evaluate = evaluate or (lambda m: {"train_acc": accuracy(m, data.x_train, data.y_train),
                                       "test_acc": accuracy(m, data.x_test, data.y_test)})
    torch.manual_seed(seed)
    shuffle = torch.Generator(device=device).manual_seed(seed)
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay, nesterov)
    history, best, best_state = [], -math.inf, None
    step, epoch, started = 0, 0, time.time()
    bar = tqdm(total=total, desc=desc, disable=not progress, mininterval=2.0)
    while step < total:
        order = torch.randperm(n, generator=shuffle, device=device)
        model.train()
        for i in range(per_epoch):
            if step >= total:
                break
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if augment is not None:
                xb = augment(xb, shuffle)
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(schedule, step, total, milestones, gamma,
                                             decay_every * per_epoch)
            loss = objective(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update()
        epoch += 1
        if epoch % eval_every and step < total:
            continue
        record = {"epoch": epoch, "step": step, "loss": loss.item(),
                  "time_s": round(time.time() - started, 2), **evaluate(model)}
        history.append(record)
        if select is not None and record[select] > best:
            best, best_state = record[select], copy.deepcopy(model.state_dict())
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "final": history[-1],
            "selected": best if select is not None else None}
