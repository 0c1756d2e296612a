"""Chapter 3 — Hessian alignment for domain generalisation (Hemati et al., ICCV 2023).

Three kinds of work, all pure functions of their arguments:

- training-free checks of the theory (`identity_check`, `closed_form_check`, `hutchinson_check`):
  exact comparisons of HGP's Hessian-gradient identity, the closed-form head Hessian and
  Hutchinson's diagonal estimator against explicit autograd computations;
- `cmnist_run(spec)`: one restart of one method on Colored MNIST(-1D) under the official CMNIST
  scripts' protocol (full batch, penalty annealing), for a whole grid of penalty weights — the
  grid points share the pre-annealing prefix (before `anneal_iters` every weight is 1.0) and
  branch from it;
- `diversity_run(spec)`: one leave-one-domain-out run on MNIST-1D generator domains under the
  DomainBed protocol.

Runs are JSON-able specs → dicts, so `ch.sweep` caches them and runs them in worker processes.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from lossbook import domains
from lossbook import invariance as inv
from lossbook.presets import between, nonempty, one_of, positive

OFFICIAL_WEIGHT = 91257.18613115903  # cmnist_HGP.py / cmnist_Hutchinson.py --penalty_weight
OFFICIAL_LR = 0.0004898536566546834  # --lr
OFFICIAL_L2 = 0.00110794568  # --l2_regularizer_weight
METHOD_LABELS = {"erm": "ERM", "irm": "IRM", "vrex": "V-REx", "fishr": "Fishr",
                 "coral": "CORAL", "hgp": "HGP", "hutchinson": "Hutchinson",
                 "gray": "grayscale model (oracle)"}
MNIST1D_SETTINGS = {"centred": domains.CENTRED_MNIST1D, "easy": domains.EASY_MNIST1D,
                    "default": {}}


@dataclass(frozen=True)
class Config:
    # (1) training-free checks
    identity_dims: tuple[int, ...] = (4, 16, 64, 256)
    identity_classes: tuple[int, ...] = (1, 10)
    identity_max_params: int = 700  # explicit Hessians only up to this many head parameters
    hutch_probes: tuple[int, ...] = (1, 3, 10, 30, 100, 300, 1000)
    hutch_trials: int = 30
    bias_trials: int = 400  # probe draws for the expected-Hutchinson-penalty check
    # (2) correlation shift: Colored MNIST(-1D) and the CMNIST scripts' protocol
    task: str = "cmnist1d"  # "cmnist1d" (MNIST-1D signals) or "cmnist" (real MNIST, download)
    mnist1d_samples: int = 12000  # 9,600 training-pool signals (2 × 4,800) + 2,400 test
    mnist1d_setting: str = "centred"
    train_e: tuple[float, ...] = (0.2, 0.1)
    test_e: float = 0.9
    label_flip: float = 0.25
    holdout_fraction: float = 0.2  # of each training environment, for model selection
    oracle_fraction: float = 0.2  # of the test environment, for oracle selection only
    methods: tuple[str, ...] = ("erm", "vrex", "fishr", "hgp", "hutchinson")
    hidden: int = 64
    steps: int = 501
    lr: float = OFFICIAL_LR
    l2: float = OFFICIAL_L2
    anneal_iters: int = 190
    penalty_weights: tuple[float, ...] = (OFFICIAL_WEIGHT,)
    probes: int = 150  # Hutchinson probes (official CMNIST scripts: 150)
    # penalties computed from closed-form head Hessians (equal values, tested): Hutchinson's
    # 150 Hessian-vector products are ~4× cheaper so; HGP's two backward passes are already cheap
    closed_form: tuple[str, ...] = ("hutchinson",)
    max_gray_gap: float = 0.10  # precondition: ERM's gray accuracy within this of the oracle's
    restarts: int = 5
    eval_every: int = 10
    # (3) label shift: the official imbalanced variant
    label_shift: bool = False
    label_shift_p: float = 0.97
    # (4) diversity shift: leave-one-domain-out over MNIST-1D generator domains (DomainBed)
    diversity: bool = False
    domain_names: tuple[str, ...] = tuple(domains.MNIST1D_DOMAINS)
    domain_samples: int = 2500  # per domain
    diversity_methods: tuple[str, ...] = ("erm", "coral", "fishr", "hgp", "hutchinson")
    diversity_channels: int = 32
    diversity_steps: int = 1500
    diversity_batch: int = 64
    diversity_lr: float = 1e-3
    diversity_eval_every: int = 100
    diversity_restarts: int = 5
    diversity_probes: int = 300  # DomainBed Hutchinson (calc_hessian_diag repeat=300)
    hparam_draws: int = 0  # DomainBed random search: 0 = the registry defaults only
    fishr_anneal: int = 1500  # DomainBed Fishr penalty_anneal_iters
    # data for the full preset
    data_dir: str = ""
    download: bool = False


CONSTRAINTS = {  # checked by lossbook.presets.resolve (with finite, ≥ 0 numbers everywhere)
    "task": one_of("cmnist1d", "cmnist"), "mnist1d_setting": one_of(*MNIST1D_SETTINGS),
    "methods": (nonempty, one_of(*inv.METHODS)), "diversity_methods": one_of(*inv.METHODS),
    "domain_names": one_of(*domains.MNIST1D_DOMAINS), "train_e": (nonempty, between(0, 1)),
    "test_e": between(0, 1), "label_flip": between(0, 1), "holdout_fraction": between(0, 0.9),
    "oracle_fraction": between(0, 0.9), "label_shift_p": between(0, 1),
    "max_gray_gap": between(0, 1), "closed_form": one_of("hgp", "hutchinson"),
    "identity_dims": positive, "identity_classes": positive, "hutch_probes": positive,
    "hidden": positive, "diversity_channels": positive, "domain_samples": positive,
}


PRESETS = {
    "smoke": Config(identity_dims=(4, 8), identity_classes=(1, 3), hutch_probes=(1, 10, 100),
                    hutch_trials=4, bias_trials=200, mnist1d_samples=1000, hidden=16, steps=24,
                    anneal_iters=10,
                    penalty_weights=(1e2, 1e4), probes=4, restarts=1, eval_every=8,
                    label_shift=True, diversity=True, domain_names=("default", "reversed",
                                                                    "noisy"),
                    domain_samples=300, diversity_methods=("erm", "coral", "hgp"),
                    diversity_channels=8, diversity_steps=10, diversity_batch=16,
                    diversity_eval_every=5, diversity_restarts=1, diversity_probes=4,
                    fishr_anneal=5),
    "book": Config(),
    # The label-shift variant and the diversity-shift experiment do not fit the book's 3-minute
    # budget on 2 CPU cores (each roughly doubles it); they run here.
    "extended": Config(label_shift=True, diversity=True),
    # The paper's scale, for a GPU: real Colored MNIST (MNIST downloaded and checked by
    # `lossbook.mnist`) with the official scripts' model (392-390-390-1), 150 Hutchinson probes
    # and 10 restarts; the label-shift variant; diversity shift with DomainBed's defaults (5,000
    # steps, 300 probes) plus 8 random hyperparameter draws.
    "full": Config(task="cmnist", hidden=390, probes=150, restarts=10, label_shift=True,
                   methods=("erm", "irm", "vrex", "fishr", "hgp", "hutchinson"),
                   diversity=True, domain_samples=10000, diversity_steps=5000,
                   diversity_restarts=3, hparam_draws=8, eval_every=10, download=True),
}


# --- (1) training-free checks -------------------------------------------------------------------

def random_head_problem(d: int, classes: int, n: int = 64, in_dim: int = 10, seed: int = 0,
                        dtype=torch.float64):
    """A random tanh feature layer + linear head and a random labelled batch."""
    g = torch.Generator().manual_seed(seed)
    body = nn.Sequential(nn.Linear(in_dim, d), nn.Tanh())
    head = nn.Linear(d, classes)
    with torch.no_grad():
        for p in [*body.parameters(), *head.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, p.shape[-1])))
    model = inv.FeatureHead(body, head).to(dtype)
    x = torch.randn(n, in_dim, generator=g, dtype=dtype)
    y = torch.randint(0, max(2, classes), (n,), generator=g)
    return model, x, y


def identity_check(dims, classes, max_params: int, seed: int = 0) -> list[dict]:
    """HGP's H g = ‖g‖∇‖g‖ against an explicit Hessian-vector product (double backward) and,
    up to `max_params`, against the explicitly formed Hessian times g; with timings."""
    rows = []
    for c in classes:
        for d in dims:
            for dtype in (torch.float32, torch.float64):
                model, x, y = random_head_problem(d, c, seed=seed, dtype=dtype)
                params = list(model.head.parameters())
                loss = inv.nll(model(x), y)
                t0 = time.perf_counter()
                hg, g = inv.hessian_gradient_product(loss, params, create_graph=False)
                t_hgp = time.perf_counter() - t0
                ref = inv.hessian_vector_product(loss, params, g.detach())
                row = {"classes": c, "d": d, "params": g.numel(), "dtype": str(dtype)[6:],
                       "err_hvp": ((hg - ref).norm() / ref.norm()).item(), "t_hgp": t_hgp}
                if g.numel() <= max_params:
                    t0 = time.perf_counter()
                    hess = inv.full_hessian(loss, params)
                    hg_full = hess @ g.detach()
                    row["t_full"] = time.perf_counter() - t0
                    row["err_full"] = ((hg - hg_full).norm() / hg_full.norm()).item()
                rows.append(row)
    return rows


def closed_form_check(classes=(1, 3, 10), dims=(6, 32), seed: int = 0) -> dict:
    """Closed-form head Hessian (Kronecker form) and gradient against autograd."""
    rows, example = [], None
    for c in classes:
        for d in dims:
            for dtype in (torch.float32, torch.float64):
                model, x, y = random_head_problem(d, c, seed=seed, dtype=dtype)
                features, logits = model.features_and_logits(x)
                params = list(model.head.parameters())
                loss = inv.nll(logits, y)
                auto = inv.full_hessian(loss, params)
                closed = inv.linear_head_hessian(features, logits)
                g_auto = inv.head_gradient(loss, params, create_graph=False)
                g_closed = inv.linear_head_gradient(features, logits, y)
                rows.append({"classes": c, "d": d, "params": auto.shape[0],
                             "dtype": str(dtype)[6:],
                             "err_hessian": ((closed - auto).norm() / auto.norm()).item(),
                             "err_grad": ((g_closed - g_auto).norm() / g_auto.norm()).item()})
                if c == 3 and d == dims[0] and dtype == torch.float64:
                    example = {"closed": closed.detach().numpy(), "auto": auto.detach().numpy()}
    return {"rows": rows, "example": example}


def hutchinson_check(probes, trials: int, classes: int = 4, d: int = 16,
                     seed: int = 0) -> dict:
    """Relative error of Hutchinson's diag-H estimate vs the number of probes S.

    The exact mean squared error of the Rademacher estimator is (1/S) Σ_i Σ_{j≠i} H_ij², so the
    prediction is sqrt(Σ_{i≠j} H_ij² / S) / ‖diag H‖.
    """
    model, x, y = random_head_problem(d, classes, n=256, seed=seed)
    params = list(model.head.parameters())
    loss = inv.nll(model(x), y)
    g = inv.head_gradient(loss, params, create_graph=True)
    hess = inv.full_hessian(loss, params).detach()
    diag = hess.diagonal()
    off = (hess.pow(2).sum() - diag.pow(2).sum()).item()
    gen = torch.Generator().manual_seed(seed + 1)
    errors = []
    for s in probes:
        errs = [((inv.hutchinson_diagonal(g, params, s, gen, create_graph=False) - diag).norm()
                 / diag.norm()).item() for _ in range(trials)]
        errors.append(errs)
    predicted = [math.sqrt(off / s) / diag.norm().item() for s in probes]
    return {"probes": list(probes), "errors": errors, "predicted": predicted,
            "params": int(diag.numel()), "classes": classes}


def hutchinson_bias_check(probes: int, trials: int, d: int = 16, n: int = 256,
                          seed: int = 0) -> dict:
    """Monte Carlo mean of the Hutchinson alignment penalty Σ_e ‖D̂_e − D̂(L̄)‖² over fresh probe
    draws, against its exact expectation signal + noise (`hutchinson_expected_penalty`), on a
    binary head over two environments whose inputs differ in scale."""
    model, x, _ = random_head_problem(d, 1, n=2 * n, seed=seed)
    x = torch.cat([x[:n], 1.5 * x[n:]])
    with torch.no_grad():
        hessians = [inv.env_hessian(model, part) for part in (x[:n], x[n:])]
    h_mean = torch.stack(hessians).mean(0)
    signal, noise = hutchinson_expected_penalty(hessians, probes)
    gen = torch.Generator().manual_seed(seed + 7)
    size = h_mean.shape[0]
    draws = []
    for _ in range(trials):
        z = [inv.rademacher((probes, size), gen, dtype=h_mean.dtype) for _ in range(3)]
        d_mean = inv.hutchinson_diagonal_closed(h_mean, z[2])
        draws.append(sum((inv.hutchinson_diagonal_closed(h, ze) - d_mean).pow(2).sum().item()
                         for h, ze in zip(hessians, z)))
    return {"mc_mean": statistics.fmean(draws),
            "mc_se": statistics.stdev(draws) / math.sqrt(trials),
            "exact": signal + noise, "signal": signal, "noise": noise, "probes": probes,
            "trials": trials}


def loglog_slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


# --- (2, 3) Colored MNIST(-1D) ---------------------------------------------------------------

DATA_KEYS = ("task", "mnist1d_samples", "mnist1d_setting", "train_e", "test_e", "label_flip",
             "holdout_fraction", "oracle_fraction", "data_dir", "download")
TRAIN_KEYS = ("hidden", "steps", "lr", "l2", "anneal_iters", "probes", "eval_every",
              "closed_form")


@lru_cache(maxsize=2)
def signal_pools(task: str, mnist1d_samples: int, mnist1d_setting: str, data_dir: str,
                 download: bool) -> tuple[torch.Tensor, ...]:
    """(train signals, train digits, test signals, test digits) of a task (cached per process)."""
    if task == "cmnist1d":
        return domains.mnist1d_signals(mnist1d_samples, **MNIST1D_SETTINGS[mnist1d_setting])
    if task == "cmnist":
        from pathlib import Path

        from lossbook import mnist
        from lossbook.paths import data_dir as default_data_dir

        root = Path(data_dir) if data_dir else default_data_dir() / "mnist"
        return mnist.cmnist_pools(mnist.load_mnist(root, download_missing=download))
    raise ValueError(f"unknown task {task!r}; valid: cmnist1d, cmnist")


def environments(spec: dict) -> domains.Environments:
    """The restart's environments (colours and label flips drawn with the restart seed), with the
    oracle part of the test environment split off as `test_val`."""
    pools = signal_pools(spec["task"], spec["mnist1d_samples"], spec["mnist1d_setting"],
                         spec["data_dir"], spec["download"])
    envs = domains.colored_environments(
        *pools, seed=spec["seed"], train_e=tuple(spec["train_e"]), test_e=spec["test_e"],
        label_flip=spec["label_flip"], holdout_fraction=spec["holdout_fraction"],
        label_shift=spec["label_shift"])
    g = torch.Generator().manual_seed(10_000 + spec["seed"])
    report, oracle = domains.split_holdout(envs.test["test"], spec["oracle_fraction"], g)
    envs.test = {"test": report, "test_val": oracle, "gray": envs.test["gray"]}
    return envs.to(spec["device"])


def grayscale(envs: domains.Environments) -> domains.Environments:
    """The environments seen by the colour-blind oracle (channels summed)."""
    gray = lambda env: (domains.grayscale_input(env[0]), env[1])  # noqa: E731
    return domains.Environments([gray(e) for e in envs.train], [gray(e) for e in envs.val],
                                {k: gray(v) for k, v in envs.test.items()}, envs.train_e)


def off_diagonal_energy(h: torch.Tensor) -> float:
    """Σ_{i≠j} H_ij², the variance of Hutchinson's diagonal estimate times S."""
    return (h.pow(2).sum() - h.diagonal().pow(2).sum()).item()


def hutchinson_expected_penalty(hessians: list[torch.Tensor], probes: int) -> tuple[float, float]:
    """The two parts of E[Σ_e ‖D̂_e − D̂(L̄)‖²] over the probes (independent draws per term):
    signal Σ_e ‖diag H_e − diag H̄‖² and noise (1/S)(Σ_e off(H_e) + E · off(H̄)),
    off(H) = Σ_{i≠j} H_ij². (E‖X − Y‖² = ‖EX − EY‖² + tr Var X + tr Var Y for independent X, Y.)"""
    h_mean = torch.stack(hessians).mean(0)
    signal = sum((h.diagonal() - h_mean.diagonal()).pow(2).sum().item() for h in hessians)
    noise = (sum(off_diagonal_energy(h) for h in hessians)
             + len(hessians) * off_diagonal_energy(h_mean)) / probes
    return signal, noise


def cmnist_evaluator(envs: domains.Environments, probes: int = 150):
    """Accuracies on every split and the head-Hessian distances, for `Trainer(evaluate=…)`.

    hdist_train: ‖H₀ − H₁‖_F between the two training environments (the quantity the official
    `cmnist_Hutchinson.py` logs); hdist_test: ‖H̄_train − H_test‖₂, the spectral norm between
    the training mixture's and the test environment's head Hessians (the abstract's bound);
    hscale: ‖H̄_train‖_F, to tell aligned Hessians from merely small ones; the relative
    distances hrel_train = mean_e ‖H_e − H̄‖_F / ‖H̄‖_F and hrel_test = ‖H_test − H̄‖₂ / ‖H̄‖₂, which
    do not fall merely because the Hessian shrinks; hutch_signal / hutch_noise, the two parts of
    the expected Hutchinson penalty (`hutchinson_expected_penalty`).
    Head Hessians of the NLL do not depend on the labels, so the test one needs none.
    """
    def evaluate(model: inv.FeatureHead) -> dict:
        with torch.no_grad():
            out = {}
            for i, (x, y) in enumerate(envs.train):
                out[f"train{i}"] = inv.accuracy(model(x), y)
            for i, (x, y) in enumerate(envs.val):
                out[f"val{i}"] = inv.accuracy(model(x), y)
            for name, (x, y) in envs.test.items():
                out[name] = inv.accuracy(model(x), y)
            out["train"] = statistics.fmean(out[f"train{i}"] for i in range(len(envs.train)))
            out["val"] = statistics.fmean(out[f"val{i}"] for i in range(len(envs.val)))
            hessians = [inv.env_hessian(model, x) for x, _ in envs.train]
            h_test = inv.env_hessian(model, envs.test["test"][0])
            h_train = torch.stack(hessians).mean(0)
            out["hdist_train"] = (hessians[0] - hessians[1]).norm().item()
            out["hscale"] = h_train.norm().item()  # ‖H̄_train‖_F, the Hessians' own size
            out["hrel_train"] = statistics.fmean(
                ((h - h_train).norm() / h_train.norm()).item() for h in hessians)
            spectral = lambda m: torch.linalg.matrix_norm(m, ord=2)  # noqa: E731
            out["hrel_test"] = (spectral(h_test - h_train) / spectral(h_train)).item()
            out["hutch_signal"], out["hutch_noise"] = hutchinson_expected_penalty(hessians,
                                                                                  probes)
            out["hdist_test"] = torch.linalg.matrix_norm(h_train - h_test, ord=2).item()
        return {k: float(f"{v:.6g}") for k, v in out.items()}
    return evaluate


def cmnist_specs(cfg: Config, seed: int, device: str, label_shift: bool = False) -> list[dict]:
    """One spec per (method, restart), the grayscale oracle included; the expensive first."""
    base = {k: getattr(cfg, k) for k in DATA_KEYS + TRAIN_KEYS}
    base.update(train_e=list(cfg.train_e), closed_form=list(cfg.closed_form), device=device,
                label_shift=cfg.label_shift_p if label_shift else None)
    cost = {"hutchinson": 0, "hgp": 1, "fishr": 2, "irm": 3, "coral": 3, "vrex": 4, "erm": 5}
    methods = sorted(cfg.methods, key=lambda m: cost.get(m, 9)) + ["gray"]
    specs = []
    for method in methods:
        for r in range(cfg.restarts):
            weights = [0.0] if method in ("erm", "gray") else list(cfg.penalty_weights)
            specs.append({**base, "method": method, "seed": seed + r, "weights": weights})
    return specs


def build_cmnist_model(spec: dict, in_dim: int) -> inv.FeatureHead:
    torch.manual_seed(spec["seed"])
    return inv.cmnist_mlp(in_dim, spec["hidden"], 1).to(spec["device"])


def cmnist_run(spec: dict) -> dict:
    """One restart of one method on Colored MNIST(-1D), for every penalty weight of the spec.

    The CMNIST scripts' protocol: full-batch Adam steps on both training environments, the L2
    term, penalty weight 1.0 until `anneal_iters` then the grid weight (the loss divided by it).
    Since all weights coincide before `anneal_iters`, the grid branches from one shared prefix
    (model, Adam state and Hutchinson RNG copied). `method="gray"` is ERM on colour-blind inputs.
    """
    envs = environments(spec)
    method = spec["method"]
    if method == "gray":
        envs = grayscale(envs)
    in_dim = envs.train[0][0][0].numel()
    model = build_cmnist_model(spec, in_dim)
    cfg = inv.MethodConfig(method="erm" if method == "gray" else method, protocol="cmnist",
                           penalty_weight=1.0, anneal_iters=spec["anneal_iters"], l2=spec["l2"],
                           probes=spec["probes"],
                           closed_form=method in spec.get("closed_form", ()))
    trainer = inv.Trainer(model, envs.train, cfg, lr=spec["lr"], seed=spec["seed"],
                          evaluate=cmnist_evaluator(envs, spec["probes"]),
                          eval_every=spec["eval_every"])
    started, cpu = time.time(), time.process_time()
    if method not in ("erm", "gray"):
        trainer.run(min(spec["anneal_iters"], spec["steps"]))
    branches = []
    for weight in spec["weights"]:
        branch = trainer.branch(penalty_weight=weight)
        history = branch.run(spec["steps"])
        transfer = None if method == "gray" else fixed_feature_transfer(branch.model, envs,
                                                                        spec["l2"])
        branches.append({"weight": weight, "history": history, "final": history[-1],
                         "transfer": transfer})
    return {"branches": branches, "time_s": round(time.time() - started, 2),
            "cpu_s": round(time.process_time() - cpu, 2)}


def fit_logistic_head(phi: torch.Tensor, y: torch.Tensor, l2: float,
                      iterations: int = 50) -> torch.Tensor:
    """argmin_θ mean BCE(φ̃θ, y) + l2‖θ‖² on fixed features φ̃ = [φ; 1]: Newton's method with
    step halving (the objective is strictly convex), float64, to gradient norm 1e-10."""
    n, p = phi.shape
    target = y.to(phi.dtype)
    theta = torch.zeros(p, dtype=phi.dtype)
    eye = torch.eye(p, dtype=phi.dtype)
    bce = nn.functional.binary_cross_entropy_with_logits

    def objective(t):
        return bce(phi @ t, target).item() + l2 * t.pow(2).sum().item()
    for _ in range(iterations):
        prob = torch.sigmoid(phi @ theta)
        grad = phi.t() @ (prob - target) / n + 2 * l2 * theta
        if grad.norm() < 1e-10:
            break
        hess = (phi * (prob * (1 - prob))[:, None]).t() @ phi / n + 2 * l2 * eye
        step, current = torch.linalg.solve(hess, grad), objective(theta)
        scale = 1.0
        while objective(theta - scale * step) > current and scale > 1e-6:
            scale /= 2
        theta = theta - scale * step
    return theta


@torch.no_grad()
def fixed_feature_transfer(model: inv.FeatureHead, envs: domains.Environments,
                           l2: float) -> dict:
    """The bound's setting, on this model's frozen features: a head θ_S fitted to the source
    (the training environments pooled) and one θ_T fitted to the test environment. Returns the
    transfer gap L_T(θ_S) − L_T(θ_T) (target NLL lost by using the source head), and at θ_S the
    relative spectral distance ‖H_T − H_S‖₂ / ‖H_S‖₂ and the absolute one."""
    def tilde(x):
        f = model.body(x).double().cpu()
        return torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)
    phi_s = torch.cat([tilde(x) for x, _ in envs.train])
    y_s = torch.cat([y for _, y in envs.train]).cpu()
    phi_t, y_t = tilde(envs.test["test"][0]), envs.test["test"][1].cpu()
    theta_s, theta_t = fit_logistic_head(phi_s, y_s, l2), fit_logistic_head(phi_t, y_t, l2)
    bce = nn.functional.binary_cross_entropy_with_logits
    gap = (bce(phi_t @ theta_s, y_t.double()) - bce(phi_t @ theta_t, y_t.double())).item()

    def hessian(phi):
        logits = (phi @ theta_s)[:, None]
        return inv.linear_head_hessian(phi[:, :-1], logits)
    h_s, h_t = hessian(phi_s), hessian(phi_t)
    spectral = lambda m: torch.linalg.matrix_norm(m, ord=2).item()  # noqa: E731
    return {"gap": round(gap, 8), "hrel": round(spectral(h_t - h_s) / spectral(h_s), 8),
            "hdist": float(f"{spectral(h_t - h_s):.6g}")}


# --- summaries ------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(specs: list[dict], results: list[dict]) -> dict:
    """{method: {weight: [final record per restart]}}, the matching histories and the
    fixed-feature transfer checks (restart order)."""
    finals: dict = {}
    histories: dict = {}
    transfers: dict = {}
    for spec, result in zip(specs, results):
        for branch in result["branches"]:
            w = branch["weight"]
            finals.setdefault(spec["method"], {}).setdefault(w, []).append(branch["final"])
            histories.setdefault(spec["method"], {}).setdefault(w, []).append(branch["history"])
            transfers.setdefault(spec["method"], {}).setdefault(w, []).append(
                branch.get("transfer"))
    return {"finals": finals, "histories": histories, "transfers": transfers}


def official_weight(per_weight: dict) -> float:
    """The scripts' weight 91,257 where it was run, else the largest weight run (one weight
    for ERM and the oracle)."""
    return OFFICIAL_WEIGHT if OFFICIAL_WEIGHT in per_weight else max(per_weight)


def select_checkpoint(history: list[dict], metric: str) -> dict:
    """The logged checkpoint with the highest `metric` (ties: the earliest)."""
    return max(history, key=lambda h: h[metric])


RULES = {"official": "official protocol: final model",
         "train-domain": "training-domain validation (checkpoint)",
         "oracle": "test-domain oracle (checkpoint; not a fair rule)"}


def rule_records(collected: dict) -> dict:
    """{method: {rule: [record per restart]}} at the official weight: the final model (the
    scripts' protocol, which every verdict uses), the checkpoint with the best held-out
    training-environment accuracy (DomainBed's training-domain validation, applied to the
    checkpoints logged every `eval_every` steps), and the checkpoint with the best accuracy on the
    oracle part of the test environment (DomainBed's test-domain oracle, never used for a
    verdict)."""
    out = {}
    for method, per_weight in collected["finals"].items():
        w = official_weight(per_weight)
        runs = collected["histories"][method][w]
        out[method] = {"official": per_weight[w],
                       "train-domain": [select_checkpoint(h, "val") for h in runs],
                       "oracle": [select_checkpoint(h, "test_val") for h in runs]}
    return out


def summarize(records: dict,
              metrics=("train", "val", "test", "test_val", "gray", "hdist_train", "hdist_test",
                       "hscale", "hrel_train", "hrel_test")) -> dict:
    """{method: {rule: {metric: (mean, std) over restarts}}}."""
    return {m: {rule: {k: mean_std(r[k] for r in recs) for k in metrics}
                for rule, recs in per_rule.items()} for m, per_rule in records.items()}


def within_run_spearman(history: list[dict], start: int, x: str = "hrel_test",
                        y: str = "test") -> float:
    """Spearman ρ between `x` and `y` over one run's checkpoints from step `start` on."""
    points = [(h[x], h[y]) for h in history if h["step"] >= start]
    return spearman(*zip(*points))


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


# --- (4) diversity shift -------------------------------------------------------------------

DIVERSITY_KEYS = ("domain_samples", "diversity_channels", "diversity_steps", "diversity_batch",
                  "diversity_lr", "diversity_eval_every", "diversity_probes", "fishr_anneal")

# DomainBed hparams_registry.py (the HessianAlignment fork): default, random-search sampler.
REGISTRY = {
    "hgp": {"penalty_alpha": (1e-4, lambda r: 10 ** r.uniform(-5, -3)),
            "penalty_beta": (5e-3, lambda r: 10 ** r.uniform(-3, -1))},
    "hutchinson": {"penalty_alpha": (1e-3, lambda r: 10 ** r.uniform(1, 4)),
                   "penalty_beta": (5e-3, lambda r: 10 ** r.uniform(2, 6))},
    "fishr": {"lambda": (1000.0, lambda r: 10 ** r.uniform(1.0, 4.0)),
              "ema": (0.95, lambda r: r.uniform(0.90, 0.99))},
    "coral": {"mmd_gamma": (1.0, lambda r: 10 ** r.uniform(-1, 1))},
    "erm": {},
}


def draw_hparams(method: str, draw: int) -> dict:
    """Draw 0: the registry defaults; draw k > 0: a seeded draw from the registry's sampler."""
    rng = np.random.RandomState(1000 * draw + sorted(REGISTRY).index(method))
    return {name: (default if draw == 0 else float(sampler(rng)))
            for name, (default, sampler) in REGISTRY[method].items()}


@lru_cache(maxsize=1)
def domain_pools(names: tuple[str, ...], samples: int) -> dict:
    """Every MNIST-1D domain as one labelled pool (generator train + test parts), 10 classes."""
    pools = {}
    for k, name in enumerate(names):
        args = dict(domains.MNIST1D_DOMAINS[name])
        xs, ys, xt, yt = domains.mnist1d_signals(samples, seed=100 + k, **args)
        pools[name] = (torch.cat([xs, xt]), torch.cat([ys, yt]))
    return pools


def build_cnn(channels: int, classes: int = 10, length: int = 40) -> inv.FeatureHead:
    """The convolutions of `lossbook.models.CNN1D` followed, like DomainBed's `MNIST_CNN`, by
    global average pooling, so that the linear head has only (channels + 1) · classes
    parameters (Hutchinson's probes scale with it)."""
    body = nn.Sequential(nn.Unflatten(1, (1, length)),
                         nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
                         nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten())
    return inv.FeatureHead(body, nn.Linear(channels, classes))


def diversity_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    base = {k: getattr(cfg, k) for k in DIVERSITY_KEYS}
    base.update(domain_names=list(cfg.domain_names), device=device)
    specs = []
    for method in cfg.diversity_methods:
        draws = range(1 + (cfg.hparam_draws if method != "erm" else 0))
        for draw in draws:
            for test_domain in cfg.domain_names:
                for r in range(cfg.diversity_restarts):
                    specs.append({**base, "method": method, "draw": draw,
                                  "test_domain": test_domain, "seed": seed + r})
    return specs


def diversity_run(spec: dict) -> dict:
    """Leave-one-domain-out training under the DomainBed protocol (one minibatch per training
    domain per step, Adam, registry hyperparameters); checkpoints selected by held-out
    training-domain accuracy (DomainBed's `IIDAccuracySelectionMethod`)."""
    pools = domain_pools(tuple(spec["domain_names"]), spec["domain_samples"])
    envs = domains.domain_environments(pools, spec["test_domain"], seed=spec["seed"])
    envs = envs.to(spec["device"])
    torch.manual_seed(spec["seed"])
    model = build_cnn(spec["diversity_channels"]).to(spec["device"])
    method, hp = spec["method"], draw_hparams(spec["method"], spec["draw"])
    cfg = inv.MethodConfig(
        method=method, protocol="domainbed",
        penalty_weight=hp.get("lambda", hp.get("mmd_gamma", 1.0)),
        anneal_iters=spec["fishr_anneal"], alpha=hp.get("penalty_alpha", 1.0),
        beta=hp.get("penalty_beta", 1.0), probes=spec["diversity_probes"],
        ema=hp.get("ema", 0.95))

    def evaluate(m):
        with torch.no_grad():
            val = statistics.fmean(inv.accuracy(m(x), y) for x, y in envs.val)
            return {"val": round(val, 6),
                    "test": round(inv.accuracy(m(envs.test["test"][0]),
                                               envs.test["test"][1]), 6)}

    trainer = inv.Trainer(model, envs.train, cfg, lr=spec["diversity_lr"],
                          batch_size=spec["diversity_batch"], seed=spec["seed"],
                          evaluate=evaluate, eval_every=spec["diversity_eval_every"])
    cpu = time.process_time()
    history = trainer.run(spec["diversity_steps"])
    chosen = max(history, key=lambda h: h["val"])
    return {"hparams": hp, "history": history, "selected": chosen, "final": history[-1],
            "cpu_s": round(time.process_time() - cpu, 2)}


def diversity_table(specs: list[dict], results: list[dict]) -> dict:
    """{method: {test_domain: (selected test acc per restart)}} with hyperparameters chosen per
    (method, test domain) by mean selected validation accuracy over restarts."""
    runs: dict = {}
    for spec, res in zip(specs, results):
        key = (spec["method"], spec["test_domain"])
        runs.setdefault(key, {}).setdefault(spec["draw"], []).append(res["selected"])
    table: dict = {}
    for (method, domain), per_draw in runs.items():
        best = max(per_draw, key=lambda d: statistics.fmean(r["val"] for r in per_draw[d]))
        table.setdefault(method, {})[domain] = [r["test"] for r in per_draw[best]]
    return table


# --- every run of the chapter in one sweep ----------------------------------------------------

RUN_COST = {"hutchinson": 1.8, "hgp": 1.8, "fishr": 1.7, "irm": 1.2, "coral": 1.5, "vrex": 1.1,
            "erm": 1.0, "gray": 0.85}


def all_specs(cfg: Config, seed: int, device: str) -> dict[str, list[dict]]:
    """The chapter's runs by experiment: correlation shift, label shift, diversity shift."""
    groups = {"correlation": cmnist_specs(cfg, seed, device)}
    if cfg.label_shift:
        groups["label"] = cmnist_specs(cfg, seed, device, label_shift=True)
    if cfg.diversity:
        groups["diversity"] = diversity_specs(cfg, seed, device)
    for kind, specs in groups.items():
        for spec in specs:
            spec["kind"] = kind
    return groups


def run(spec: dict) -> dict:
    """One run of any kind (the single entry point the chapter's sweep uses)."""
    if spec["kind"] == "diversity":
        return diversity_run(spec)
    return cmnist_run(spec)


def cost(spec: dict) -> float:
    """Rough relative cost, to start the longest runs first."""
    base = RUN_COST.get(spec["method"], 1.0)
    if spec["kind"] == "diversity":
        return 0.5 * base * spec["diversity_steps"] / 1500
    return base * len(spec["weights"])


def sweep_all(sweep, groups: dict[str, list[dict]], desc: str = "runs") -> dict[str, list]:
    """Run every group through one `sweep` call (one worker pool), longest first; returns the
    results grouped like `groups`."""
    flat = [(kind, i, spec) for kind, specs in groups.items() for i, spec in enumerate(specs)]
    flat.sort(key=lambda item: -cost(item[2]))
    results = sweep(run, [spec for _, _, spec in flat], desc=desc)
    out = {kind: [None] * len(specs) for kind, specs in groups.items()}
    for (kind, i, _), result in zip(flat, results):
        out[kind][i] = result
    return out
