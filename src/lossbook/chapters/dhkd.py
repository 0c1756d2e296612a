"""Chapter 2 — Dual-Head Knowledge Distillation (Yang et al., arXiv 2411.08937): presets and runs.

Two kinds of runs, each a pure function of a JSON-able spec (so the run cache and the worker
pool can handle them), dispatched by `run(spec)` on `spec["role"]`:

- `teacher_run(spec)` trains (or loads) the teacher of one setting with cross-entropy and
  returns its accuracies. The trained weights are cached on disk by `distill.load_or_train`,
  so a student run that needs them loads them — or, if they are missing, trains the identical
  teacher itself (deterministic given the spec).
- `student_run(spec)` trains one student with one method (`METHODS`) against that teacher and
  returns its accuracies and, along training, the cosine between the CE and the logit-level-loss
  gradients on the head and on the backbone, NC1 and the logit norm.

Students are trained for a fixed number of optimisation steps (not epochs). The learning rate
follows the official step decay (×0.1 after 150, 180 and 210 of 240 epochs, i.e. at 62.5 %,
75 % and 87.5 % of the steps) via `distill.fit_step_decay`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from lossbook import data, distill, kd_nets, models
from lossbook.presets import at_least, between, nonempty, one_of, positive

# name → (distillation loss, auxiliary head, gradient alignment, loss weights γ/α as config keys)
METHODS = {
    "ce": dict(loss="none", aux="none", ga=False, weights=("one", "zero")),
    "kd": dict(loss="kd", aux="none", ga=False, weights=("kd_gamma", "kd_alpha")),
    "bkl_only": dict(loss="bkl", aux="none", ga=False, weights=("zero", "alpha")),
    "ce_bkl_1h": dict(loss="bkl", aux="none", ga=False, weights=("gamma", "alpha")),
    "ce_bkl_2h": dict(loss="bkl", aux="linear", ga=False, weights=("gamma", "alpha")),
    "ce_bkln_1h": dict(loss="bkln", aux="none", ga=False, weights=("gamma", "alpha")),
    "dhkd": dict(loss="bkln", aux="linear", ga=False, weights=("gamma", "alpha")),
    "dhkd_nonlinear": dict(loss="bkln", aux="nonlinear", ga=False, weights=("gamma", "alpha")),
    "dhkd_ga": dict(loss="bkln", aux="linear", ga=True, weights=("gamma", "alpha")),
}
LABELS = {"ce": "CE", "kd": "KD", "bkl_only": "BinaryKL only", "ce_bkl_1h": "CE+BinaryKL, 1 head",
          "ce_bkl_2h": "CE+BinaryKL, 2 heads", "ce_bkln_1h": "CE+BKL-Norm, 1 head",
          "dhkd": "DHKD (BKL-Norm, 2 heads)", "dhkd_nonlinear": "DHKD, non-linear aux head",
          "dhkd_ga": "DHKD + grad. alignment"}
SETTINGS = ("mnist1d", "terminal", "many", "cifar100")
SETTING_LABELS = {"mnist1d": "MNIST-1D", "terminal": "MNIST-1D, terminal phase",
                  "many": "MNIST-1D, 100 classes", "cifar100": "CIFAR-100"}
MNIST1D_NETS = ("mlp", "mlp_bn", "cnn1d")


@dataclass(frozen=True)
class Config:
    # settings and repetitions
    settings: tuple[str, ...] = ("mnist1d", "terminal", "many")
    pairs: tuple[str, ...] = ("cnn1d:mlp_bn",)  # "teacher:student"
    methods: tuple[str, ...] = tuple(METHODS)  # in the first setting
    other_methods: tuple[str, ...] = ("ce", "kd", "bkl_only", "ce_bkl_1h", "ce_bkl_2h",
                                      "ce_bkln_1h", "dhkd")  # in the other settings
    seeds: int = 5
    # data: MNIST-1D (8,000 train / 2,000 test); terminal phase: a class-balanced training
    # subset; many classes: random templates, less translation than the default 48
    samples: int = 10000
    terminal_per_class: int = 100
    many_classes: int = 100
    many_samples: int = 15000
    many_translation: int = 16
    template_seed: int = 0
    # networks
    teacher_width: int = 32  # cnn1d channels
    student_width: int = 32
    student_hidden: tuple[int, ...] = (100, 100)  # mlp, mlp_bn
    # optimisation steps (batch 64): per setting, teacher and student
    teacher_steps: int = 3000
    steps: int = 2000
    terminal_teacher_steps: int = 2000
    terminal_steps: int = 2000
    many_teacher_steps: int = 3000
    many_steps: int = 2000
    # losses (official defaults: --kd_T 4, --BinaryKL_T 2, -r 1 -a 1; RepDistiller KD -r .1 -a .9)
    kd_T: float = 4.0
    bkl_T: float = 2.0
    gamma: float = 1.0
    alpha: float = 1.0
    kd_gamma: float = 0.1
    kd_alpha: float = 0.9
    # optimiser (official CIFAR-100: SGD 0.05, momentum 0.9, wd 5e-4, batch 64, ×0.1 at
    # epochs 150/180/210 of 240)
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.625, 0.75, 0.875)
    lr_decay: float = 0.1
    evals: int = 10  # evaluations per run, roughly (and one at the end of each lr phase)
    probe_size: int = 512  # training examples for the gradient-cosine / NC1 probe
    data_dir: str = ""
    download: bool = False


CIFAR_STEPS = 240 * (50000 // 64)  # 240 epochs of batch 64 = 187,440 steps

CONSTRAINTS = {  # checked by lossbook.presets.resolve (with finite, ≥ 0 numbers everywhere)
    "settings": (nonempty, one_of(*SETTINGS)), "methods": (nonempty, one_of(*METHODS)),
    "other_methods": one_of(*METHODS), "pairs": (nonempty, lambda p: None if p.count(":") == 1
                                                 else 'must be written "teacher:student"'),
    "many_classes": at_least(2), "terminal_per_class": positive, "teacher_width": positive,
    "student_width": positive, "student_hidden": positive, "milestones": between(0, 1),
    "lr_decay": positive, "evals": positive, "probe_size": positive,
}


PRESETS = {
    "smoke": Config(seeds=1, methods=("ce", "kd", "ce_bkl_1h", "dhkd", "dhkd_ga"),
                    other_methods=("ce", "dhkd"), samples=2000, terminal_per_class=20,
                    many_classes=20, many_samples=2000, teacher_width=8, teacher_steps=60,
                    steps=40, terminal_teacher_steps=30, terminal_steps=40,
                    many_teacher_steps=40, many_steps=40, evals=2, probe_size=128),
    # Five seeds fit the 3-minute budget by training, in the first setting too, only the
    # students the claims compare (the DHKD options run at `smoke` and `full`).
    "book": Config(methods=("ce", "kd", "bkl_only", "ce_bkl_1h", "ce_bkl_2h", "ce_bkln_1h",
                            "dhkd")),
    # The paper's CIFAR-100 protocol (official train_teacher.py / train_student.py defaults):
    # teachers and students 240 epochs, SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64, lr ×0.1
    # at epochs 150/180/210, random crop (padding 4) + horizontal flip. The pairs of the
    # research note that kd_nets implements.
    "full": Config(settings=("cifar100",),
                   pairs=("resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2", "resnet56:resnet20",
                          "resnet110:resnet32"),
                   methods=("ce", "kd", "bkl_only", "ce_bkl_1h", "ce_bkl_2h", "ce_bkln_1h",
                            "dhkd", "dhkd_nonlinear", "dhkd_ga"),
                   seeds=3, teacher_steps=CIFAR_STEPS, steps=CIFAR_STEPS, evals=24,
                   probe_size=1024, download=True),
}


# --- data -------------------------------------------------------------------------------------

def data_key(cfg: Config, setting: str) -> dict:
    """The fields that define a setting's dataset (part of every spec of that setting)."""
    if setting == "mnist1d":
        return {"setting": setting, "samples": cfg.samples}
    if setting == "terminal":
        return {"setting": setting, "samples": cfg.samples, "per_class": cfg.terminal_per_class}
    if setting == "many":
        return {"setting": setting, "samples": cfg.many_samples, "classes": cfg.many_classes,
                "template_seed": cfg.template_seed, "max_translation": cfg.many_translation}
    if setting == "cifar100":
        return {"setting": setting, "data_dir": cfg.data_dir, "download": cfg.download}
    raise ValueError(f"unknown setting {setting!r}; valid: {', '.join(SETTINGS)}")


@lru_cache(maxsize=4)
def _load(key: tuple) -> data.Dataset:
    k = dict(key)
    setting = k["setting"]
    if setting == "mnist1d":
        return data.mnist1d(num_samples=k["samples"])
    if setting == "terminal":
        full = data.mnist1d(num_samples=k["samples"])
        idx = data.class_subset_indices(full.y_train, [k["per_class"]] * full.num_classes,
                                        seed=0)
        return data.Dataset(full.x_train[idx], full.y_train[idx], full.x_test, full.y_test,
                            full.num_classes)
    if setting == "many":
        return data.mnist1d(num_samples=k["samples"], num_classes=k["classes"],
                            template_seed=k["template_seed"],
                            max_translation=k["max_translation"])
    if setting == "cifar100":
        from pathlib import Path

        from lossbook import vision
        from lossbook.paths import data_dir

        root = Path(k["data_dir"]) if k["data_dir"] else data_dir()
        raw = vision.load_vision("cifar100", root, download=k["download"])
        return data.Dataset(raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"],
                            raw["num_classes"])
    raise ValueError(f"unknown setting {setting!r}; valid: {', '.join(SETTINGS)}")


def load_data(spec: dict) -> data.Dataset:
    return _load(tuple(sorted(spec["data"].items()))).to(spec["device"])


def augmentation(spec: dict):
    if spec["data"]["setting"] == "cifar100":
        from lossbook import vision

        return lambda x, g: vision.random_crop_flip(x, generator=g)
    return None


# --- models -----------------------------------------------------------------------------------

class AddChannel(nn.Module):
    """[B, L] signals → [B, 1, L] for the 1-D convolutions."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.unsqueeze(1))


def bn_mlp(in_dim: int, hidden) -> nn.Sequential:
    """MLP backbone Linear → BatchNorm → ReLU per hidden layer (BN like the paper's students)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers)


def build_student(net: dict, dataset: data.Dataset, aux: str, seed: int) -> distill.Student:
    """Backbone `net["name"]` with a CE head (+ auxiliary head `aux`), seeded."""
    torch.manual_seed(seed)
    name, k = net["name"], dataset.num_classes
    if name == "mlp":
        body = models.mlp(dataset.x_train.shape[1], tuple(net["hidden"]), k)[:-1]
        return distill.Student(body, net["hidden"][-1], k, aux)
    if name == "mlp_bn":
        return distill.Student(bn_mlp(dataset.x_train.shape[1], net["hidden"]),
                               net["hidden"][-1], k, aux)
    if name == "cnn1d":
        cnn = models.CNN1D(dataset.x_train.shape[1], net["width"], k)
        return distill.Student(AddChannel(cnn.features), cnn.head.in_features, k, aux)
    if name in kd_nets.NAMES:
        mean, std = dataset.x_train.mean((0, 2, 3)), dataset.x_train.std((0, 2, 3))
        body = kd_nets.backbone(name, dataset.x_train.shape[1])
        student = distill.Student(nn.Sequential(models.Normalize(mean, std), body),
                                  body.feature_dim, k, aux)
        return kd_nets.zero_linear_bias(student) if name in kd_nets.WRNS else student
    raise ValueError(f"unknown network {name!r}; valid: {', '.join(MNIST1D_NETS)}, "
                     f"{', '.join(kd_nets.NAMES)}")


def net_spec(cfg: Config, name: str, role: str) -> dict:
    if name in ("mlp", "mlp_bn"):
        return {"name": name, "hidden": list(cfg.student_hidden)}
    if name == "cnn1d":
        return {"name": name, "width": cfg.teacher_width if role == "teacher" else
                cfg.student_width}
    return {"name": name}


# --- specs ------------------------------------------------------------------------------------

def steps_for(cfg: Config, setting: str, role: str) -> int:
    prefix = {"mnist1d": "", "cifar100": "", "terminal": "terminal_", "many": "many_"}[setting]
    return getattr(cfg, f"{prefix}{'teacher_' if role == 'teacher' else ''}steps")


def optim_spec(cfg: Config) -> dict:
    return {"batch_size": cfg.batch_size, "lr": cfg.lr, "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay, "milestones": list(cfg.milestones),
            "lr_decay": cfg.lr_decay, "evals": cfg.evals}


def teacher_spec(cfg: Config, setting: str, pair: str, seed: int, device: str) -> dict:
    teacher, _ = pair.split(":")
    return {"role": "teacher", "data": data_key(cfg, setting),
            "net": net_spec(cfg, teacher, "teacher"),
            "steps": steps_for(cfg, setting, "teacher"), "seed": seed, "device": device,
            **optim_spec(cfg)}


def teacher_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    return [teacher_spec(cfg, setting, pair, seed, device)
            for setting in cfg.settings for pair in cfg.pairs]


def student_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    """Every (setting, pair, method, seed): all `methods` in the first setting, `other_methods`
    in the others. The teacher of a setting is trained once, with the chapter's seed."""
    weights = {"one": 1.0, "zero": 0.0, "gamma": cfg.gamma, "alpha": cfg.alpha,
               "kd_gamma": cfg.kd_gamma, "kd_alpha": cfg.kd_alpha}
    specs = []
    for i, setting in enumerate(cfg.settings):
        for pair in cfg.pairs:
            _, student = pair.split(":")
            for method in (cfg.methods if i == 0 else cfg.other_methods):
                if method not in METHODS:
                    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
                m = METHODS[method]
                loss = m["loss"]
                for s in range(cfg.seeds):
                    specs.append({
                        "role": "student", "data": data_key(cfg, setting), "pair": pair,
                        "method": method,
                        "net": net_spec(cfg, student, "student"),
                        "teacher": teacher_spec(cfg, setting, pair, seed, device),
                        "loss": loss, "aux": m["aux"], "ga": m["ga"],
                        "gamma": weights[m["weights"][0]], "alpha": weights[m["weights"][1]],
                        "T": cfg.kd_T if loss == "kd" else cfg.bkl_T,
                        # the logit-level loss whose gradient is compared with CE's
                        "probe_loss": loss if loss != "none" else "bkl", "probe_T": cfg.bkl_T
                        if loss != "kd" else cfg.kd_T,
                        "probe_size": cfg.probe_size,
                        "steps": steps_for(cfg, setting, "student"), "seed": seed + s,
                        "device": device, **optim_spec(cfg)})
    return specs


# --- runs -------------------------------------------------------------------------------------

def _fit(model: nn.Module, dataset: data.Dataset, objective, spec: dict, evaluate=None) -> dict:
    per_epoch = max(1, len(dataset.y_train) // spec["batch_size"])
    epochs = max(1, spec["steps"] // per_epoch)
    return distill.fit_step_decay(
        model, dataset, objective, steps=spec["steps"], milestones=spec["milestones"],
        decay=spec["lr_decay"], lr=spec["lr"], seed=spec["seed"], batch_size=spec["batch_size"],
        optimizer="sgd", momentum=spec["momentum"], weight_decay=spec["weight_decay"],
        augment=augmentation(spec), evaluate=evaluate,
        eval_every=max(1, epochs // spec["evals"]))


def get_teacher(spec: dict) -> tuple[distill.Student, dict]:
    """The trained teacher of `spec` (a teacher spec), loaded from or written to the cache."""
    dataset = load_data(spec)

    def train_teacher(model):
        objective = distill.distill_objective(None, loss="none", gamma=1.0, alpha=0.0, T=1.0)
        result = _fit(model, dataset, objective, spec)
        return {"train_acc": result["final"]["train_acc"],
                "test_acc": result["final"]["test_acc"]}

    model, metrics = distill.load_or_train(
        "teacher", spec, lambda: build_student(spec["net"], dataset, "none",
                                               spec["seed"]).to(spec["device"]),
        train_teacher)
    return model.to(spec["device"]).eval(), metrics


def teacher_run(spec: dict) -> dict:
    """Train (or load) one teacher; its accuracies and logit statistics on the training set."""
    model, metrics = get_teacher(spec)
    dataset = load_data(spec)
    with torch.no_grad():
        logits = model(dataset.x_train[:spec.get("probe_size", 1024)])
    return {**metrics, "logit_mean": float(logits.mean()), "logit_std": float(logits.std()),
            "logit_max": float(logits.abs().max()),
            "logit_norm": float(logits.norm(dim=1).mean())}


def student_run(spec: dict) -> dict:
    """Distil one student with one method; accuracies and the neural-collapse probes."""
    from lossbook.attacks import accuracy

    dataset = load_data(spec)
    teacher, teacher_metrics = get_teacher(spec["teacher"])
    if augmentation(spec) is None:  # fixed inputs: look the teacher's logits up
        teacher = distill.MemoTeacher(teacher, dataset.x_train)
    model = build_student(spec["net"], dataset, spec["aux"], spec["seed"]).to(spec["device"])
    objective = distill.distill_objective(teacher, loss=spec["loss"], gamma=spec["gamma"],
                                          alpha=spec["alpha"], T=spec["T"], ga=spec["ga"])
    g = torch.Generator().manual_seed(10_000 + spec["seed"])
    probe = torch.randperm(len(dataset.y_train), generator=g)[:spec["probe_size"]]
    x_probe, y_probe = dataset.x_train[probe.to(dataset.x_train.device)], \
        dataset.y_train[probe.to(dataset.y_train.device)]
    with torch.no_grad():
        t_probe = teacher(x_probe)

    def evaluate(m: distill.Student) -> dict:
        record = {"train_acc": accuracy(m, dataset.x_train, dataset.y_train),
                  "test_acc": accuracy(m, dataset.x_test, dataset.y_test)}
        if m.aux is not None:
            record["aux_test_acc"] = _aux_accuracy(m, dataset.x_test, dataset.y_test)
        record.update(distill.gradient_cosines(m, x_probe, y_probe, t_probe,
                                               loss=spec["probe_loss"], T=spec["probe_T"]))
        record.update(distill.collapse_metrics(m, dataset.x_train, dataset.y_train,
                                               dataset.num_classes))
        return record

    result = _fit(model, dataset, objective, spec, evaluate)
    final = result["final"]
    history = result["history"]
    return {"test_acc": final["test_acc"], "train_acc": final["train_acc"],
            "best_test_acc": max(r["test_acc"] for r in history),
            "aux_test_acc": final.get("aux_test_acc"), "teacher": teacher_metrics,
            "history": history}


def run(spec: dict) -> dict:
    """`teacher_run` or `student_run` by `spec["role"]`: one sweep (one worker pool) for both.

    List the teachers first: the pool starts jobs in order, so the students find their
    teacher trained (a student that does not trains the identical teacher itself).
    """
    if spec["role"] == "teacher":
        return teacher_run(spec)
    if spec["role"] == "student":
        return student_run(spec)
    raise ValueError(f"unknown role {spec['role']!r}; valid: teacher, student")


@torch.no_grad()
def _aux_accuracy(model: distill.Student, x: torch.Tensor, y: torch.Tensor,
                  batch_size: int = 1024) -> float:
    was_training = model.training
    model.eval()
    correct = sum(int((model.heads(x[i:i + batch_size])[1].argmax(1) ==
                       y[i:i + batch_size]).sum()) for i in range(0, len(y), batch_size))
    model.train(was_training)
    return correct / len(y)


# --- summaries --------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group(specs: list[dict], results: list[dict], metric: str = "test_acc") -> dict:
    """{(setting, pair, method): [metric per seed]} in first-seen order."""
    out: dict[tuple, list] = {}
    for spec, result in zip(specs, results):
        key = (spec["data"]["setting"], spec["pair"], spec["method"])
        out.setdefault(key, []).append(result[metric])
    return out


def paired_gap(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of the seed-paired difference a − b (inf SE with one seed)."""
    gaps = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(gaps)
    se = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else float("inf")
    return mean, se


def late_mean(history: list[dict], key: str, from_fraction: float = 0.5) -> float:
    """Mean of `key` over the evaluations in the last (1 − from_fraction) of training."""
    last = history[-1]["step"]
    values = [r[key] for r in history if r["step"] >= from_fraction * last]
    return statistics.fmean(values)
