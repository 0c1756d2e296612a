"""Chapter 1 — comp-sum losses (Mao, Mohri & Zhong, ICML 2023): presets and runs.

Two kinds of runs, each a pure function of a JSON-able spec (so the run cache and the worker
pool can handle them): `loss_run` trains one model with one comp-sum loss, `adv_run` one
adversarial-training method at one trade-off weight.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.func import stack_module_state

from lossbook import attacks, batched, data, losses, models, train
from lossbook.presets import at_least, between, nonempty, one_of, positive


@dataclass(frozen=True)
class Config:
    # (B) loss comparison: τ grid, tasks, seeds
    taus: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 1.7, 2.0)
    tasks: tuple[str, ...] = ("mnist1d", "mnist1d_noisy", "gmm")
    seeds: int = 5
    noise_rate: float = 0.4
    mnist1d_samples: int = 5000
    gmm_classes: int = 100
    gmm_dim: int = 32
    gmm_train_per_class: int = 100
    gmm_noise: float = 1.5
    model: str = "mlp"
    hidden: tuple[int, ...] = (100, 100)
    width: int = 64
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    eval_every: int = 5
    # (B') class count: one mixture generator at several class counts, CE / GCE / MAE
    count_classes: tuple[int, ...] = (10, 30, 100)
    count_taus: tuple[float, ...] = (1.0, 1.7, 2.0)
    # (A) exact tabular bound check, and the tightness search in the GCE range
    tight_classes: tuple[int, ...] = (3, 10)
    tight_taus: tuple[float, ...] = (1.2, 1.5, 1.7)
    tab_inputs: int = 100
    tab_classes: tuple[int, ...] = (2, 10)
    tab_alpha: float = 1.0
    tab_steps: int = 400
    tab_inits: int = 4
    # (C) adversarial training
    adv_task: str = "mnist1d"
    adv_eps: float = 0.15
    adv_train_steps: int = 10
    adv_eval_steps: int = 50
    adv_eval_restarts: int = 3
    adv_contrast_steps: int = 20
    adv_epochs: int = 20
    adv_seeds: int = 5
    adv_tau: float = 1.0
    adv_rho: float = 1.0
    trades_betas: tuple[float, ...] = (1.0, 6.0)  # the TRADES paper's MNIST and CIFAR values
    advcs_nus: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    adv_val_size: int = 512
    adv_val_steps: int = 10
    adv_clamp: tuple[float, ...] = ()
    data_dir: str = ""
    download: bool = False


TASKS = ("mnist1d", "mnist1d_noisy", "gmm", "cifar10", "cifar100", "svhn")
CONSTRAINTS = {  # checked by lossbook.presets.resolve (with finite, ≥ 0 numbers everywhere)
    "tasks": (nonempty, one_of(*TASKS)), "adv_task": one_of(*TASKS), "taus": nonempty,
    "model": one_of("mlp", "cnn1d", "resnet18"), "optimizer": one_of("sgd", "adam", "adamw"),
    "schedule": one_of("constant", "cosine", "multistep", "step"), "noise_rate": between(0, 1),
    "tab_classes": at_least(2), "gmm_classes": at_least(2), "gmm_dim": positive,
    "gmm_train_per_class": positive, "hidden": positive, "width": positive,
    "tab_inputs": positive, "adv_val_size": positive, "count_classes": at_least(2),
    "tight_classes": at_least(3), "tight_taus": (nonempty, between(1, 2)),
    "adv_eval_restarts": positive, "adv_contrast_steps": positive,
}


PRESETS = {
    "smoke": Config(taus=(0.0, 1.0, 2.0), tasks=("mnist1d", "gmm"), seeds=1,
                    mnist1d_samples=1000, gmm_classes=20, gmm_train_per_class=20, epochs=2,
                    count_classes=(5, 20), count_taus=(1.0, 2.0), adv_eval_restarts=1,
                    tight_classes=(3,), tight_taus=(1.5,),
                    adv_contrast_steps=2,
                    eval_every=1, tab_classes=(2, 10), tab_inputs=20, tab_steps=40, tab_inits=1,
                    adv_epochs=1, adv_seeds=1, trades_betas=(1.0,), advcs_nus=(1.0,),
                    adv_train_steps=2, adv_eval_steps=3, adv_val_size=128, adv_val_steps=2),
    "book": Config(),
    # The paper's datasets and scale, for a GPU. Hyperparameters the paper text would fix are
    # not known to us (no official code, PDF tables unseen): these are the standard CIFAR
    # settings (ResNet-18, SGD + Nesterov, cosine); ε = 8/255 and early stopping on 1,024
    # held-out samples with PGD-40 on the margin loss follow the paper's reproducibility page.
    "full": Config(tasks=("cifar10", "cifar100", "svhn"), model="resnet18", hidden=(),
                   epochs=200, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4,
                   schedule="cosine", eval_every=10, seeds=3, adv_task="cifar10",
                   adv_eps=8 / 255, adv_train_steps=10, adv_epochs=100,
                   adv_seeds=1, adv_val_size=1024, adv_val_steps=40, adv_clamp=(0.0, 1.0),
                   count_classes=(),
                   download=True),
}

VISION_TASKS = ("cifar10", "cifar100", "svhn")


# --- data -------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def load_task(task: str, spec_key: tuple) -> data.Dataset:
    """The dataset behind a task name (cached per process; spec_key pins its settings)."""
    settings = dict(spec_key)
    if task in ("mnist1d", "mnist1d_noisy"):
        return data.mnist1d(num_samples=settings["mnist1d_samples"])
    if task == "gmm":
        return data.gaussian_mixture(settings["gmm_classes"], settings["gmm_dim"],
                                     settings["gmm_train_per_class"], 50, settings["gmm_noise"],
                                     seed=0)
    if task in VISION_TASKS:
        from pathlib import Path

        from lossbook import vision
        from lossbook.paths import data_dir

        root = Path(settings["data_dir"]) if settings["data_dir"] else data_dir()
        raw = vision.load_vision(task, root, download=settings["download"])
        return data.Dataset(raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"],
                            raw["num_classes"])
    raise ValueError(f"unknown task {task!r}; valid: mnist1d, mnist1d_noisy, gmm, "
                     f"{', '.join(VISION_TASKS)}")


DATA_KEYS = ("mnist1d_samples", "gmm_classes", "gmm_dim", "gmm_train_per_class", "gmm_noise",
             "data_dir", "download")


def task_data(spec: dict) -> data.Dataset:
    dataset = load_task(spec["task"], tuple((k, spec[k]) for k in DATA_KEYS))
    if spec["task"] == "mnist1d_noisy" and spec["noise_rate"] > 0:
        noisy = data.symmetric_noise(dataset.y_train, spec["noise_rate"], dataset.num_classes,
                                     seed=1000 + spec["seed"])
        dataset = data.Dataset(dataset.x_train, noisy, dataset.x_test, dataset.y_test,
                               dataset.num_classes)
    return dataset.to(spec["device"])


def build_model(spec: dict, dataset: data.Dataset) -> torch.nn.Module:
    torch.manual_seed(spec["seed"])
    if spec["task"] in VISION_TASKS:
        mean = dataset.x_train.mean((0, 2, 3))
        std = dataset.x_train.std((0, 2, 3))
        net = models.build(spec["model"], 0, dataset.num_classes, width=spec["width"])
        return torch.nn.Sequential(models.Normalize(mean, std), net).to(spec["device"])
    return models.build(spec["model"], dataset.x_train.shape[1], dataset.num_classes,
                        hidden=spec["hidden"]).to(spec["device"])


def augmentation(spec: dict):
    if spec["task"] in ("cifar10", "cifar100"):
        from lossbook import vision

        return lambda x, g: vision.random_crop_flip(x, generator=g)
    return None


TRAIN_KEYS = ("model", "hidden", "width", "epochs", "batch_size", "optimizer", "lr", "momentum",
              "weight_decay", "schedule", "eval_every")


def base_spec(cfg: Config, task: str, seed: int, device: str) -> dict:
    spec = {"task": task, "seed": seed, "device": device, "noise_rate": cfg.noise_rate}
    spec.update({k: getattr(cfg, k) for k in DATA_KEYS + TRAIN_KEYS})
    spec["hidden"] = list(cfg.hidden)
    return spec


# --- (B) loss comparison ----------------------------------------------------------------------

def loss_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    return [{**base_spec(cfg, task, seed + s, device), "tau": tau}
            for task in cfg.tasks for tau in cfg.taus for s in range(cfg.seeds)]


def count_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    """The class-count runs: one mixture generator (class means drawn first, so the 10-class
    problem's means are the 100-class problem's first ten) at each of `count_classes`, with the
    same samples per class, noise and training; at `gmm_classes` they equal `loss_specs`' runs
    (the run cache then shares them)."""
    return [{**base_spec(cfg, "gmm", seed + s, device), "gmm_classes": n, "tau": tau}
            for n in cfg.count_classes for tau in cfg.count_taus for s in range(cfg.seeds)]


def loss_fit_kwargs(spec: dict) -> dict:
    return dict(epochs=spec["epochs"], batch_size=spec["batch_size"],
                optimizer=spec["optimizer"], lr=spec["lr"], momentum=spec["momentum"],
                weight_decay=spec["weight_decay"], nesterov=spec["optimizer"] == "sgd",
                schedule=spec["schedule"], augment=augmentation(spec),
                eval_every=spec["eval_every"])


def loss_summary(result: dict) -> dict:
    return {"test_acc": result["final"]["test_acc"], "train_acc": result["final"]["train_acc"],
            "history": result["history"]}


def loss_run(spec: dict) -> dict:
    """Train one model with the comp-sum loss ℓ_τ; return its learning curve and accuracies."""
    dataset = task_data(spec)
    model = build_model(spec, dataset)
    tau = spec["tau"]
    result = train.fit(
        model, dataset, train.logit_objective(lambda z, y: losses.comp_sum_loss(z, y, tau)),
        seed=spec["seed"], **loss_fit_kwargs(spec))
    return loss_summary(result)


def loss_runs(specs: list[dict]) -> list[dict]:
    """`loss_run` for seed replicates (specs equal but for the seed), trained as one stacked
    model (`lossbook.batched`; equal to `loss_run` per spec to float tolerance). Models with
    BatchNorm (the ResNet of the `full` preset) run one by one."""
    datasets = [task_data(spec) for spec in specs]
    nets = [build_model(spec, dataset) for spec, dataset in zip(specs, datasets)]
    if not all(batched.batchable(net) for net in nets):
        return [loss_run(spec) for spec in specs]
    tau = specs[0]["tau"]
    results = batched.fit_batched(nets, datasets, lambda z, y: losses.comp_sum_loss(z, y, tau),
                                  seeds=[spec["seed"] for spec in specs],
                                  **loss_fit_kwargs(specs[0]))
    return [loss_summary(result) for result in results]


loss_run.batched = loss_runs  # cache.sweep trains seed replicates together


# --- (C) adversarial training -----------------------------------------------------------------

ADV_METHODS = ("standard", "pgd_at", "trades", "adv_comp_sum")


def adv_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    settings = [("standard", 0.0), ("pgd_at", 0.0)]
    settings += [("trades", b) for b in cfg.trades_betas]
    settings += [("adv_comp_sum", nu) for nu in cfg.advcs_nus]
    specs = []
    for method, weight in settings:
        for s in range(cfg.adv_seeds):
            spec = base_spec(cfg, cfg.adv_task, seed + s, device)
            spec.update(method=method, weight=weight, tau=cfg.adv_tau, rho=cfg.adv_rho,
                        eps=cfg.adv_eps, train_steps=cfg.adv_train_steps,
                        eval_steps=cfg.adv_eval_steps, eval_restarts=cfg.adv_eval_restarts,
                        contrast_steps=cfg.adv_contrast_steps, epochs=cfg.adv_epochs,
                        val_size=cfg.adv_val_size, val_steps=cfg.adv_val_steps,
                        clamp=list(cfg.adv_clamp))
            specs.append(spec)
    return specs


def adv_losses(spec: dict, f, x: torch.Tensor, y: torch.Tensor, generators: list) -> torch.Tensor:
    """The training loss of one adversarial method for M stacked models, one per model [M].

    `f` maps inputs [M, B, ...] to logits [M, B, C] (M = 1: one model, see `adv_run`); the
    inner attacks take steps of ε/4 from random starts drawn from `generators` (one per model).
    PGD-AT: CE at the PGD (CE) point; TRADES: CE + β·KL at the KL-maximising point (official
    trades.py); ADV-COMP-SUM: ℓ_τ(h/ρ) + ν·‖Δ_h(x′) − Δ_h(x)‖₂ at the point maximising the
    margin shift — the same inner loop as TRADES, only the divergence differs.
    """
    method, weight = spec["method"], spec["weight"]
    if method not in ADV_METHODS:
        raise ValueError(f"unknown adversarial method {method!r}; valid: {', '.join(ADV_METHODS)}")
    attack = dict(eps=spec["eps"], step_size=spec["eps"] / 4, steps=spec["train_steps"],
                  clamp=tuple(spec["clamp"]) or None, generator=generators)
    ce = torch.nn.functional.cross_entropy
    g = getattr(f, "frozen", f)  # the attack needs input gradients only
    if method == "standard":
        z = f(x)
        return torch.stack([ce(z[m], y[m]) for m in range(len(z))])
    if method == "pgd_at":
        z_adv = f(attacks.pgd(g, x, y, loss="ce", **attack))
        return torch.stack([ce(z_adv[m], y[m]) for m in range(len(z_adv))])
    if method == "trades":
        x_adv = attacks.pgd_divergence(g, x, losses.trades_kl, **attack)
        z, z_adv = f(x), f(x_adv)
        return torch.stack([losses.trades_loss(z[m], z_adv[m], y[m], beta=weight)
                            for m in range(len(z))])
    flat_y = y.reshape(-1)
    x_adv = attacks.pgd_divergence(
        g, x, lambda z_adv, z: losses.margin_shift(z_adv, z, flat_y).sum(), **attack)
    z, z_adv = f(x), f(x_adv)
    return torch.stack([losses.smooth_adv_comp_sum_loss(z[m], z_adv[m], y[m], spec["tau"],
                                                        nu=weight, rho=spec["rho"])
                        for m in range(len(z))])


class StackOfOne(torch.nn.Module):
    """A model seen as a stack of one: inputs [1, B, ...] → logits [1, B, C]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[0])[None]


def adv_split(spec: dict) -> tuple[data.Dataset, torch.Tensor, torch.Tensor]:
    """The training set minus `val_size` held-out examples (a per-seed permutation), and those."""
    full = task_data(spec)
    g = torch.Generator().manual_seed(spec["seed"])
    order = torch.randperm(len(full.y_train), generator=g).to(full.y_train.device)
    val, fit_idx = order[:spec["val_size"]], order[spec["val_size"]:]
    return (data.Dataset(full.x_train[fit_idx], full.y_train[fit_idx], full.x_test,
                         full.y_test, full.num_classes), full.x_train[val], full.y_train[val])


def attack_generator(spec: dict, offset: int = 0) -> torch.Generator:
    """The generator of a run's attack random starts (training and validation: offset 0; the
    final evaluation: its own stream, so that it does not depend on the training length)."""
    return torch.Generator(device=spec["device"]).manual_seed(spec["seed"] + offset)


def adv_evaluate(spec: dict, dataset: data.Dataset, x_val, y_val, generator):
    """Per-epoch evaluation: PGD (margin loss) accuracy on the held-out examples — the early
    stopping criterion of the paper's protocol (Rice et al., 2020) — and clean test accuracy."""
    eps, steps = spec["eps"], spec["val_steps"]

    def evaluate(model: torch.nn.Module) -> dict:
        return {"val_robust": attacks.robust_accuracy(
                    model, x_val, y_val, eps=eps, step_size=2.5 * eps / steps, steps=steps,
                    loss="margin", clamp=tuple(spec["clamp"]) or None, generator=generator),
                "test_acc": attacks.accuracy(model, dataset.x_test, dataset.y_test)}
    return evaluate


def adv_fit_kwargs(spec: dict) -> dict:
    return dict(epochs=spec["epochs"], batch_size=spec["batch_size"],
                optimizer=spec["optimizer"], lr=spec["lr"], momentum=spec["momentum"],
                weight_decay=spec["weight_decay"], nesterov=spec["optimizer"] == "sgd",
                schedule=spec["schedule"], augment=augmentation(spec),
                select=None if spec["method"] == "standard" else "val_robust")


EVAL_OFFSET = 7919  # seed offset of the final evaluation's attack generator


def adv_final(f, nets: list[torch.nn.Module], datasets: list[data.Dataset], specs: list[dict],
              results: list[dict]) -> list[dict]:
    """Test accuracy of M trained models (stacked in `f`, as in `adv_losses`): clean; under
    the evaluation attack — PGD-`eval_steps` (step 2.5ε/steps) with `eval_restarts` random
    restarts on the CW margin loss and on CE, an example counting as robust only if it
    survives all of them (worst case per example); and, as the labelled contrast of the
    earlier evaluation, one PGD-`contrast_steps` run on the margin loss."""
    spec = specs[0]
    eps, clamp = spec["eps"], tuple(spec["clamp"]) or None
    gens = [attack_generator(s, EVAL_OFFSET) for s in specs]
    x = torch.stack([d.x_test for d in datasets])
    y = torch.stack([d.y_test for d in datasets])
    worst = attacks.worst_case_correct(f, x, y, eps=eps, steps=spec["eval_steps"],
                                       restarts=spec["eval_restarts"], clamp=clamp,
                                       generator=gens)
    steps = spec["contrast_steps"]
    x_adv = attacks.pgd(f, x, y, eps=eps, step_size=2.5 * eps / steps, steps=steps,
                        loss="margin", clamp=clamp, generator=gens)
    with torch.no_grad(), attacks._eval_mode(f):
        contrast = f(x_adv).argmax(-1) == y
    n = y.shape[1]
    return [{"clean_acc": attacks.accuracy(net, d.x_test, d.y_test),
             "robust_acc": int(worst["all"][m].sum()) / n,
             "robust_margin": int(worst["margin"][m].sum()) / n,
             "robust_ce": int(worst["ce"][m].sum()) / n,
             "robust_contrast": int(contrast[m].sum()) / n,
             "selected": result["selected"], "history": result["history"]}
            for m, (net, d, result) in enumerate(zip(nets, datasets, results))]


def adv_run(spec: dict) -> dict:
    """Adversarial training with early stopping on held-out robust accuracy (PGD, margin loss).

    Standard training is not early-stopped (its robust accuracy is near zero at every epoch).
    """
    dataset, x_val, y_val = adv_split(spec)
    model = build_model(spec, dataset)
    g = attack_generator(spec)
    one = StackOfOne(model)
    result = train.fit(
        model, dataset, lambda m, x, y: adv_losses(spec, one, x[None], y[None], [g])[0],
        seed=spec["seed"], evaluate=adv_evaluate(spec, dataset, x_val, y_val, g),
        **adv_fit_kwargs(spec))
    return adv_final(one, [model], [dataset], [spec], [result])[0]


def adv_runs(specs: list[dict]) -> list[dict]:
    """`adv_run` for seed replicates, trained as one stacked model: the inner attacks run on
    all models at once through a stacked forward pass (`lossbook.batched.exact_mlp_forward`;
    per model and per example, each model with its own random starts), every model keeps its
    own validation-PGD early stopping, and the final attacks run stacked too. Equal to
    `adv_run` per spec bit for bit for the MLP on a CPU (tests/test_compsum_chapter.py); other
    models run one by one."""
    splits = [adv_split(spec) for spec in specs]
    nets = [build_model(spec, split[0]) for spec, split in zip(specs, splits)]
    forward = batched.exact_mlp_forward(copy.deepcopy(nets[0]).to("meta"))
    if forward is None or not all(batched.batchable(net) for net in nets):
        return [adv_run(spec) for spec in specs]
    gens = [attack_generator(spec) for spec in specs]
    datasets = [split[0] for split in splits]
    evaluate = [adv_evaluate(spec, d, xv, yv, g)
                for spec, (d, xv, yv), g in zip(specs, splits, gens)]
    results = batched.fit_batched(
        nets, datasets, None, seeds=[spec["seed"] for spec in specs],
        objective=lambda f, x, y: adv_losses(specs[0], f, x, y, gens), evaluate=evaluate,
        stacked_forward=batched.exact_mlp_forward, **adv_fit_kwargs(specs[0]))
    params = {k: v.detach() for k, v in stack_module_state(nets)[0].items()}
    return adv_final(lambda x: forward(params, x), nets, datasets, specs, results)


adv_run.batched = adv_runs  # cache.sweep trains seed replicates together


# --- summaries --------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group(specs: list[dict], results: list[dict], keys: tuple[str, ...], metric: str) -> dict:
    """{(spec[k] for k in keys): [metric over seeds]}, in first-seen order."""
    groups: dict[tuple, list[float]] = {}
    for spec, result in zip(specs, results):
        groups.setdefault(tuple(spec[k] for k in keys), []).append(result[metric])
    return groups
