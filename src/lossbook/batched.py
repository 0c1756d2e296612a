"""`fit` for M models at once: seed replicates trained as one stacked model.

M models of one architecture (each built from its own seed, as for `train.fit`) are stacked
with `torch.func.stack_module_state` and run as one: the MLP and the 1-D CNN through batched
matmuls and grouped convolutions (`grouped_forward`), other models through
`vmap(functional_call)`. Each model
keeps its own data (its own training set if the seeds draw different ones), its own shuffling
generator seeded like `fit`'s, its own loss and history; the per-model losses are summed, so each
model's gradient is its own. SGD (with momentum, Nesterov, weight decay) and Adam act elementwise
on the stacked tensors, so optimizer state is per model too, and the learning-rate schedule is
shared because the replicates share every hyperparameter. The result equals `train.fit` run once
per seed (`tests/test_batched.py`: bit for bit on a CPU for the MLP and the 1-D CNN; to float
tolerance otherwise); only the speed differs. Unlike `fit`, it does not reseed torch's global
generator (nothing here draws from it).

Not batched (callers fall back to `train.fit`, one model at a time): models with BatchNorm
(running statistics are updated in place, which `vmap` cannot do) or dropout (its random masks
would not match `fit`'s). Objectives that need more than the logits of the batch (adversarial
training) are given as a stacked `objective` (see `fit_batched`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lossbook.attacks import accuracy
from lossbook.data import Dataset
from lossbook.margins import NormedLinear
from lossbook.models import CNN1D
from lossbook.train import lr_factor, make_optimizer

LogitLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StackedObjective = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor],
                            torch.Tensor]
UNBATCHABLE = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


def batchable(model: nn.Module) -> bool:
    """Whether `fit_batched` reproduces `fit` for this architecture (no BatchNorm, no dropout)."""
    return not any(isinstance(m, UNBATCHABLE) for m in model.modules())


ROW_LAYERS = (nn.Linear, nn.ReLU, NormedLinear)
CONV_LAYERS = (nn.Conv1d, nn.ReLU, nn.Flatten)


def grouped_forward(model: nn.Module) -> Callable | None:
    """The forward pass of M stacked copies of `model`, f(params, x [M, B, ...]) -> [M, B, C],
    for an MLP (a Sequential of Linear/ReLU) or a `CNN1D` (its head Linear or NormedLinear);
    None for other models, which go through `vmap`.

    Linear layers are batched matmuls whose weight gradient is one `mm` per model
    (`_StackedLinear`): a batched `bmm` weight gradient rounds differently from `nn.Linear`'s on
    some CPUs (seen with AVX-512), so only this form gives `fit`'s numbers bit for bit. The
    convolutions run once per model: one grouped convolution (groups=M) over all models is
    faster, but rounds differently, and over a long SGD run the difference grows until the models
    part from `fit`'s (and then a seed's result would depend on which seeds shared its stack).
    """
    def plain(conv: nn.Module) -> bool:
        return not isinstance(conv, nn.Conv1d) or (
            conv.groups == 1 and conv.padding_mode == "zeros")

    mlp = isinstance(model, nn.Sequential) and all(type(m) in ROW_LAYERS for m in model)
    cnn = (type(model) is CNN1D and type(model.head) in ROW_LAYERS
           and all(type(m) in CONV_LAYERS and plain(m) for m in model.features)
           and [type(m) for m in model.features].index(nn.Flatten) == len(model.features) - 1)
    if not (mlp or cnn):
        return None

    def rows(layer: nn.Module, prefix: str, p: dict, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.ReLU):
            return torch.relu(x)
        weight, bias = p[prefix + "weight"], p.get(prefix + "bias")
        if isinstance(layer, NormedLinear):
            return torch.bmm(F.normalize(x, dim=2), F.normalize(weight, dim=1))
        return _StackedLinear.apply(x, weight, bias)

    def forward(p: dict, x: torch.Tensor) -> torch.Tensor:
        if mlp:
            for name, layer in model.named_children():
                x = rows(layer, f"{name}.", p, x)
            return x
        x = x.unsqueeze(2)  # [M, B, 1, L], as CNN1D's x.unsqueeze(1)
        for name, layer in model.features.named_children():
            if isinstance(layer, nn.Conv1d):
                weight, bias = p[f"features.{name}.weight"], p.get(f"features.{name}.bias")
                x = torch.stack([F.conv1d(x[m], weight[m], None if bias is None else bias[m],
                                          layer.stride, layer.padding, layer.dilation)
                                 for m in range(len(x))])
            elif isinstance(layer, nn.ReLU):
                x = torch.relu(x)
        x = x.flatten(2)  # Flatten: [M, B, C·L]
        return rows(model.head, "head.", p, x)

    return forward


class _StackedLinear(torch.autograd.Function):
    """y[m] = x[m] W[m]ᵀ + b[m] for stacked models, with the backward of `nn.Linear` per model:
    the weight gradient as one `mm` per model (a batched `bmm` rounds it differently)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = (torch.stack([grad[m].t().mm(x[m]) for m in range(len(grad))])
                  if ctx.needs_input_grad[1] else None)
        grad_b = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def exact_mlp_forward(model: nn.Module) -> Callable | None:
    """`grouped_forward` for an MLP (a Sequential of Linear/ReLU) only, None for other models:
    its gradients with respect to the weights *and* the inputs equal `nn.Linear`'s per model bit
    for bit on a CPU, which adversarial training needs (the inputs' gradient signs steer the
    attack)."""
    if not (isinstance(model, nn.Sequential)
            and all(type(m) in (nn.Linear, nn.ReLU) for m in model)):
        return None
    return grouped_forward(model)


def fit_batched(models: list[nn.Module], datasets: list[Dataset], loss_fn: LogitLoss, *,
                seeds: list[int], batch_size: int, lr: float, epochs: int | None = None,
                steps: int | None = None, optimizer: str = "adam", momentum: float = 0.9,
                weight_decay: float = 0.0, nesterov: bool = False, schedule: str = "constant",
                milestones=(0.5, 0.75), gamma: float = 0.1, decay_every: int = 1,
                augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                evaluate: list[Callable[[nn.Module], dict]] | None = None, eval_every: int = 1,
                select: str | None = None, progress: bool = False,
                desc: str = "train", objective: StackedObjective | None = None,
                stacked_forward: Callable[[nn.Module], Callable | None] | None = None
                ) -> list[dict]:
    """`train.fit(models[m], datasets[m], logit_objective(loss_fn), seed=seeds[m], ...)` for
    every m, trained together; the models are updated in place and their results returned.

    The datasets must have equal shapes (the same training-set size); `evaluate`, if given,
    holds one function per model (called on that model, as `fit` calls its `evaluate`).
    `objective(forward, x [M, B, ...], y [M, B]) -> [M]` replaces `loss_fn` for objectives that
    need more than the logits of the batch (adversarial training: `forward` maps stacked inputs
    to stacked logits, so an attack can run on all M models at once; `forward.frozen` is the
    same on detached weights, for the attack); it must give model m the loss that `fit`'s
    objective gives it alone (`loss_fn` is then unused and may be None).
    `stacked_forward(model)` chooses the stacked forward pass (default `grouped_forward`; e.g.
    `exact_mlp_forward`), falling back to `vmap` where it returns None.
    """
    from tqdm.auto import tqdm

    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    count = len(models)
    if not count or len(datasets) != count or len(seeds) != count:
        raise ValueError(f"need one dataset and one seed per model: {count} models, "
                         f"{len(datasets)} datasets, {len(seeds)} seeds")
    if not all(batchable(m) for m in models):
        raise ValueError("fit_batched cannot reproduce fit for models with BatchNorm or dropout;"
                         " train them with train.fit")
    if len({tuple(d.x_train.shape) for d in datasets}) != 1:
        raise ValueError("fit_batched needs training sets of one shape")
    device = datasets[0].x_train.device
    n = len(datasets[0].y_train)
    per_epoch = max(1, n // batch_size)
    total = steps if steps is not None else epochs * per_epoch
    evaluate = evaluate or [
        (lambda m, d=d: {"train_acc": accuracy(m, d.x_train, d.y_train),
                         "test_acc": accuracy(m, d.x_test, d.y_test)}) for d in datasets]
    x_train = torch.stack([d.x_train for d in datasets])
    y_train = torch.stack([d.y_train for d in datasets])
    rows = torch.arange(count, device=device)[:, None]
    shuffles = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    forward = (stacked_forward or grouped_forward)(base) or (lambda p, x: vmap(
        lambda pm, bm, xm: functional_call(base, (pm, bm), (xm,)))(p, buffers, x))

    def losses_of(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if objective is not None:
            return objective(stacked_model, xb, yb)
        z = forward(params, xb)
        # one loss call per model, as `fit` makes it (a vmapped loss was slower on a CPU)
        return torch.stack([loss_fn(z[m], yb[m]) for m in range(count)])

    def stacked_model(x: torch.Tensor) -> torch.Tensor:
        return forward(params, x)

    # the same forward on weights cut from the graph: for an attack, which needs gradients with
    # respect to the inputs only (a custom backward cannot tell which gradients are wanted)
    stacked_model.frozen = lambda x: forward({k: v.detach() for k, v in params.items()}, x)

    opt = make_optimizer(list(params.values()), optimizer, lr, momentum, weight_decay, nesterov)

    def unstack(m: int) -> nn.Module:
        """Write model m's current weights from the stack into `models[m]`."""
        with torch.no_grad():
            for name, value in models[m].named_parameters():
                value.copy_(params[name][m])
            for name, value in models[m].named_buffers():
                value.copy_(buffers[name][m])
        return models[m]

    histories: list[list[dict]] = [[] for _ in range(count)]
    best, best_state = [-math.inf] * count, [None] * count
    step, epoch, started = 0, 0, time.time()
    bar = tqdm(total=total, desc=desc, disable=not progress, mininterval=2.0)
    while step < total:
        order = torch.stack([torch.randperm(n, generator=g, device=device) for g in shuffles])
        for i in range(per_epoch):
            if step >= total:
                break
            idx = order[:, i * batch_size:(i + 1) * batch_size]
            xb, yb = x_train[rows, idx], y_train[rows, idx]
            if augment is not None:
                xb = torch.stack([augment(xb[m], shuffles[m]) for m in range(count)])
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(schedule, step, total, milestones, gamma,
                                             decay_every * per_epoch)
            losses = losses_of(xb, yb)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            step += 1
            bar.update()
        epoch += 1
        if epoch % eval_every and step < total:
            continue
        last = losses.tolist()
        for m in range(count):
            model = unstack(m)
            model.train()
            record = {"epoch": epoch, "step": step, "loss": last[m],
                      "time_s": round(time.time() - started, 2), **evaluate[m](model)}
            histories[m].append(record)
            if select is not None and record[select] > best[m]:
                best[m], best_state[m] = record[select], copy.deepcopy(model.state_dict())
    bar.close()
    results = []
    for m in range(count):
        unstack(m)
        if best_state[m] is not None:
            models[m].load_state_dict(best_state[m])
        results.append({"history": histories[m], "final": histories[m][-1],
                        "selected": best[m] if select is not None else None})
    return results
