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

- `ufm_run(spec)` trains the unconstrained-features model with CE to neural collapse and returns
  the cosines between the CE and BinaryKL gradients on its head and on its free features, for
  the chapter's teacher logits scaled by each factor of `teacher_scales`.

The distillation weight α of every method is selected on a validation split (`tuning_specs`,
`select_alpha`), on seeds disjoint from the claim seeds, before the claim runs are built.
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
    "ce_bkl_1h_official": dict(loss="bkl_official", aux="none", ga=False,
                               weights=("gamma", "alpha")),
    "ce_bkl_2h": dict(loss="bkl", aux="linear", ga=False, weights=("gamma", "alpha")),
    "ce_bkln_1h": dict(loss="bkln", aux="none", ga=False, weights=("gamma", "alpha")),
    "dhkd": dict(loss="bkln", aux="linear", ga=False, weights=("gamma", "alpha")),
    "dhkd_nonlinear": dict(loss="bkln", aux="nonlinear", ga=False, weights=("gamma", "alpha")),
    "dhkd_ga": dict(loss="bkln", aux="linear", ga=True, weights=("gamma", "alpha")),
}
LABELS = {"ce": "CE", "kd": "KD", "bkl_only": "BinaryKL only", "ce_bkl_1h": "CE+BinaryKL, 1 head",
          "ce_bkl_1h_official": "CE+BinaryKL, 1 head, official float32",
          "ce_bkl_2h": "CE+BinaryKL, 2 heads", "ce_bkln_1h": "CE+BKL-Norm, 1 head",
          "dhkd": "DHKD (BKL-Norm, 2 heads)", "dhkd_nonlinear": "DHKD, non-linear aux head",
          "dhkd_ga": "DHKD + grad. alignment"}
SETTINGS = ("mnist1d", "terminal", "many", "cifar100")
# the method whose tuned α another method uses (the same loss, other numerics)
ALPHA_FROM = {"ce_bkl_1h_official": "ce_bkl_1h"}
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
    # α per method, selected on the validation split (factor × the official default weight),
    # with `tune_seeds` seeds numbered from seed + tune_offset (disjoint from the claim seeds)
    tuned: tuple[str, ...] = ("kd", "ce_bkl_1h", "ce_bkl_2h", "ce_bkln_1h", "dhkd")
    alpha_factors: tuple[float, ...] = (0.3, 1.0, 3.0)
    tune_seeds: int = 2
    tune_offset: int = 100
    # official numerics: teacher logits × each factor, one-head CE+BinaryKL in both forms
    teacher_scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    scale_seeds: int = 2
    # unconstrained-features model: CE + weight decay by full-batch Adam, to neural collapse
    ufm_seeds: int = 5
    ufm_steps: int = 600
    ufm_lr: float = 0.05
    ufm_weight_decay: float = 5e-3
    nc1_collapsed: float = 0.01  # NC1 below which the UFM counts as collapsed (the premise)
    # data: MNIST-1D (8,000 train / 2,000 test); terminal phase: a class-balanced training
    # subset; many classes: random templates, less translation than the default 48
    samples: int = 10000
    terminal_per_class: int = 100
    val_per_class: int = 100  # validation split from the training pool (α selection)
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
    "tuned": one_of(*METHODS), "alpha_factors": (nonempty, positive),
    "teacher_scales": (nonempty, positive), "scale_seeds": positive, "tune_seeds": positive,
    "ufm_seeds": positive, "ufm_steps": positive, "ufm_lr": positive, "val_per_class": positive,
    "nc1_collapsed": positive,
}


PRESETS = {
    "smoke": Config(settings=("terminal",), seeds=1,
                    methods=("ce", "kd", "bkl_only", "ce_bkl_1h", "ce_bkl_1h_official",
                             "ce_bkl_2h", "ce_bkln_1h", "dhkd", "dhkd_ga"),
                    other_methods=("ce", "dhkd"), tuned=("kd", "dhkd"), alpha_factors=(0.3, 1.0),
                    tune_seeds=1, teacher_scales=(0.5, 1.0), scale_seeds=1, ufm_seeds=1,
                    ufm_steps=60, samples=2000, terminal_per_class=20, val_per_class=10,
                    many_classes=20, many_samples=2000, teacher_width=8, teacher_steps=60,
                    steps=40, terminal_teacher_steps=30, terminal_steps=40,
                    many_teacher_steps=40, many_steps=40, evals=2, probe_size=128),
    # The 3-minute budget at five seeds: one setting, the small training set trained into the
    # terminal phase (where CE plateaus and the teacher's logits are large), the eight students
    # the claims compare (the DHKD options run at `smoke` and `full`).
    # Students train 1,200 steps (77 epochs; CE's test accuracy is flat from ~400 steps in a
    # 2,000-step pilot, and the plateau is checked in the chapter).
    "book": Config(settings=("terminal",),
                   methods=("ce", "kd", "bkl_only", "ce_bkl_1h", "ce_bkl_1h_official",
                            "ce_bkl_2h", "ce_bkln_1h", "dhkd"), terminal_steps=1200),
    # The paper's CIFAR-100 protocol (official train_teacher.py / train_student.py defaults):
    # teachers and students 240 epochs, SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64, lr ×0.1
    # at epochs 150/180/210, random crop (padding 4) + horizontal flip. The pairs of the
    # research note that kd_nets implements.
    "full": Config(settings=("cifar100",),
                   pairs=("resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2", "resnet56:resnet20",
                          "resnet110:resnet32"),
                   methods=("ce", "kd", "bkl_only", "ce_bkl_1h", "ce_bkl_1h_official",
                            "ce_bkl_2h", "ce_bkln_1h", "dhkd", "dhkd_nonlinear", "dhkd_ga"),
                   seeds=3, teacher_steps=CIFAR_STEPS, steps=CIFAR_STEPS, evals=24,
                   tuned=(), alpha_factors=(1.0,), tune_seeds=1, scale_seeds=1,
                   probe_size=1024, download=True),  # CIFAR: no validation split, official α
}


# --- data -------------------------------------------------------------------------------------

def data_key(cfg: Config, setting: str) -> dict:
    """The fields that define a setting's dataset (part of every spec of that setting)."""
    if setting == "mnist1d":
        return {"setting": setting, "samples": cfg.samples, "val_per_class": cfg.val_per_class}
    if setting == "terminal":
        return {"setting": setting, "samples": cfg.samples, "per_class": cfg.terminal_per_class,
                "val_per_class": cfg.val_per_class}
    if setting == "many":
        return {"setting": setting, "samples": cfg.many_samples, "classes": cfg.many_classes,
                "template_seed": cfg.template_seed, "max_translation": cfg.many_translation}
    if setting == "cifar100":
        return {"setting": setting, "data_dir": cfg.data_dir, "download": cfg.download}
    raise ValueError(f"unknown setting {setting!r}; valid: {', '.join(SETTINGS)}")


def _split_val(full: data.Dataset, per_class: int | None, val_per_class: int):
    """(training set, validation x, validation y): `val_per_class` examples per class of the
    training pool held out for α selection; the training set is the rest, or a class-balanced
    `per_class` subset of the rest. The test set is untouched."""
    k = full.num_classes
    val = data.class_subset_indices(full.y_train, [val_per_class] * k, seed=1)
    rest = torch.ones(len(full.y_train), dtype=torch.bool)
    rest[val] = False
    rest = torch.nonzero(rest).flatten()
    if per_class is not None:
        rest = rest[data.class_subset_indices(full.y_train[rest], [per_class] * k, seed=0)]
    train = data.Dataset(full.x_train[rest], full.y_train[rest], full.x_test, full.y_test, k)
    return train, full.x_train[val], full.y_train[val]


@lru_cache(maxsize=4)
def _load_split(key: tuple):
    k = dict(key)
    full = data.mnist1d(num_samples=k["samples"])
    return _split_val(full, k.get("per_class"), k["val_per_class"])


@lru_cache(maxsize=4)
def _load(key: tuple) -> data.Dataset:
    k = dict(key)
    setting = k["setting"]
    if setting in ("mnist1d", "terminal"):
        return _load_split(key)[0]
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


def load_val(spec: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The validation split (x, y) of the spec's setting (MNIST-1D settings), else None."""
    if spec["data"]["setting"] not in ("mnist1d", "terminal"):
        return None
    _, x, y = _load_split(tuple(sorted(spec["data"].items())))
    return x.to(spec["device"]), y.to(spec["device"])


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


def student_spec(cfg: Config, setting: str, pair: str, method: str, seed: int, device: str,
                 teacher_seed: int, *, alpha_factor: float = 1.0, teacher_scale: float = 1.0,
                 probes: bool = True) -> dict:
    """One student run: `method` with its distillation weight × `alpha_factor`, against the
    teacher of the setting (trained with `teacher_seed`) whose logits are × `teacher_scale`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    weights = {"one": 1.0, "zero": 0.0, "gamma": cfg.gamma, "alpha": cfg.alpha,
               "kd_gamma": cfg.kd_gamma, "kd_alpha": cfg.kd_alpha}
    m = METHODS[method]
    loss = m["loss"]
    _, student = pair.split(":")
    return {
        "role": "student", "data": data_key(cfg, setting), "pair": pair, "method": method,
        "net": net_spec(cfg, student, "student"),
        "teacher": teacher_spec(cfg, setting, pair, teacher_seed, device),
        "teacher_scale": teacher_scale,
        "loss": loss, "aux": m["aux"], "ga": m["ga"],
        "gamma": weights[m["weights"][0]], "alpha": weights[m["weights"][1]] * alpha_factor,
        "alpha_factor": alpha_factor,
        "T": cfg.kd_T if loss == "kd" else cfg.bkl_T,
        # the logit-level loss whose gradient is compared with CE's (stable numerics)
        "probe_loss": {"none": "bkl", "bkl_official": "bkl"}.get(loss, loss),
        "probe_T": cfg.kd_T if loss == "kd" else cfg.bkl_T,
        "probe_size": cfg.probe_size, "probes": probes,
        "steps": steps_for(cfg, setting, "student"), "seed": seed, "device": device,
        **optim_spec(cfg)}


def tuning_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    """α selection runs: every tuned method × α factor, on `tune_seeds` seeds from
    seed + tune_offset (disjoint from the claim seeds), judged on the validation split."""
    return [student_spec(cfg, setting, pair, method, seed + cfg.tune_offset + s, device, seed,
                         alpha_factor=f, probes=False)
            for setting in cfg.settings for pair in cfg.pairs for method in cfg.tuned
            if method in _methods_of(cfg, setting)
            for f in cfg.alpha_factors for s in range(cfg.tune_seeds)]


def _methods_of(cfg: Config, setting: str) -> tuple[str, ...]:
    return cfg.methods if setting == cfg.settings[0] else cfg.other_methods


def select_alpha(specs: list[dict], results: list[dict]) -> dict:
    """{(setting, pair, method): α factor} with the best mean validation accuracy (the final
    evaluation); ties go to the factor listed first."""
    scores: dict[tuple, dict[float, list[float]]] = {}
    for spec, result in zip(specs, results):
        if result.get("val_acc") is None:
            raise ValueError(f"α selection needs a validation split; setting "
                             f"{spec['data']['setting']!r} has none")
        key = (spec["data"]["setting"], spec["pair"], spec["method"])
        scores.setdefault(key, {}).setdefault(spec["alpha_factor"], []).append(
            result["val_acc"])
    return {key: max(by_f, key=lambda f: statistics.fmean(by_f[f]))
            for key, by_f in scores.items()}


def alpha_of(factors: dict, setting: str, pair: str, method: str) -> float:
    """The selected α factor of a method (1.0: not tuned, the official default weight)."""
    return factors.get((setting, pair, ALPHA_FROM.get(method, method)), 1.0)


def student_specs(cfg: Config, seed: int, device: str, factors: dict | None = None) -> list[dict]:
    """Every (setting, pair, method, seed) the claims compare: all `methods` in the first
    setting, `other_methods` in the others, each at its selected α factor (`factors`, from
    `select_alpha`). The teacher of a setting is trained once, with the chapter's seed."""
    factors = factors or {}
    return [student_spec(cfg, setting, pair, method, seed + s, device, seed,
                         alpha_factor=alpha_of(factors, setting, pair, method))
            for setting in cfg.settings for pair in cfg.pairs
            for method in _methods_of(cfg, setting) for s in range(cfg.seeds)]


SCALE_METHODS = ("ce_bkl_1h", "ce_bkl_1h_official")


def scale_specs(cfg: Config, seed: int, device: str, factors: dict | None = None) -> list[dict]:
    """The teacher-logit-scale sweep of the official-numerics arm: one-head CE+BinaryKL in the
    log-sigmoid and in the official float32 form, teacher logits × each scale other than 1
    (scale 1 is in `student_specs`), `scale_seeds` seeds, first setting."""
    factors = factors or {}
    setting, pair = cfg.settings[0], cfg.pairs[0]
    return [student_spec(cfg, setting, pair, method, seed + s, device, seed,
                         alpha_factor=alpha_of(factors, setting, pair, method),
                         teacher_scale=scale, probes=False)
            for scale in cfg.teacher_scales if scale != 1.0 for method in SCALE_METHODS
            if method in _methods_of(cfg, setting) for s in range(cfg.scale_seeds)]


def ufm_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    """Unconstrained-features runs (first setting, first pair), one per seed."""
    setting, pair = cfg.settings[0], cfg.pairs[0]
    return [{"role": "ufm", "teacher": teacher_spec(cfg, setting, pair, seed, device),
             "dim": cfg.student_hidden[-1], "steps": cfg.ufm_steps, "lr": cfg.ufm_lr,
             "weight_decay": cfg.ufm_weight_decay, "scales": list(cfg.teacher_scales),
             "T": cfg.bkl_T, "kd_T": cfg.kd_T, "seed": seed + s, "device": device}
            for s in range(cfg.ufm_seeds)]


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
    y = dataset.y_train[:spec.get("probe_size", 1024)]
    return {**metrics, "logit_mean": float(logits.mean()), "logit_std": float(logits.std()),
            "true_logit": float(logits.gather(1, y[:, None]).mean()),
            "logit_max": float(logits.abs().max()),
            "logit_norm": float(logits.norm(dim=1).mean())}


def student_run(spec: dict) -> dict:
    """Distil one student with one method; accuracies and the neural-collapse probes."""
    from lossbook.attacks import accuracy

    dataset = load_data(spec)
    val = load_val(spec)
    teacher, teacher_metrics = get_teacher(spec["teacher"])
    if augmentation(spec) is None:  # fixed inputs: look the teacher's logits up
        teacher = distill.MemoTeacher(teacher, dataset.x_train)
    if spec.get("teacher_scale", 1.0) != 1.0:
        teacher = ScaledTeacher(teacher, spec["teacher_scale"])
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
        if val is not None:
            record["val_acc"] = accuracy(m, *val)
        if m.aux is not None:
            record["aux_test_acc"] = _aux_accuracy(m, dataset.x_test, dataset.y_test)
        if not spec.get("probes", True):
            return record
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
            "val_acc": final.get("val_acc"), "aux_test_acc": final.get("aux_test_acc"),
            "nan_step": objective.first_nonfinite, "teacher": teacher_metrics,
            "history": history}


class ScaledTeacher(nn.Module):
    """A frozen teacher whose logits are multiplied by `scale` (the teacher-logit-scale sweep)."""

    def __init__(self, teacher: nn.Module, scale: float):
        super().__init__()
        self.teacher, self.scale = teacher, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x) * self.scale


def ufm_run(spec: dict) -> dict:
    """The unconstrained-features model of the setting's training labels, trained with CE to
    neural collapse; then cos(∇CE, ∇L) on its head and features for L = BinaryKL (and KD),
    against the chapter's teacher logits on the training set × each scale."""
    teacher, _ = get_teacher(spec["teacher"])
    dataset = load_data(spec["teacher"])
    with torch.no_grad():
        t = torch.cat([teacher(dataset.x_train[i:i + 1024])
                       for i in range(0, len(dataset.y_train), 1024)]).double().cpu()
    y = dataset.y_train.cpu()
    fit = distill.ufm_collapse(y, dataset.num_classes, spec["dim"], steps=spec["steps"],
                               lr=spec["lr"], weight_decay=spec["weight_decay"],
                               seed=spec["seed"])
    t_true = float(t.gather(1, y[:, None]).mean())
    cosines = []
    for scale in spec["scales"]:
        row = {"scale": scale, "teacher_true_logit": scale * t_true}
        for name, T in (("bkl", spec["T"]), ("kd", spec["kd_T"])):
            c = distill.ufm_gradient_cosines(fit["h"], fit["w"], y, scale * t, loss=name, T=T)
            row.update({f"{name}_{k}": v for k, v in c.items()})
        cosines.append(row)
    return {"history": fit["history"], "nc1": fit["history"][-1]["nc1"],
            "true_logit": fit["history"][-1]["true_logit"], "cosines": cosines}


def run(spec: dict) -> dict:
    """`teacher_run` or `student_run` by `spec["role"]`: one sweep (one worker pool) for both.

    List the teachers first: the pool starts jobs in order, so the students find their
    teacher trained (a student that does not trains the identical teacher itself).
    """
    if spec["role"] == "teacher":
        return teacher_run(spec)
    if spec["role"] == "student":
        return student_run(spec)
    if spec["role"] == "ufm":
        return ufm_run(spec)
    raise ValueError(f"unknown role {spec['role']!r}; valid: teacher, student, ufm")


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


# --- the official numerics, exactly ------------------------------------------------------------

def bkl_forms_at(s: float, t: float, T: float) -> tuple[float, float, float, float]:
    """(official loss, its ∂/∂s, log-sigmoid loss, its ∂/∂s) for one float32 logit pair."""
    out = []
    for fn in (distill.binary_kl_official, lambda a, b, T: distill.distill_loss("bkl", a, b, T)):
        x = torch.tensor([[s]], requires_grad=True)
        loss = fn(x, torch.tensor([[t]]), T)
        (grad,) = torch.autograd.grad(loss, x)
        out += [float(loss.detach()), float(grad)]
    return tuple(out)


def official_matches_stable(T: float, n: int = 2000, seed: int = 0) -> tuple[float, int]:
    """Max relative error between the official and the log-sigmoid BinaryKL per entry, in
    float64, over random logit pairs in [−30, 30] where the official form is finite."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 60
    t = (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 60
    official = torch.stack([distill.binary_kl_official(s[i:i + 1], t[i:i + 1], T)
                            for i in range(n)])
    stable = torch.stack([distill.distill_loss("bkl", s[i:i + 1], t[i:i + 1], T)
                          for i in range(n)])
    # the official clamp (1e-8) changes the value where a sigmoid is within 1e-8 of 0 or 1
    inside = ((torch.sigmoid(s / T) - 0.5).abs() < 0.5 - 1e-7).flatten() & \
        ((torch.sigmoid(t / T) - 0.5).abs() < 0.5 - 1e-7).flatten() & torch.isfinite(official)
    err = ((official - stable).abs() / stable.abs().clamp_min(1e-12))[inside]
    return float(err.max()), int(inside.sum())


# --- preconditions and tables ------------------------------------------------------------------

def alpha_table(specs: list[dict], results: list[dict], factors: dict) -> list[list[str]]:
    """Rows: method, mean validation accuracy per α factor, the chosen α."""
    scores: dict[tuple, dict[float, list[float]]] = {}
    alphas = {}
    for spec, result in zip(specs, results):
        key = (spec["data"]["setting"], spec["pair"], spec["method"])
        scores.setdefault(key, {}).setdefault(spec["alpha_factor"], []).append(result["val_acc"])
        alphas[(*key, spec["alpha_factor"])] = spec["alpha"]
    return [[LABELS[key[2]], *(f"{statistics.fmean(v):.3f}" for v in by_f.values()),
             f"{alphas[(*key, factors[key])]:g}"] for key, by_f in scores.items()]


def plateau(specs: list[dict], results: list[dict], setting: str, pair: str,
            method: str = "ce", tolerance: float = 0.01) -> dict:
    """The plateau precondition: the `method` students' final training accuracy ≥ 0.99 and
    their mean test accuracy changes by < `tolerance` over the last quarter of training (from
    the first evaluation at ≥ 75 % of the steps to the end)."""
    runs = [r for s, r in zip(specs, results) if s["data"]["setting"] == setting
            and s["pair"] == pair and s["method"] == method]
    total = runs[0]["history"][-1]["step"]
    late = next(i for i, h in enumerate(runs[0]["history"]) if h["step"] >= 0.75 * total)
    late_acc = statistics.fmean(r["history"][late]["test_acc"] for r in runs)
    final_acc = statistics.fmean(r["test_acc"] for r in runs)
    train = statistics.fmean(r["train_acc"] for r in runs)
    change = final_acc - late_acc
    return {"train_acc": train, "late_acc": late_acc, "final_acc": final_acc,
            "late_step": runs[0]["history"][late]["step"], "change": change,
            "ok": train >= 0.99 and abs(change) < tolerance}


def kd_beats_ce(kd: list[float], ce: list[float]) -> dict:
    """The precondition of the DHKD-vs-KD claim: the seed-paired KD − CE interval above 0."""
    from lossbook import claims

    effect = claims.paired_interval(kd, ce)
    return {"ok": claims.decide(effect, 0.0, "greater") == "held",
            "text": f"KD − CE {claims.effect_text(effect)}"}


def onset_table(specs, results, sweep_specs, sweep_results, setting: str, pair: str,
                scales) -> tuple[list[list[str]], float | None]:
    """Rows per (teacher scale, form) of the official-numerics sweep, and the onset: the
    smallest scale at which every seed of the official form had a non-finite loss."""
    runs = [(s, r) for s, r in zip(specs, results) if s["data"]["setting"] == setting
            and s["pair"] == pair] + list(zip(sweep_specs, sweep_results))
    rows, onset = [], None
    for scale in sorted(scales):
        for method in SCALE_METHODS:
            chosen = [r for s, r in runs if s["method"] == method
                      and s.get("teacher_scale", 1.0) == scale]
            if not chosen:
                continue
            bad = [r["nan_step"] for r in chosen if r["nan_step"] is not None]
            rows.append([f"× {scale:g}", "official" if method.endswith("official") else
                         "log-sigmoid", f"{len(bad)}/{len(chosen)}",
                         f"{min(bad)}–{max(bad)}" if bad else "–",
                         f"{statistics.fmean(r['test_acc'] for r in chosen):.3f}"])
            if (method.endswith("official") and onset is None and len(bad) == len(chosen)):
                onset = scale
    return rows, onset
