"""Chapter 6 — LDAM loss and deferred re-weighting (Cao et al., NeurIPS 2019): presets and runs.

One kind of run: `run(spec)` trains one model on a long-tailed training set with one method
(a loss — cross-entropy or LDAM — and a re-balancing rule — none, re-weighting, re-sampling or
DRW) and evaluates it on a class-balanced test set. It is a pure function of a JSON-able spec,
so the run cache and the worker pool can handle it.

**The schedule.** The official code (`cifar_train.py`) sets the learning rate per epoch — linear
warm-up over 5 epochs, ×0.01 after epoch 160 and again after 180 — and switches the DRW class
weights at epoch 160. `lossbook.train.fit` has one learning rate (or a fixed schedule) and one
objective per call, so a run is a sequence of `fit` calls, one per *phase*: a maximal range of
epochs with constant learning rate and constant class weights (`phases`). This reproduces the
official per-epoch schedule exactly; the differences are that each `fit` call builds a fresh
SGD optimizer, so the momentum buffer restarts at each phase boundary (after each warm-up epoch
and at each learning-rate drop), and that `fit` drops the last partial batch of an epoch.

**Re-sampling** (the official `ImbalancedDatasetSampler`: each example drawn with probability ∝
its class's effective-number weight, with replacement) is an objective that ignores the batch
`fit` hands it and draws its own batch of the same size (`resampled`): every batch is then i.i.d.
from the re-sampling distribution, as with the official sampler, without storing a resampled
copy of the data.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from lossbook import batched, data, margins, models, train
from lossbook.presets import at_least, between, nonempty, one_of, positive

# method → (loss, re-balancing rule); the names of Cao et al. (ERM = CE). Losses: "ce" (linear
# head), and on the cosine classifier with scale s: "ldam" (Δ_j ∝ n_j^(−1/4)), and two controls
# that are not the paper's methods — "cos" (cosine-classifier CE, Δ = 0) and "ldam_uniform" (one
# margin for every class, equal to the mean of the LDAM margins Δ_j over the classes).
METHODS = {
    "ce": ("ce", "none"),
    "ce_rw": ("ce", "reweight"),
    "ce_rs": ("ce", "resample"),
    "ce_drw": ("ce", "drw"),
    "ldam": ("ldam", "none"),
    "ldam_drw": ("ldam", "drw"),
    "cos": ("cos", "none"),
    "cos_drw": ("cos", "drw"),
    "ldam_uni": ("ldam_uniform", "none"),
    "ldam_uni_drw": ("ldam_uniform", "drw"),
}
METHOD_LABELS = {"ce": "CE", "ce_rw": "CE-RW", "ce_rs": "CE-RS", "ce_drw": "CE-DRW",
                 "ldam": "LDAM", "ldam_drw": "LDAM-DRW", "cos": "Cos-CE", "cos_drw": "Cos-CE-DRW",
                 "ldam_uni": "LDAM-uniform", "ldam_uni_drw": "LDAM-uniform-DRW"}
PAPER_METHODS = ("ce", "ce_rw", "ce_rs", "ce_drw", "ldam", "ldam_drw")
CONTROLS = ("cos", "cos_drw", "ldam_uni", "ldam_uni_drw")
VISION_TASKS = ("cifar10", "cifar100")
# official `cifar_train.py` transforms.Normalize constants
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class Config:
    # data: long-tailed training set n_c = n_max · ρ^(−c/(C−1)), class-balanced test set
    tasks: tuple[str, ...] = ("mnist1d",)
    ratios: tuple[float, ...] = (10.0, 100.0)
    profile: str = "exp"
    max_per_class: int = 500  # n_max; 0 = the smallest class of the full training set
    mnist1d_samples: int = 10000
    # which class gets which count: a permutation drawn from the seed (True), or class c gets
    # the c-th largest count, as in the official CIFAR-LT (False)
    permute_classes: bool = True
    # MNIST-1D augmentation, the analogue of the official random crop (padding 4): a random
    # shift by up to `shift` samples (zero padding) and Gaussian noise of std `noise` (the
    # signals are standardised), drawn per batch; 0 and 0 = none
    shift: int = 4
    noise: float = 0.1
    # methods and repetitions (re-sampling, a context baseline, only at `smoke` and `full`: it
    # did not fit in the `book` budget)
    methods: tuple[str, ...] = ("ce", "ce_rw", "ce_drw", "ldam", "ldam_drw", "cos", "ldam_uni",
                                "ldam_uni_drw")
    seeds: int = 5
    # model
    model: str = "cnn1d"
    channels: int = 32
    # LDAM and DRW (official defaults: max_m = 0.5, s = 30, β = 0.9999)
    max_margin: float = 0.5
    scale: float = 30.0
    beta: float = 0.9999
    drw_epoch: int = 48
    # optimisation (official: SGD 0.1, momentum 0.9, wd 2e-4, batch 128, 200 epochs,
    # warm-up 5, ×0.01 at 160 and 180; `book` scales the epochs by 0.3)
    epochs: int = 60
    warmup_epochs: int = 2
    milestones: tuple[int, ...] = (48, 54)
    lr_decay: float = 0.01
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    eval_every: int = 10
    data_dir: str = ""
    download: bool = False


CONSTRAINTS = {  # checked by lossbook.presets.resolve (with finite, ≥ 0 numbers everywhere)
    "tasks": (nonempty, one_of("mnist1d", *VISION_TASKS)), "ratios": (nonempty, at_least(1)),
    "profile": one_of("exp", "step"), "methods": (nonempty, one_of(*METHODS)),
    "model": one_of("cnn1d", "resnet32"), "beta": between(0, 0.99999999), "scale": positive,
    "channels": positive, "lr_decay": positive, "max_margin": positive,
}


PRESETS = {
    "smoke": Config(methods=tuple(METHODS), seeds=1, mnist1d_samples=2000, max_per_class=100,
                    channels=16, epochs=4, warmup_epochs=1, milestones=(2, 3), drw_epoch=2,
                    eval_every=2),
    "book": Config(),
    # The paper's CIFAR-LT protocol (Cao et al. 2019, §4.1 and the official `cifar_train.py`):
    # ResNet-32, 200 epochs, batch 128, SGD 0.1 (momentum 0.9, weight decay 2e-4), linear
    # warm-up over 5 epochs, lr ×0.01 at epochs 160 and 180, DRW switch at 160, random crop
    # (padding 4) and horizontal flip; n_max = 5,000 (CIFAR-10) / 500 (CIFAR-100).
    "full": Config(tasks=VISION_TASKS, ratios=(100.0, 10.0), max_per_class=0,
                   permute_classes=False, methods=tuple(METHODS), seeds=1,
                   model="resnet32", epochs=200, warmup_epochs=5, milestones=(160, 180),
                   drw_epoch=160, eval_every=10, download=True),
}


# --- data -------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def base_data(task: str, mnist1d_samples: int, data_dir: str, download: bool) -> data.Dataset:
    """The full (balanced) dataset behind a task name, on the CPU (cached per process)."""
    if task == "mnist1d":
        return data.mnist1d(num_samples=mnist1d_samples)
    if task in VISION_TASKS:
        from pathlib import Path

        from lossbook import vision
        from lossbook.paths import data_dir as default_data_dir

        root = Path(data_dir) if data_dir else default_data_dir()
        raw = vision.load_vision(task, root, download=download)
        return data.Dataset(raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"],
                            raw["num_classes"])
    raise ValueError(f"unknown task {task!r}; valid: mnist1d, {', '.join(VISION_TASKS)}")


def class_order(spec: dict, num_classes: int) -> list[int]:
    """`order[r]` = the original class that gets the r-th largest count: drawn from the run's
    seed with `permute_classes`, else the identity (class 0 is the head, as in CIFAR-LT)."""
    if not spec["permute_classes"]:
        return list(range(num_classes))
    g = torch.Generator().manual_seed(7919 * spec["seed"] + 17)
    return torch.randperm(num_classes, generator=g).tolist()


def long_tail_data(spec: dict) -> data.Dataset:
    """The long-tailed training subset (drawn with the run's seed) and a balanced test set.

    Labels are *count ranks*: label r is the original class `class_order(spec)[r]`, which gets
    the r-th largest count (label 0 the head, label k−1 the tail) — so every seed's training
    set has the same per-label counts (and one LDAM margin vector), while which digit is the
    tail changes with the seed. The test set keeps, of every class, as many examples as its
    smallest class has (a fixed draw), relabelled alike: its plain accuracy is the balanced
    accuracy.
    """
    full = base_data(spec["task"], spec["mnist1d_samples"], spec["data_dir"], spec["download"])
    k = full.num_classes
    n_max = spec["max_per_class"] or min(data.class_counts(full.y_train, k))
    counts = data.long_tail_counts(n_max, k, spec["ratio"], spec["profile"])
    rank = torch.empty(k, dtype=torch.long)
    rank[torch.tensor(class_order(spec, k))] = torch.arange(k)
    y_train, y_test = rank[full.y_train.cpu()], rank[full.y_test.cpu()]
    train_idx = data.class_subset_indices(y_train, counts, seed=spec["seed"])
    per_class_test = min(data.class_counts(y_test, k))
    test_idx = data.class_subset_indices(y_test, [per_class_test] * k, seed=0)
    return data.Dataset(full.x_train[train_idx], y_train[train_idx].to(full.y_train.device),
                        full.x_test[test_idx], y_test[test_idx].to(full.y_test.device), k)


def build_model(spec: dict, in_dim: int, num_classes: int) -> torch.nn.Module:
    """The backbone, with the cosine classifier `NormedLinear` as last layer for LDAM (as the
    official code's `use_norm = loss_type == 'LDAM'`) and its controls."""
    torch.manual_seed(spec["seed"])
    cosine = METHODS[spec["method"]][0] != "ce"
    if spec["model"] == "cnn1d":
        net = models.CNN1D(in_dim, spec["channels"], num_classes)
        if cosine:
            net.head = margins.NormedLinear(net.head.in_features, num_classes)
        return net
    if spec["model"] == "resnet32":
        from lossbook.resnet_cifar import resnet32

        return torch.nn.Sequential(models.Normalize(CIFAR_MEAN, CIFAR_STD),
                                   resnet32(num_classes, cosine))
    raise ValueError(f"unknown model {spec['model']!r}; valid: cnn1d, resnet32")


def shift_noise(x: torch.Tensor, g: torch.Generator, shift: int, noise: float) -> torch.Tensor:
    """Each signal of the batch `x` [B, L] shifted by a uniform integer in [−shift, shift]
    (zero padding, like a random crop of a zero-padded image) plus N(0, noise²) noise; the
    draws come from `g` (offsets first, then noise), so a seeded generator makes it
    deterministic."""
    b, length = x.shape
    out = x
    if shift > 0:
        padded = F.pad(x, (shift, shift))
        start = torch.randint(0, 2 * shift + 1, (b, 1), generator=g, device=x.device)
        out = padded.gather(1, start + torch.arange(length, device=x.device))
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=g, device=x.device)
    return out


def augmentation(spec: dict):
    """The per-batch training augmentation `(x, generator) -> x` (None: none)."""
    if spec["task"] in VISION_TASKS:
        from lossbook import vision

        return lambda x, g: vision.random_crop_flip(x, generator=g)
    if spec["shift"] > 0 or spec["noise"] > 0:
        return lambda x, g: shift_noise(x, g, spec["shift"], spec["noise"])
    return None


# --- the schedule -----------------------------------------------------------------------------

def lr_factor(epoch: int, spec: dict) -> float:
    """Official `adjust_learning_rate` (0-based epoch e): (e+1)/W during the W warm-up epochs,
    then `lr_decay` to the power of the number of milestones passed (e ≥ m)."""
    if epoch < spec["warmup_epochs"]:
        return (epoch + 1) / spec["warmup_epochs"]
    return spec["lr_decay"] ** sum(epoch >= m for m in spec["milestones"])


def reweighted(epoch: int, spec: dict) -> bool:
    """Whether class-balanced weights (or sampling) are in force at `epoch`."""
    rule = METHODS[spec["method"]][1]
    return rule in ("reweight", "resample") or (rule == "drw" and epoch >= spec["drw_epoch"])


def phases(spec: dict) -> list[tuple[int, int, float, bool]]:
    """Maximal epoch ranges [start, end) of constant (learning-rate factor, re-weighting)."""
    out: list[tuple[int, int, float, bool]] = []
    for epoch in range(spec["epochs"]):
        key = (lr_factor(epoch, spec), reweighted(epoch, spec))
        if out and out[-1][2:] == key:
            out[-1] = (out[-1][0], epoch + 1, *key)
        else:
            out.append((epoch, epoch + 1, *key))
    return out


# --- objectives -------------------------------------------------------------------------------

def class_weights(spec: dict, counts: list[int], start: int, balanced: bool):
    """The class weights of the loss in the phase starting at epoch `start` (None: unweighted)."""
    rule = METHODS[spec["method"]][1]
    if balanced and rule == "drw":
        return margins.drw_weights(start, counts, spec["drw_epoch"], (0.0, spec["beta"]))
    if balanced and rule == "reweight":
        return data.effective_number_weights(counts, spec["beta"])
    return None


def loss_margins(spec: dict, counts: list[int]) -> torch.Tensor:
    """The per-class margins Δ_j of a cosine-classifier loss: LDAM's n_j^(−1/4) margins, their
    mean for every class (uniform control), or zero (cosine CE)."""
    loss = METHODS[spec["method"]][0]
    deltas = margins.ldam_margins(counts, spec["max_margin"])
    if loss == "ldam_uniform":
        return torch.full_like(deltas, float(deltas.mean()))
    if loss == "cos":
        return torch.zeros_like(deltas)
    return deltas


def logit_loss(spec: dict, counts: list[int], weights: torch.Tensor | None, device):
    """CE, or on cosines: LDAM / uniform-margin LDAM / cosine CE (scale s), class-weighted or
    not."""
    loss = METHODS[spec["method"]][0]
    w = None if weights is None else weights.to(device)
    if loss == "ce":
        return lambda z, y: F.cross_entropy(z, y, weight=w)
    deltas = loss_margins(spec, counts).to(device)
    return lambda z, y: margins.ldam_loss(z, y, deltas, s=spec["scale"], weight=w)


def objective(spec: dict, counts: list[int], weights: torch.Tensor | None, device):
    return train.logit_objective(logit_loss(spec, counts, weights, device))


def resampled(inner, dataset: data.Dataset, class_weights: torch.Tensor, seed: int, augment):
    """An objective that replaces each batch by one drawn with class-balanced re-sampling."""
    g = torch.Generator().manual_seed(seed)
    y_cpu = dataset.y_train.cpu()

    def fn(model, x, y):
        idx = data.class_balanced_sample(y_cpu, class_weights, len(y), g).to(x.device)
        xb = dataset.x_train[idx]
        if augment is not None:
            xb = augment(xb, g)
        return inner(model, xb, dataset.y_train[idx])
    return fn


# --- evaluation -------------------------------------------------------------------------------

@torch.no_grad()
def outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def per_class_accuracy(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    correct = (z.argmax(1) == y).float()
    return [float(correct[y == c].mean()) for c in range(num_classes)]


def per_class_margin(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """Mean over each class's examples of z_y − max_{j≠y} z_j, in the model's output units."""
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).max(1).values
    margin = true - other
    return [float(margin[y == c].mean()) for c in range(num_classes)]


# --- the run ----------------------------------------------------------------------------------

DATA_KEYS = ("max_per_class", "mnist1d_samples", "profile", "permute_classes", "data_dir",
             "download")
TRAIN_KEYS = ("shift", "noise", "model", "channels", "max_margin", "scale", "beta", "drw_epoch",
              "epochs", "warmup_epochs", "milestones", "lr_decay", "batch_size", "lr",
              "momentum", "weight_decay", "eval_every")


def specs(cfg: Config, seed: int, device: str) -> list[dict]:
    for method in cfg.methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    out = []
    for task in cfg.tasks:
        for ratio in cfg.ratios:
            for method in cfg.methods:
                for s in range(cfg.seeds):
                    spec = {"task": task, "ratio": ratio, "method": method, "seed": seed + s,
                            "device": device}
                    spec.update({k: getattr(cfg, k) for k in DATA_KEYS + TRAIN_KEYS})
                    spec["milestones"] = list(cfg.milestones)
                    out.append(spec)
    return out


def phase_fit_kwargs(spec: dict, start: int, end: int, factor: float) -> dict:
    return dict(epochs=end - start, batch_size=spec["batch_size"], lr=spec["lr"] * factor,
                optimizer="sgd", momentum=spec["momentum"], weight_decay=spec["weight_decay"],
                schedule="constant", eval_every=spec["eval_every"])


def balanced_accuracy_fn(dataset: data.Dataset):
    """Balanced test accuracy and (clean) training accuracy, logged during training."""
    def fn(m):
        z = outputs(m, dataset.x_train)
        return {"test_acc": statistics.fmean(per_class_accuracy(
                    outputs(m, dataset.x_test), dataset.y_test, dataset.num_classes)),
                "train_acc": float((z.argmax(1) == dataset.y_train).float().mean())}
    return fn


def phase_history(result: dict, start: int, factor: float) -> list[dict]:
    return [{**r, "epoch": r["epoch"] + start, "lr_factor": factor} for r in result["history"]]


def summary(model: torch.nn.Module, dataset: data.Dataset, counts: list[int],
            history: list[dict]) -> dict:
    k = dataset.num_classes
    z_test, z_train = outputs(model, dataset.x_test), outputs(model, dataset.x_train)
    per_class = per_class_accuracy(z_test, dataset.y_test, k)
    return {"test_acc": statistics.fmean(per_class), "per_class_acc": per_class,
            "train_acc": float((z_train.argmax(1) == dataset.y_train).float().mean()),
            "train_margin": per_class_margin(z_train, dataset.y_train, k),
            "class_counts": counts, "history": history}


def train_acc_at(result: dict, epoch: int) -> float:
    """The clean training accuracy logged at `epoch` (the last record at or before it)."""
    rows = [r for r in result["history"] if r["epoch"] <= epoch]
    if not rows:
        raise ValueError(f"no training-accuracy record at or before epoch {epoch}")
    return rows[-1]["train_acc"]


def run(spec: dict) -> dict:
    """Train one method on one long-tailed training set; per-class test accuracy and margins."""
    dataset = long_tail_data(spec).to(spec["device"])
    k = dataset.num_classes
    counts = data.class_counts(dataset.y_train, k)
    model = build_model(spec, dataset.x_train.shape[1], k).to(spec["device"])
    rule = METHODS[spec["method"]][1]
    augment = augmentation(spec)
    history = []
    for i, (start, end, factor, balanced) in enumerate(phases(spec)):
        fn = objective(spec, counts, class_weights(spec, counts, start, balanced), spec["device"])
        phase_seed = 1000 * spec["seed"] + i
        if balanced and rule == "resample":
            fn = resampled(fn, dataset, data.effective_number_weights(counts, spec["beta"]),
                           phase_seed, augment)
        result = train.fit(model, dataset, fn, seed=phase_seed,
                           augment=None if rule == "resample" else augment,
                           evaluate=balanced_accuracy_fn(dataset),
                           **phase_fit_kwargs(spec, start, end, factor))
        history += phase_history(result, start, factor)
    return summary(model, dataset, counts, history) | {"class_order": class_order(spec, k)}


def runs(specs: list[dict]) -> list[dict]:
    """`run` for seed replicates (specs equal but for the seed), trained as one stacked model
    (`lossbook.batched`; equal to `run` per spec to float tolerance). Each seed keeps its own
    long-tailed draw. Re-sampling (its objective draws its own batches) and models with
    BatchNorm (ResNet-32) run one by one."""
    spec = specs[0]
    datasets = [long_tail_data(s).to(s["device"]) for s in specs]
    k = datasets[0].num_classes
    counts = data.class_counts(datasets[0].y_train, k)
    nets = [build_model(s, d.x_train.shape[1], k).to(s["device"])
            for s, d in zip(specs, datasets)]
    if (METHODS[spec["method"]][1] == "resample" or not all(map(batched.batchable, nets))
            or any(data.class_counts(d.y_train, k) != counts for d in datasets)):
        return [run(s) for s in specs]
    histories: list[list[dict]] = [[] for _ in specs]
    for i, (start, end, factor, balanced) in enumerate(phases(spec)):
        loss = logit_loss(spec, counts, class_weights(spec, counts, start, balanced),
                          spec["device"])
        results = batched.fit_batched(
            nets, datasets, loss, seeds=[1000 * s["seed"] + i for s in specs],
            augment=augmentation(spec), evaluate=[balanced_accuracy_fn(d) for d in datasets],
            **phase_fit_kwargs(spec, start, end, factor))
        for history, result in zip(histories, results):
            history += phase_history(result, start, factor)
    return [summary(net, d, counts, history) | {"class_order": class_order(s, k)}
            for net, d, history, s in zip(nets, datasets, histories, specs)]


run.batched = runs  # cache.sweep trains seed replicates together


# --- summaries --------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group(specs: list[dict], results: list[dict], keys: tuple[str, ...], metric: str) -> dict:
    """{(spec[k] for k in keys): [result[metric] over seeds]}, in first-seen order."""
    groups: dict[tuple, list] = {}
    for spec, result in zip(specs, results):
        groups.setdefault(tuple(spec[k] for k in keys), []).append(result[metric])
    return groups


# --- the margin trade-off, checked numerically ------------------------------------------------

def two_class_optimum(n1: float, n2: float) -> float:
    """Numerical minimiser of the two-class bound over the share x = γ_1/(γ_1 + γ_2)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda x: margins.margin_bound([x, 1 - x], [n1, n2]),
                          bounds=(1e-9, 1 - 1e-9), method="bounded",
                          options={"xatol": 1e-12})
    return float(res.x)


def multiclass_optimum(counts) -> np.ndarray:
    """Numerical minimiser of Σ_j 1/(γ_j √n_j) over margins with Σ_j γ_j = 1 (γ = softmax θ)."""
    from scipy.optimize import minimize

    a = 1.0 / np.sqrt(np.asarray(counts, dtype=np.float64))

    def f(theta):
        g = np.exp(theta - theta.max())
        g /= g.sum()
        grad_g = -a / g**2
        return float((a / g).sum()), g * grad_g - g * (g @ grad_g)

    res = minimize(f, np.zeros(len(a)), jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    g = np.exp(res.x - res.x.max())
    return g / g.sum()


# --- the paper's numbers ----------------------------------------------------------------------

# Top-1 validation error (%) of ResNet-32 on long-tailed CIFAR, Cao et al. (2019) Table 2
# (ERM = CE, CB RW / CB RS = class-balanced re-weighting / re-sampling from the start). The table
# itself was not available to us: these are recalled; those in PAPER_CORROBORATED also appear,
# quoted from the paper, in independent sources we could read.
PAPER_ERROR = {
    ("cifar10", 100.0): {"ce": 29.64, "ce_rw": 27.63, "ce_rs": 29.45, "ldam": 26.65,
                         "ldam_drw": 22.97},
    ("cifar10", 10.0): {"ce": 13.61, "ce_rw": 13.46, "ce_rs": 13.21, "ldam": 13.04,
                        "ldam_drw": 11.84},
    ("cifar100", 100.0): {"ce": 61.68, "ce_rw": 66.01, "ce_rs": 66.56, "ldam": 60.40,
                          "ldam_drw": 57.96},
    ("cifar100", 10.0): {"ce": 44.30, "ce_rw": 42.88, "ce_rs": 44.94, "ldam": 43.09,
                         "ldam_drw": 41.29},
}
PAPER_CORROBORATED = {("cifar10", 100.0, "ce"), ("cifar10", 10.0, "ce"), ("cifar100", 100.0, "ce"),
                      ("cifar10", 10.0, "ce_rs"),
                      ("cifar10", 100.0, "ldam_drw"), ("cifar10", 10.0, "ldam_drw"),
                      ("cifar100", 100.0, "ldam_drw"), ("cifar100", 10.0, "ldam_drw")}
