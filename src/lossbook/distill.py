"""Knowledge distillation: the dual-head student of DHKD, the distillation objectives, gradient
alignment, the probes of the neural-collapse argument, and cached teachers.

Yang, Zong, Huang, Feng & An, "Dual-Head Knowledge Distillation: Enhancing Logits Utilization
with an Auxiliary Head" (arXiv 2411.08937). Everything here is reimplemented from the paper's
description and the definitions of its official code (penghui-yang/DHKD, which has no licence,
so none of its code is copied):

- **Dual-head student** (`models/resnet.py`, `--dual_head`): one backbone φ, the usual linear
  head W₁ (trained by CE, used at inference: `validate` reads `output[0]`) and an auxiliary head
  W₂ — `nn.Linear` (`--linear`, default) or `NonLinearClassifier` (`--nonlinear`:
  Linear(d, 200) → Dropout(0.1) → BatchNorm1d(200) → ReLU → Linear(200, C)).
- **Objective** (`helper/loops.py`): γ · CE(W₁φ(x), y) + α · L(W₂φ(x), t(x)), with
  L = BinaryKL-Norm for `--distill dhkd` (T = 2) and the single-head KD baseline
  γ · CE(z, y) + α · KD(z, t) (T = 4). README: γ = 1, α = 1 on CIFAR-100.
- **Gradient alignment** (`--ga`, `helper/optimizer.py`, after PCGrad, Yu et al. 2020): the
  gradients of the two weighted terms over all parameters, g_CE and g_KD; if g_KD · g_CE < 0,
  g_KD ← g_KD − (g_KD · g_CE / ‖g_CE‖²) g_CE; the sum is applied.

Training goes through `lossbook.train.fit`: an objective is a closure `objective(model, x, y)`
that captures the (frozen, eval-mode) teacher; gradient alignment returns a surrogate whose
gradient is the aligned gradient (`aligned_loss`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lossbook import losses
from lossbook.io import read_cached, stable_hash, write_atomic
from lossbook.paths import cache_dir

AUX_HEADS = ("none", "linear", "nonlinear")


class NonLinearHead(nn.Sequential):
    """Official `NonLinearClassifier`: Linear(d,200) → Dropout(.1) → BN(200) → ReLU → Linear."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 200, dropout: float = 0.1):
        super().__init__(nn.Linear(in_dim, hidden), nn.Dropout(dropout), nn.BatchNorm1d(hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))


class Student(nn.Module):
    """Backbone φ, a linear CE head W₁ and optionally an auxiliary head W₂ (`aux`).

    `forward(x)` is the CE head's logits (what is evaluated: inference uses head 1);
    `heads(x)` returns (z_CE, z_aux), with z_aux = z_CE when there is no auxiliary head — so one
    objective covers the single-head baselines and DHKD.
    """

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int,
                 aux: str = "none"):
        super().__init__()
        if aux not in AUX_HEADS:
            raise ValueError(f"unknown auxiliary head {aux!r}; valid: {', '.join(AUX_HEADS)}")
        self.features = features
        self.head = nn.Linear(feature_dim, num_classes)
        self.aux_kind = aux
        self.aux = None
        if aux == "linear":
            self.aux = nn.Linear(feature_dim, num_classes)
        elif aux == "nonlinear":
            self.aux = NonLinearHead(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.features(x)
        z = self.head(phi)
        return z, (z if self.aux is None else self.aux(phi))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.features.parameters())


# --- objectives -------------------------------------------------------------------------------

OFFICIAL_EPS = 1e-8  # official BinaryKL's clamp (distiller_zoo/BinaryKL.py, eps=1e-8)


def binary_kl_official(student: torch.Tensor, teacher: torch.Tensor, T: float = 2.0,
                       eps: float = OFFICIAL_EPS) -> torch.Tensor:
    """BinaryKL computed the official way (`distiller_zoo/BinaryKL.py`, reimplemented): sigmoids
    of s/T and t/T clamped to [eps, 1 − eps], then KL(t ‖ s) per class from `log` of the clamped
    probabilities (as `nn.KLDivLoss(reduction="none")`), summed, × T²/N.

    Mathematically `losses.binary_kl_loss`; numerically different in float32, where 1 − 1e-8
    rounds to 1, so the upper clamp does nothing: once a student logit exceeds ≈ 16.6·T its
    sigmoid is exactly 1, log(1 − σ) = −inf, and the loss is inf (NaN when the teacher's sigmoid
    is 1 too) and its gradient NaN. In float64 it agrees with the log-sigmoid form.
    """
    n = student.shape[0]
    p_s = torch.sigmoid(student / T).clamp(eps, 1 - eps)
    p_t = torch.sigmoid(teacher / T).clamp(eps, 1 - eps)
    loss = (F.kl_div(torch.log(p_s), p_t, reduction="none")
            + F.kl_div(torch.log(1 - p_s), 1 - p_t, reduction="none"))
    return T**2 * loss.sum() / n


def distill_loss(name: str, student: torch.Tensor, teacher: torch.Tensor,
                 T: float) -> torch.Tensor:
    """`losses.distill_loss` (kd, bkl, bkln) plus `bkl_official`, the official float32 numerics."""
    if name == "bkl_official":
        return binary_kl_official(student, teacher, T)
    return losses.distill_loss(name, student, teacher, T)


def flat_grad(loss: torch.Tensor, params: Sequence[torch.Tensor],
              retain_graph: bool = True) -> torch.Tensor:
    """∂loss/∂params flattened into one vector (zeros for parameters the loss does not reach)."""
    if not loss.requires_grad:
        return torch.cat([torch.zeros_like(p).flatten() for p in params])
    grads = torch.autograd.grad(loss, list(params), retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                      for p, g in zip(params, grads)])


def project_conflicting(g_ce: torch.Tensor, g_kd: torch.Tensor) -> torch.Tensor:
    """PCGrad step of DHKD's `--ga`: remove from g_KD its component along g_CE if they conflict."""
    dot = torch.dot(g_kd, g_ce)
    if dot < 0:
        return g_kd - dot / g_ce.dot(g_ce) * g_ce
    return g_kd


def aligned_loss(params: Sequence[torch.Tensor], ce: torch.Tensor,
                 kd: torch.Tensor) -> torch.Tensor:
    """A scalar whose value is ce + kd and whose gradient is g_CE + project_conflicting(g_CE, g_KD).

    Lets `train.fit` (which calls `loss.backward()`) apply DHKD's gradient alignment.
    """
    params = [p for p in params if p.requires_grad]
    g_ce = flat_grad(ce, params)
    g_kd = flat_grad(kd, params)
    merged = g_ce + project_conflicting(g_ce, g_kd)
    surrogate, offset = 0.0, 0
    for p in params:
        n = p.numel()
        surrogate = surrogate + (p * merged[offset:offset + n].view_as(p)).sum()
        offset += n
    return (ce + kd).detach() + surrogate - surrogate.detach()


def distill_objective(teacher: nn.Module | None, *, loss: str, gamma: float, alpha: float,
                      T: float, ga: bool = False) -> Callable:
    """γ · CE(z_CE, y) + α · L(z_aux, t) with L ∈ {kd, bkl, bkln} (`loss="none"`: CE only).

    `teacher` is run in eval mode without gradients on every batch (as the official
    `train_distill`); with `ga`, the two weighted terms are gradient-aligned. The objective
    counts its calls and records in `objective.first_nonfinite` the first (1-based) step whose
    loss was not finite (None while all were).
    """
    if loss != "none" and teacher is None:
        raise ValueError(f"loss {loss!r} needs a teacher")
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def terms(model: Student, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_ce, z_aux = model.heads(x)
        ce = F.cross_entropy(z_ce, y) * gamma
        if loss == "none" or alpha == 0:
            return ce
        with torch.no_grad():
            t = teacher(x)
        kd = distill_loss(loss, z_aux, t, T) * alpha
        if ga:
            return aligned_loss(list(model.parameters()), ce, kd)
        return ce + kd

    def objective(model: Student, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = terms(model, x, y)
        objective.calls += 1
        if objective.first_nonfinite is None and not bool(torch.isfinite(value.detach())):
            objective.first_nonfinite = objective.calls
        return value

    objective.calls, objective.first_nonfinite = 0, None
    return objective


# --- probes of the neural-collapse argument --------------------------------------------------

def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = a.norm() * b.norm()
    return float(a.dot(b) / denom) if denom > 0 else 0.0


def gradient_cosines(model: Student, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *,
                     loss: str, T: float) -> dict[str, float]:
    """cos(∇CE, ∇L) on the CE head W₁ and on the backbone φ, at the current weights (eval mode).

    Head: both losses applied to the CE head's logits (the conflict a single-head student
    has); backbone: CE through W₁ and L through the head that L trains (W₂ for a dual-head
    student, W₁ otherwise). L is a logit-level loss (`bkl`/`bkln`) or `kd`.
    """
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        phi = model.features(x)
        z = model.head(phi)
        z_aux = z if model.aux is None else model.aux(phi)
        ce = F.cross_entropy(z, y)
        kd_head = distill_loss(loss, z, t, T)
        kd_aux = distill_loss(loss, z_aux, t, T)
        head, backbone = model.head_parameters(), model.backbone_parameters()
        out = {"cos_head": _cosine(flat_grad(ce, head), flat_grad(kd_head, head)),
               "cos_backbone": _cosine(flat_grad(ce, backbone), flat_grad(kd_aux, backbone))}
    model.train(was_training)
    return out


@torch.no_grad()
def collapse_metrics(model: Student, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                     batch_size: int = 1024) -> dict[str, float]:
    """Within-class collapse of the penultimate features and the mean norm of the CE-head logits,
    over (x, y) in eval mode, in batches.

    `nc1` is the trace form tr(Σ_W)/tr(Σ_B) of Papyan et al.'s (2020) NC1 (within-class over
    between-class covariance; 0 at full collapse). Their tr(Σ_W Σ_B⁺)/C needs a pseudo-inverse
    of Σ_B that is ill-conditioned when the feature dimension is close to the number of classes
    (100 features and 100 classes in the chapter's many-class setting).
    """
    was_training = model.training
    model.eval()
    phis, norms = [], []
    for i in range(0, len(y), batch_size):
        phi = model.features(x[i:i + batch_size])
        norms.append(model.head(phi).norm(dim=1))
        phis.append(phi.double())
    model.train(was_training)
    phi = torch.cat(phis)
    present = [c for c in range(num_classes) if (y == c).any()]
    means = torch.stack([phi[y == c].mean(0) for c in present])
    centred = phi - means[torch.searchsorted(torch.tensor(present, device=y.device), y)]
    sigma_w = centred.T @ centred / len(y)
    between = means - phi.mean(0)
    sigma_b = between.T @ between / len(present)
    nc1 = torch.trace(sigma_w) / torch.trace(sigma_b)
    return {"nc1": float(nc1), "logit_norm": float(torch.cat(norms).mean())}


# --- learning-rate schedule in phases ---------------------------------------------------------

def phase_bounds(total: int, milestones: Sequence[float]) -> list[tuple[int, int, int]]:
    """[(first step, last step, number of decays)] for step decay at fractions `milestones`.

    The official schedule (lr × 0.1 after epochs 150, 180, 210 of 240) is milestones
    (0.625, 0.75, 0.875).
    """
    cuts = [0] + sorted({int(round(m * total)) for m in milestones if 0 < m < 1}) + [total]
    return [(a, b, k) for k, (a, b) in enumerate(zip(cuts, cuts[1:])) if b > a]


def fit_step_decay(model: nn.Module, data, objective: Callable, *, steps: int,
                   milestones: Sequence[float], decay: float, lr: float, seed: int,
                   **fit_kw) -> dict:
    """`train.fit` once per constant-learning-rate phase of a step-decay schedule.

    `fit` takes one learning rate (or a fixed schedule) per call, so the official step decay is
    run as consecutive `fit` calls at lr · decay^k; the SGD momentum buffer restarts at each
    decay (the one difference from a single optimizer). Histories are concatenated, with `step`
    counted from the start of training.
    """
    from lossbook import train

    history = []
    for k, (first, last, n_decays) in enumerate(phase_bounds(steps, milestones)):
        result = train.fit(model, data, objective, steps=last - first,
                           lr=lr * decay**n_decays, seed=seed * 1000 + k, schedule="constant",
                           **fit_kw)
        for record in result["history"]:
            history.append({**record, "step": record["step"] + first, "phase": k})
    return {"history": history, "final": history[-1]}


# --- cached teachers --------------------------------------------------------------------------

def cached_state_path(kind: str, spec: dict):
    """Where a trained model's state dict for `spec` lives (keyed by spec and library hash)."""
    from lossbook.cache import environment_hash, library_hash

    key = stable_hash({"kind": kind, "spec": spec, "library": library_hash(),
                       "environment": environment_hash()})[:24]
    return cache_dir() / "models" / f"{kind}-{key}.pt"


def load_or_train(kind: str, spec: dict, build: Callable[[], nn.Module],
                  train_fn: Callable[[nn.Module], dict]) -> tuple[nn.Module, dict]:
    """A model trained by `train_fn(build())`, cached on disk as a state dict (+ its metrics).

    Written atomically with `torch.save` and read back with `weights_only=True`, so parallel
    workers that need the same teacher either load it or train it deterministically themselves.
    """
    path = cached_state_path(kind, spec)
    model = build()
    def load(p):
        saved = torch.load(p, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state"])
        return saved["metrics"]

    metrics = read_cached(path, load)  # a corrupt file is removed (warning) and retrained
    if metrics is not None:
        return model, metrics
    model = build()
    metrics = train_fn(model)
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state": state, "metrics": metrics}, buffer)
    write_atomic(path, buffer.getvalue())
    return model, metrics


class MemoTeacher(nn.Module):
    """A frozen teacher whose outputs on a known set of inputs are computed once and looked up.

    `forward(x)` returns exactly the stored logits when every row of `x` is one of the known
    inputs (matched by its bytes), and runs the teacher otherwise (e.g. on augmented images).
    Saves the teacher's forward pass on every batch when the training inputs are fixed.
    """

    def __init__(self, teacher: nn.Module, x_known: torch.Tensor, batch_size: int = 1024):
        super().__init__()
        self.teacher = teacher.eval()
        with torch.no_grad():
            self.table = torch.cat([teacher(x_known[i:i + batch_size])
                                    for i in range(0, len(x_known), batch_size)])
        rows = x_known.detach().cpu().contiguous().numpy()
        self.index = {row.tobytes(): i for i, row in enumerate(rows)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().cpu().contiguous().numpy()
        idx = [self.index.get(row.tobytes()) for row in rows]
        if any(i is None for i in idx):
            return self.teacher(x)
        return self.table[torch.as_tensor(idx, device=self.table.device)]


# --- the neural-collapse geometry, exactly ----------------------------------------------------

def simplex_etf(num_classes: int, dim: int | None = None, seed: int = 0) -> torch.Tensor:
    """C unit vectors in R^dim (float64) with pairwise cosines −1/(C−1): a simplex ETF."""
    dim = dim or num_classes
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=g, dtype=torch.float64))
    centred = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    return (num_classes / (num_classes - 1)) ** 0.5 * centred @ u.T


def etf_gradient_cosines(num_classes: int, student_scale: float, teacher_scale: float, *,
                         loss: str, T: float, per_class: int = 20, sample_dark: float = 1.0,
                         seed: int = 0) -> dict:
    """cos(∇CE, ∇L) on the head W and on the features h_i at an exact neural-collapse point.

    Every feature sits on its class mean, h_i = m_{y_i} (a simplex ETF M), and the head is
    self-dual, W = κ·M: the student's logits are κ on the true class and −κ/(C−1) elsewhere.
    The teacher's logits are τ·M m_{y_i} plus per-example "dark knowledge" ε_i ~ N(0, σ²)
    (σ = `sample_dark`). The head's gradient sums over the examples of a class, Σ_i g_i h_iᵀ,
    each feature's gradient is its own example's Wᵀg_i; the two cosines coincide when σ = 0.
    """
    m = simplex_etf(num_classes, seed=seed)
    y = torch.arange(num_classes).repeat(per_class)
    g = torch.Generator().manual_seed(seed + 1)
    t = teacher_scale * m[y] @ m.T + sample_dark * torch.randn(
        len(y), num_classes, generator=g, dtype=torch.float64)
    w = (student_scale * m).requires_grad_(True)
    h = m[y].clone().requires_grad_(True)
    z = h @ w.T
    ce = F.cross_entropy(z, y)
    kd = losses.distill_loss(loss, z, t, T)
    gw_ce, gh_ce = torch.autograd.grad(ce, (w, h), retain_graph=True)
    gw_kd, gh_kd = torch.autograd.grad(kd, (w, h))
    return {"cos_head": _cosine(gw_ce.flatten(), gw_kd.flatten()),
            "cos_features": _cosine(gh_ce.flatten(), gh_kd.flatten())}


# --- the unconstrained-features model ----------------------------------------------------------

def nc1_trace(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """NC1 in its trace form tr(Σ_W)/tr(Σ_B) (as `collapse_metrics`), from a feature matrix."""
    present = [c for c in range(num_classes) if (y == c).any()]
    means = torch.stack([features[y == c].mean(0) for c in present])
    index = torch.searchsorted(torch.tensor(present, device=y.device), y)
    within = (features - means[index]).pow(2).sum() / len(y)
    between = (means - features.mean(0)).pow(2).sum() / len(present)
    return float(within / between)


def ufm_collapse(y: torch.Tensor, num_classes: int, dim: int, *, steps: int, lr: float,
                 weight_decay: float, seed: int, evals: int = 20) -> dict:
    """Train an unconstrained-features model (Mixon et al. 2020; Fang et al. 2021) with CE.

    Every example's feature h_i ∈ R^dim is a free parameter (as if the backbone could put it
    anywhere), with a linear head W (no bias): minimise CE(H Wᵀ, y) + (λ/2)(‖W‖² + ‖H‖²/N) by
    full-batch Adam (float64). Its global minimisers are exact neural collapse (NC1 = 0), which
    is the premise of the paper's gradient argument. Returns H, W and the NC1 history.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(y)
    h = (0.1 * torch.randn(n, dim, generator=g, dtype=torch.float64)).requires_grad_(True)
    w = (0.1 * torch.randn(num_classes, dim, generator=g,
                           dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([h, w], lr=lr)
    every = max(1, steps // evals)
    history = []
    for step in range(1, steps + 1):
        loss = F.cross_entropy(h @ w.T, y) + weight_decay / 2 * (w.pow(2).sum()
                                                                + h.pow(2).sum() / n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                z = h @ w.T
                history.append({"step": step, "loss": float(loss),
                                "nc1": nc1_trace(h.detach(), y, num_classes),
                                "train_acc": float((z.argmax(1) == y).double().mean()),
                                "true_logit": float(z.gather(1, y[:, None]).mean())})
    return {"h": h.detach(), "w": w.detach(), "history": history}


def ufm_gradient_cosines(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *,
                         loss: str, T: float) -> dict[str, float]:
    """cos(∇CE, ∇L) on the head W (gradient summed over examples) and on the free features H
    (each example's own gradient), at the unconstrained-features point (H, W)."""
    w = w.clone().requires_grad_(True)
    h = h.clone().requires_grad_(True)
    z = h @ w.T
    ce = F.cross_entropy(z, y)
    kd = distill_loss(loss, z, t.to(z.dtype), T)
    gw_ce, gh_ce = torch.autograd.grad(ce, (w, h), retain_graph=True)
    gw_kd, gh_kd = torch.autograd.grad(kd, (w, h))
    return {"cos_head": _cosine(gw_ce.flatten(), gw_kd.flatten()),
            "cos_features": _cosine(gh_ce.flatten(), gh_kd.flatten())}
