"""Learning from several training environments: invariance penalties, the Hessian-alignment
methods HGP and Hutchinson (Hemati et al., ICCV 2023), and the multi-environment training loop.

Every penalty is reimplemented from the official code and named after it (read, not copied;
the official code is Apache-2.0):

- **HGP, Hutchinson** — `huawei-noah/Federated-Learning`, folder `HessianAlignment/`:
  `cmnist/cmnist_HGP.py` and `cmnist/cmnist_Hutchinson.py` (the Colored-MNIST scripts; their
  `*_imbalanced.py` twins for label shift) and `domainbed/algorithms.py` classes `HGP` and
  `Hutchinson`, with defaults from `domainbed/hparams_registry.py`.
- **IRM (v1), V-REx, Fishr** — the same Colored-MNIST scripts, which copy them from the Fishr
  CMNIST script (`alexrame/fishr`, itself from `facebookresearch/InvariantRiskMinimization`);
  Fishr's DomainBed form (moving average, mean reductions) from `domainbed/algorithms.py`.
- **CORAL** — DomainBed `AbstractMMD(gaussian=False)`.

Two protocols, as in the official code:

- ``"cmnist"`` (the Colored-MNIST scripts): full-batch steps over every training environment;
  loss = mean_e NLL_e + l2·Σ‖θ‖² + w(t)·penalty with w(t) = `penalty_weight` from step
  `anneal_iters` on and 1.0 before, and the whole loss divided by w(t) when w(t) > 1. The
  penalties are *sums* over environments and are not detached (HGP: α = β = 1).
- ``"domainbed"`` (`domainbed/algorithms.py`): one minibatch per environment per step (drawn
  with replacement), Adam with weight decay, penalties *averaged* over environments, the
  environment mean detached in HGP/Hutchinson, Fishr with an exponential moving average of the
  gradient variances and an Adam reset when its penalty switches on.

Only the classifier head's parameters θ_h enter the HGP/Hutchinson/Fishr terms; models are
`FeatureHead(body, head)` with a linear head.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

METHODS = ("erm", "irm", "vrex", "fishr", "coral", "hgp", "hutchinson")
PROTOCOLS = ("cmnist", "domainbed")
NORM_EPS = 1e-16  # HGP: keeps ‖g‖ differentiable at g = 0 (the official code adds 1e-16 too)


# --- models ------------------------------------------------------------------------------------

class FeatureHead(nn.Module):
    """`head(body(x))`, with the feature extractor and the linear classifier head kept apart."""

    def __init__(self, body: nn.Module, head: nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x)
        return features, self.head(features)


def cmnist_mlp(in_dim: int, hidden: int, out_dim: int = 1) -> FeatureHead:
    """The Colored-MNIST scripts' MLP: Linear–ReLU–Linear–ReLU body, linear head, Xavier-uniform
    weights and zero biases (392 → 390 → 390 → 1 in the official scripts)."""
    layers = [nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out_dim)]
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    body = nn.Sequential(nn.Flatten(), layers[0], nn.ReLU(), layers[1], nn.ReLU())
    return FeatureHead(body, layers[2])


# --- losses --------------------------------------------------------------------------------------

def nll(logits: Tensor, y: Tensor) -> Tensor:
    """Mean negative log-likelihood: binary cross-entropy with logits for a single-logit head (the
    Colored-MNIST scripts' `mean_nll`), softmax cross-entropy otherwise (DomainBed)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    return F.cross_entropy(logits, y)


@torch.no_grad()
def accuracy(logits: Tensor, y: Tensor) -> float:
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return (pred == y).float().mean().item()


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


# --- head gradients and Hessians ------------------------------------------------------------------

def head_gradient(loss: Tensor, params: Sequence[Tensor], create_graph: bool = True) -> Tensor:
    """g = ∇_θh L, flattened in parameter order (weight row-major, then bias)."""
    return flat(torch.autograd.grad(loss, params, create_graph=create_graph, retain_graph=True))


def hessian_gradient_product(loss: Tensor, params: Sequence[Tensor],
                             create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """(H g, g) for H = ∇²L and g = ∇L without forming H: H g = ‖g‖ · ∇‖g‖ (HGP).

    Two backward passes, as in the official `HGP.update`: g with a graph, then the gradient of
    its norm. (Since ∇‖g‖ = H g/‖g‖; equivalently H g = ∇ ½‖g‖².) The norm is
    sqrt(‖g‖² + 1e-16), which keeps it differentiable at g = 0 and leaves the identity exact.
    """
    g = head_gradient(loss, params, create_graph=True)
    norm = torch.sqrt(g.pow(2).sum() + NORM_EPS)
    grad_norm = flat(torch.autograd.grad(norm, params, create_graph=create_graph,
                                         retain_graph=True))
    return norm * grad_norm, g


def hessian_vector_product(loss: Tensor, params: Sequence[Tensor], v: Tensor) -> Tensor:
    """H v by explicit double backward (∇(g·v)): the reference HGP's identity is checked against."""
    g = head_gradient(loss, params, create_graph=True)
    return flat(torch.autograd.grad(g @ v, params, retain_graph=True))


def rademacher(shape, generator: torch.Generator | None = None, device=None,
               dtype=torch.float32) -> Tensor:
    z = torch.randint(0, 2, shape, generator=generator, device="cpu", dtype=torch.int64)
    return (2 * z - 1).to(device=device, dtype=dtype)


def hutchinson_diagonal(g: Tensor, params: Sequence[Tensor], probes: int,
                        generator: torch.Generator | None = None,
                        create_graph: bool = True) -> Tensor:
    """Hutchinson's estimate of diag H: (1/S) Σ_s z_s ⊙ (H z_s), z_s i.i.d. Rademacher.

    `g` is the head gradient built with a graph; H z_s = ∇(g·z_s). The official
    `calc_hessian_diag` loops over the S probes; here the S Hessian-vector products are one
    batched backward pass (the same estimator). The official code uses S = 300 (DomainBed) and
    S = 150 (Colored-MNIST scripts). Unbiased, with variance Σ_{j≠i} H_ij² per entry, so the error
    falls as 1/√S.
    """
    z = rademacher((probes, g.numel()), generator, g.device, g.dtype)
    hz = torch.autograd.grad(g, params, grad_outputs=z, is_grads_batched=True,
                             create_graph=create_graph, retain_graph=True)
    hz = torch.cat([h.reshape(probes, -1) for h in hz], dim=1)
    return (z * hz).mean(0)


def full_hessian(loss: Tensor, params: Sequence[Tensor]) -> Tensor:
    """The explicit P×P Hessian, one row per backward pass (the official `eval_hessian`)."""
    g = head_gradient(loss, params, create_graph=True)
    rows = [flat(torch.autograd.grad(g[i], params, retain_graph=True)) for i in range(g.numel())]
    return torch.stack(rows)


def _head_layout(features: Tensor, logits: Tensor) -> tuple[Tensor, int, int]:
    """φ̃ = [φ; 1] and the sizes (C outputs, d features)."""
    ones = torch.ones(len(features), 1, dtype=features.dtype, device=features.device)
    return torch.cat([features, ones], 1), logits.shape[1], features.shape[1]


def _torch_order(c: int, d: int) -> Tensor:
    """Permutation from (class, feature-or-bias) Kronecker indices to torch's (W row-major, b)."""
    kron_index = torch.arange(c * (d + 1)).view(c, d + 1)
    return torch.cat([kron_index[:, :d].reshape(-1), kron_index[:, d]])


def _output_curvature(logits: Tensor) -> Tensor:
    """∂²ℓ/∂z² per example: σ(z)(1−σ(z)) (logistic, [N,1,1]) or diag p − ppᵀ (softmax, [N,C,C])."""
    if logits.shape[1] == 1:
        s = torch.sigmoid(logits)
        return (s * (1 - s))[:, :, None]
    p = torch.softmax(logits, dim=1)
    return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


def linear_head_hessian(features: Tensor, logits: Tensor) -> Tensor:
    """Closed-form Hessian of the mean NLL w.r.t. a linear head (W, b), in torch's order:

    H = (1/N) Σ_i A_i ⊗ φ̃_i φ̃_iᵀ,  A_i = diag p_i − p_i p_iᵀ (softmax) or σ_i(1−σ_i) (logistic),
    φ̃ = [φ; 1]. It does not depend on the labels.
    """
    phi, c, d = _head_layout(features, logits)
    a = _output_curvature(logits)
    # Σ_n A_n[a,b] φ̃_n[i] φ̃_n[j] as one matrix product (no N × P × P intermediate)
    weighted = (a[:, :, :, None] * phi[:, None, None, :]).reshape(len(phi), -1)
    h = (weighted.t() @ phi).reshape(c, c, d + 1, d + 1).permute(0, 2, 1, 3) / len(phi)
    order = _torch_order(c, d)
    return h.reshape(c * (d + 1), c * (d + 1))[order][:, order]


def linear_head_hvp(features: Tensor, logits: Tensor, v: Tensor) -> Tensor:
    """H v for the closed-form head Hessian without forming it: (1/N) Σ_i (A_i V φ̃_i) ⊗ φ̃_i,
    with v in torch's order; O(N·P) instead of O(N·P²)."""
    phi, c, d = _head_layout(features, logits)
    order = _torch_order(c, d)
    kron = torch.empty_like(v)
    kron[order] = v
    s = phi @ kron.view(c, d + 1).t()  # [N, C]: V φ̃_i
    t = torch.einsum("nab,nb->na", _output_curvature(logits), s)
    return (t.t() @ phi / len(phi)).reshape(-1)[order]


def hutchinson_diagonal_closed(hessian: Tensor, z: Tensor) -> Tensor:
    """Hutchinson's estimate (1/S) Σ_s z_s ⊙ (H z_s) for probes `z` [S, P], from an explicit H:
    entry i is Σ_j H_ij M_ij with M = zᵀz / S — the same number as the Hessian-vector-product
    form, for the same probes (tested), at the cost of one P × P product."""
    return (hessian * (z.t() @ z / len(z))).sum(1)


def linear_head_residuals(logits: Tensor, y: Tensor) -> Tensor:
    """∂ℓ/∂z per example: σ(z) − y (logistic) or p − e_y (softmax), shape [N, C]."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits) - y.to(logits.dtype)[:, None]
    return torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)


def per_sample_head_gradients(features: Tensor, logits: Tensor, y: Tensor) -> Tensor:
    """∇_θh ℓ(x_i, y_i) for every example, [N, P] in torch order: (∂ℓ/∂z) ⊗ φ̃.

    What BackPACK's `BatchGrad` returns for a linear layer (times the batch size when the loss is
    a mean, as the Fishr code multiplies back); differentiable w.r.t. the features.
    """
    phi, c, d = _head_layout(features, logits)
    r = linear_head_residuals(logits, y)
    grads = (r[:, :, None] * phi[:, None, :]).reshape(len(phi), c * (d + 1))
    return grads[:, _torch_order(c, d)]


def linear_head_gradient(features: Tensor, logits: Tensor, y: Tensor) -> Tensor:
    """Closed-form g = (1/N) Σ_i (∂ℓ/∂z_i) ⊗ φ̃_i."""
    return per_sample_head_gradients(features, logits, y).mean(0)


# --- penalties ----------------------------------------------------------------------------------

def irm_penalty(logits: Tensor, y: Tensor) -> Tensor:
    """IRMv1 (Arjovsky et al. 2019): ‖∇_{w|w=1} NLL(w · logits)‖², as in the CMNIST scripts."""
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    (grad,) = torch.autograd.grad(nll(logits * scale, y), [scale], create_graph=True)
    return grad.pow(2).sum()


def vrex_penalty(losses: Sequence[Tensor]) -> Tensor:
    """V-REx (Krueger et al. 2021) as the CMNIST scripts write it: Σ_{e<e'} (L_e − L_e')².

    For two environments this is their `(nll_0 − nll_1)²`; it equals E²·Var_e(L_e), so DomainBed's
    variance form is this divided by E².
    """
    pairs = [(a - b).pow(2) for a, b in itertools.combinations(losses, 2)]
    return torch.stack(pairs).sum()


def gradient_variance(per_sample: Tensor) -> Tensor:
    """Centred variance of per-example gradients, per parameter (Fishr, mean over examples)."""
    return (per_sample - per_sample.mean(0, keepdim=True)).pow(2).mean(0)


def fishr_penalty(variances: Sequence[Tensor], reduction: str = "sum") -> Tensor:
    """Fishr (Rame et al. 2022): distance of each environment's head-gradient variance to the mean.

    `reduction="sum"`: Σ_e ‖v_e − v̄‖² (CMNIST scripts, `l2_between_grads_variance` sums);
    `"mean"`: (1/E) Σ_e mean_p (v_e − v̄)_p² (DomainBed, `l2_between_dicts` averages).
    """
    stacked = torch.stack(list(variances))
    sq = (stacked - stacked.mean(0, keepdim=True)).pow(2)
    if reduction == "sum":
        return sq.sum()
    if reduction == "mean":
        return sq.mean(1).mean()
    raise ValueError(f"unknown reduction {reduction!r}; valid: sum, mean")


def coral_distance(x: Tensor, y: Tensor) -> Tensor:
    """DomainBed's `mmd` with kernel "mean_cov": mean squared difference of feature means plus
    mean squared difference of (unbiased) feature covariances."""
    mean_x, mean_y = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    cent_x, cent_y = x - mean_x, y - mean_y
    cov_x = cent_x.t() @ cent_x / (len(x) - 1)
    cov_y = cent_y.t() @ cent_y / (len(y) - 1)
    return (mean_x - mean_y).pow(2).mean() + (cov_x - cov_y).pow(2).mean()


def coral_penalty(features: Sequence[Tensor]) -> Tensor:
    """CORAL (Sun & Saenko 2016), DomainBed form: the mean of `coral_distance` over env pairs."""
    pairs = [coral_distance(a, b) for a, b in itertools.combinations(features, 2)]
    return torch.stack(pairs).mean()


def alignment_penalty(terms: Sequence[Tensor], mean_term: Tensor, grads: Sequence[Tensor],
                      mean_grad: Tensor, *, alpha: float = 1.0, beta: float = 1.0,
                      detach: bool = False, reduction: str = "sum") -> Tensor:
    """HGP / Hutchinson alignment: Σ_e α‖T_e − T̄‖² + β‖g_e − ḡ‖² (÷E for `reduction="mean"`).

    T_e is H_e g_e (HGP) or Hutchinson's diag H_e (Hutchinson); T̄, ḡ are the same quantities of
    the mean loss L̄ = mean_e L_e — not the mean of the T_e. CMNIST scripts: α = β = 1, sum, no
    detach. DomainBed (`HGP.update`, `Hutchinson.update`): the mean terms detached, ÷E.
    """
    if detach:
        mean_term, mean_grad = mean_term.detach(), mean_grad.detach()
    parts = [alpha * (t - mean_term).pow(2).sum() + beta * (g - mean_grad).pow(2).sum()
             for t, g in zip(terms, grads)]
    total = torch.stack(parts).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / len(parts)
    raise ValueError(f"unknown reduction {reduction!r}; valid: sum, mean")


# --- one training step --------------------------------------------------------------------------

@dataclass
class MethodConfig:
    """A method and its hyperparameters (official names in brackets).

    cmnist protocol: `penalty_weight` [penalty_weight], `anneal_iters` [penalty_anneal_iters],
    `l2` [l2_regularizer_weight]; HGP/Hutchinson use α = β = 1 there.
    domainbed protocol: `alpha`, `beta` [penalty_alpha, penalty_beta] for HGP/Hutchinson,
    `penalty_weight` = Fishr's λ [lambda] / CORAL's γ [mmd_gamma], `anneal_iters` (Fishr),
    `ema` (Fishr), `weight_decay`.
    """

    method: str = "erm"
    protocol: str = "cmnist"
    penalty_weight: float = 1.0
    anneal_iters: int = 0
    l2: float = 0.0
    alpha: float = 1.0
    beta: float = 1.0
    probes: int = 150
    ema: float = 0.95
    weight_decay: float = 0.0
    closed_form: bool = False  # HGP/Hutchinson from closed-form head Hessians (same values)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if self.protocol == "domainbed" and self.method in ("irm", "vrex"):
            raise ValueError(f"{self.method} is implemented in the CMNIST scripts' form only")


@dataclass
class StepState:
    step: int = 0
    fishr_ema: list = field(default_factory=list)  # DomainBed Fishr: per-env moving averages
    generator: torch.Generator | None = None


def _moving_average(state: StepState, e: int, value: Tensor, ema: float) -> Tensor:
    """DomainBed `MovingAverage(ema, oneminusema_correction=True)` for environment e."""
    while len(state.fishr_ema) <= e:
        state.fishr_ema.append(None)
    previous = state.fishr_ema[e] if state.fishr_ema[e] is not None else torch.zeros_like(value)
    averaged = ema * previous + (1 - ema) * value
    state.fishr_ema[e] = averaged.detach()
    return averaged / (1 - ema)


def penalty_terms(model: FeatureHead, batches: Sequence[tuple[Tensor, Tensor]],
                  cfg: MethodConfig, state: StepState) -> dict:
    """Per-environment NLLs, their mean, and the method's penalty (unweighted) on `batches`."""
    outs = [model.features_and_logits(x) for x, _ in batches]
    ys = [y for _, y in batches]
    losses = [nll(z, y) for (_, z), y in zip(outs, ys)]
    mean_nll = torch.stack(losses).mean()
    method, protocol = cfg.method, cfg.protocol
    reduction = "sum" if protocol == "cmnist" else "mean"
    params = list(model.head.parameters())
    if method == "erm":
        penalty = torch.zeros((), device=mean_nll.device)
    elif method == "irm":
        penalty = torch.stack([irm_penalty(z, y) for (_, z), y in zip(outs, ys)]).mean()
    elif method == "vrex":
        penalty = vrex_penalty(losses)
    elif method == "coral":
        penalty = coral_penalty([f for f, _ in outs])
    elif method == "fishr":
        variances = [gradient_variance(per_sample_head_gradients(f, z, y))
                     for (f, z), y in zip(outs, ys)]
        if protocol == "domainbed":
            variances = [_moving_average(state, e, v, cfg.ema) for e, v in enumerate(variances)]
        penalty = fishr_penalty(variances, reduction)
    elif method in ("hgp", "hutchinson") and cfg.closed_form:
        penalty = _closed_form_alignment(cfg, outs, ys, state)
    elif method == "hgp":
        hg, g = zip(*[hessian_gradient_product(loss, params) for loss in losses])
        hg_mean, g_mean = hessian_gradient_product(mean_nll, params)
        penalty = _align(cfg, hg, hg_mean, g, g_mean)
    else:  # hutchinson
        g = [head_gradient(loss, params) for loss in losses]
        g_mean = head_gradient(mean_nll, params)
        diag = [hutchinson_diagonal(ge, params, cfg.probes, state.generator) for ge in g]
        diag_mean = hutchinson_diagonal(g_mean, params, cfg.probes, state.generator)
        penalty = _align(cfg, diag, diag_mean, g, g_mean)
    return {"losses": losses, "nll": mean_nll, "penalty": penalty, "outputs": outs}


def _closed_form_alignment(cfg: MethodConfig, outs, ys, state: StepState) -> Tensor:
    """HGP / Hutchinson penalties from the closed-form head Hessians and gradients of a linear
    head: H_e, g_e per environment, H̄ = mean_e H_e and ḡ = mean_e g_e (the Hessian and gradient
    of L̄ = mean_e L_e). The same function of the parameters as the autograd form — HGP's
    ‖g‖∇‖g‖ and Hutchinson's Hessian-vector products with the same probe draws (env 0, env 1,
    …, then the mean loss) — and much cheaper on large full batches (tested equal)."""
    grads = [linear_head_gradient(f, z, y) for (f, z), y in zip(outs, ys)]
    g_mean = torch.stack(grads).mean(0)
    if cfg.method == "hgp":  # H̄ ḡ = mean_e H_e ḡ
        terms = [linear_head_hvp(f, z, g) for (f, z), g in zip(outs, grads)]
        mean_term = torch.stack([linear_head_hvp(f, z, g_mean) for f, z in outs]).mean(0)
    else:
        hessians = [linear_head_hessian(f, z) for f, z in outs]
        h_mean = torch.stack(hessians).mean(0)
        size = g_mean.numel()
        probes = [rademacher((cfg.probes, size), state.generator, g_mean.device, g_mean.dtype)
                  for _ in range(len(hessians) + 1)]
        terms = [hutchinson_diagonal_closed(h, z) for h, z in zip(hessians, probes)]
        mean_term = hutchinson_diagonal_closed(h_mean, probes[-1])
    return _align(cfg, terms, mean_term, grads, g_mean)


def _align(cfg: MethodConfig, terms, mean_term, grads, mean_grad) -> Tensor:
    if cfg.protocol == "cmnist":
        return alignment_penalty(terms, mean_term, grads, mean_grad)
    return alignment_penalty(terms, mean_term, grads, mean_grad, alpha=cfg.alpha, beta=cfg.beta,
                             detach=True, reduction="mean")


def step_weight(cfg: MethodConfig, step: int) -> float:
    """The penalty weight at `step` (0-based). CMNIST scripts: 1.0 before `anneal_iters`;
    DomainBed: HGP/Hutchinson always on (α, β inside), CORAL γ always, Fishr 0 before."""
    if cfg.method == "erm":
        return 0.0
    if cfg.protocol == "cmnist":
        return cfg.penalty_weight if step >= cfg.anneal_iters else 1.0
    if cfg.method in ("hgp", "hutchinson"):
        return 1.0
    if cfg.method == "fishr":
        return cfg.penalty_weight if step >= cfg.anneal_iters else 0.0
    return cfg.penalty_weight


def objective(model: FeatureHead, batches, cfg: MethodConfig, state: StepState) -> dict:
    """The scalar training objective of one step and its parts."""
    terms = penalty_terms(model, batches, cfg, state)
    weight = step_weight(cfg, state.step)
    if cfg.protocol == "cmnist":
        loss = terms["nll"] + cfg.l2 * sum(p.pow(2).sum() for p in model.parameters())
        if cfg.method != "erm":
            loss = loss + weight * terms["penalty"]
            if weight > 1.0:  # the scripts rescale to keep gradients in a reasonable range
                loss = loss / weight
    else:
        loss = terms["nll"]
        if cfg.method == "erm":  # DomainBed ERM: CE over the concatenated minibatches
            logits = torch.cat([z for _, z in terms["outputs"]])
            loss = nll(logits, torch.cat([y for _, y in batches]))
        elif cfg.method == "fishr":
            logits = torch.cat([z for _, z in terms["outputs"]])
            loss = nll(logits, torch.cat([y for _, y in batches]))
        loss = loss + weight * terms["penalty"]
    return {"loss": loss, "nll": terms["nll"].detach(), "penalty": terms["penalty"].detach(),
            "weight": weight}


# --- the training loop --------------------------------------------------------------------------

class Trainer:
    """Multi-environment training of `model` on `envs` = [(x_e, y_e), …], resumable and
    clonable (penalty-weight grids branch from the shared pre-annealing prefix).

    `batch_size=None`: full-batch steps (CMNIST protocol); otherwise one minibatch of that size
    per environment per step, drawn with replacement (DomainBed's `InfiniteDataLoader`). Adam
    with `cfg.weight_decay`; under the DomainBed protocol Adam is re-created when Fishr's penalty
    switches on (as `Fishr.update` does). `evaluate(model)` is logged every `eval_every` steps
    and after the last step of `run`.

    `lossbook.train.fit` draws minibatches from one pooled dataset; these methods need one batch
    per environment and the per-step penalty schedule, hence this loop.
    """

    def __init__(self, model: FeatureHead, envs: Sequence[tuple[Tensor, Tensor]],
                 cfg: MethodConfig, *, lr: float, batch_size: int | None = None, seed: int = 0,
                 evaluate: Callable[[FeatureHead], dict] | None = None, eval_every: int = 0):
        self.model, self.envs, self.cfg = model, list(envs), cfg
        self.lr, self.batch_size = lr, batch_size
        self.evaluate, self.eval_every = evaluate, eval_every
        torch.manual_seed(seed)
        self.state = StepState(generator=torch.Generator().manual_seed(seed))
        self.optimizer = self._make_optimizer()
        self.history: list[dict] = []

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr,
                                weight_decay=self.cfg.weight_decay)

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        if self.batch_size is None:
            return self.envs
        out = []
        for x, y in self.envs:
            idx = torch.randint(len(y), (self.batch_size,), generator=self.state.generator)
            idx = idx.to(y.device)
            out.append((x[idx], y[idx]))
        return out

    def step(self) -> dict:
        cfg, state = self.cfg, self.state
        if (cfg.protocol == "domainbed" and cfg.method == "fishr"
                and state.step == cfg.anneal_iters and state.step > 0):
            self.optimizer = self._make_optimizer()
        self.model.train()
        out = objective(self.model, self.batches(), cfg, state)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        state.step += 1
        return out

    def run(self, until: int) -> list[dict]:
        """Train up to step `until` (total, not additional); returns the history so far."""
        out = None
        while self.state.step < until:
            out = self.step()
            done = self.state.step == until
            if self.evaluate is not None and (
                    done or (self.eval_every and self.state.step % self.eval_every == 0)):
                self.model.eval()
                self.history.append({"step": self.state.step, "loss": out["loss"].item(),
                                     "nll": out["nll"].item(),
                                     "penalty": out["penalty"].item(),
                                     **self.evaluate(self.model)})
        return self.history

    def branch(self, **changes) -> Trainer:
        """An independent copy (model, Adam state, RNG, history) with `cfg` fields changed."""
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model)
        twin.cfg = replace(self.cfg, **changes)
        twin.optimizer = twin._make_optimizer()
        twin.optimizer.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
        generator = torch.Generator().manual_seed(0)
        generator.set_state(self.state.generator.get_state())
        twin.state = StepState(self.state.step, [None if t is None else t.clone()
                                                 for t in self.state.fishr_ema], generator)
        twin.history = [dict(h) for h in self.history]
        return twin


@torch.no_grad()
def env_hessian(model: FeatureHead, x: Tensor) -> Tensor:
    """Closed-form head Hessian of the mean NLL on inputs x (labels do not enter it)."""
    features, logits = model.features_and_logits(x)
    return linear_head_hessian(features, logits)
