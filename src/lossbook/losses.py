"""Loss functions, each as its paper defines it. Logit losses take (logits [B, n], y [B])."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}; valid: mean, sum, none")


# --- Comp-sum losses (Mao, Mohri & Zhong, ICML 2023) -----------------------------------------

def comp_sum_loss(logits: torch.Tensor, y: torch.Tensor, tau: float,
                  reduction: str = "mean") -> torch.Tensor:
    """ℓ_τ = Φ^τ(Σ_{y'≠y} exp(h_{y'} − h_y)) with Φ^τ(u) = ((1+u)^{1−τ} − 1)/(1−τ), Φ^1 = log(1+u).

    Since 1 + u = 1/p_y (p = softmax h), ℓ_τ = (1 − p_y^{τ−1})/(τ − 1), computed from
    log p_y with expm1 so that τ near 1 and saturated logits stay accurate:
    τ=0 sum-exponential, τ=1 cross-entropy, τ∈(1,2) GCE with q=τ−1, τ=2 MAE (1 − p_y).
    """
    log_py = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return _reduce(comp_sum_from_log_probs(log_py, tau), reduction)


def comp_sum_from_log_probs(log_p: torch.Tensor, tau: float) -> torch.Tensor:
    """ℓ_τ as a function of log p_y (elementwise): −expm1((τ−1) log p_y)/(τ−1), −log p_y at τ=1."""
    if tau < 0:
        raise ValueError(f"comp-sum losses need tau >= 0, got {tau}")
    if tau == 1:
        return -log_p
    return -torch.expm1((tau - 1.0) * log_p) / (tau - 1.0)


def comp_sum_phi(u: torch.Tensor, tau: float) -> torch.Tensor:
    """Φ^τ(u), the outer function of the comp-sum family, on u ≥ 0."""
    if tau == 1:
        return torch.log1p(u)
    return torch.expm1((1.0 - tau) * torch.log1p(u)) / (1.0 - tau)


def comp_sum_general(logits: torch.Tensor, y: torch.Tensor, tau: float,
                     reduction: str = "mean") -> torch.Tensor:
    """The defining form Φ^τ(Σ_{y'≠y} exp(h_{y'} − h_y)); equal to `comp_sum_loss` (tested)."""
    diff = logits - logits.gather(1, y[:, None])
    not_true = torch.ones_like(diff, dtype=torch.bool).scatter_(1, y[:, None], False)
    u = torch.where(not_true, diff.exp(), torch.zeros_like(diff)).sum(1)
    return _reduce(comp_sum_phi(u, tau), reduction)


def margin_vector(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Δ_h(x, y) = (h(x,y) − h(x,y'))_{y'≠y}, shape [B, n−1]."""
    diff = logits.gather(1, y[:, None]) - logits
    keep = torch.ones_like(diff, dtype=torch.bool).scatter_(1, y[:, None], False)
    return diff[keep].view(len(y), -1)


def margin_shift(logits_adv: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖Δ_h(x', y) − Δ_h(x, y)‖₂ per example: the smooth term of the adversarial comp-sum loss."""
    return (margin_vector(logits_adv, y) - margin_vector(logits, y)).norm(dim=1)


def smooth_adv_comp_sum_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                             tau: float, nu: float, rho: float = 1.0) -> torch.Tensor:
    """ℓ̃_τ = ℓ_τ(h/ρ) + ν · ‖Δ_h(x', y) − Δ_h(x, y)‖₂, x' the maximiser found by PGD (mean)."""
    return comp_sum_loss(logits / rho, y, tau) + nu * margin_shift(logits_adv, logits, y).mean()


# --- TRADES (Zhang et al., ICML 2019; official yaodongyu/TRADES trades.py) -------------------

def trades_kl(logits_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Σ KL(softmax f(x) ‖ softmax f(x')) over the batch (KLDivLoss(size_average=False))."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1),
                    reduction="sum")


def trades_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                beta: float) -> torch.Tensor:
    """CE(f(x), y) + β · (1/B) · Σ KL(softmax f(x) ‖ softmax f(x'))."""
    return F.cross_entropy(logits, y) + beta * trades_kl(logits_adv, logits) / len(y)


# --- Knowledge distillation: KD, BinaryKL, BinaryKL-Norm (Yang et al. 2024, DHKD) -------------
# Student logits s [B, n], teacher logits t [B, n]. Definitions follow the DHKD official code
# (penghui-yang/DHKD, `distiller_zoo/KD.py`, `BinaryKL.py`, `BinaryKLNorm.py`): every loss is
# summed over classes, averaged over the batch and multiplied by T². Reimplemented in closed,
# saturation-safe forms (log-sigmoids instead of clamp-and-log) that equal the official formulas
# wherever those are finite (tested).

_LOG2 = 0.6931471805599453  # log 2


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, T: float = 4.0,
            reduction: str = "mean") -> torch.Tensor:
    """Hinton et al. (2015) KD: T² · KL(softmax(t/T) ‖ softmax(s/T)) per example (mean: /B).

    As `DistillKL` of RepDistiller / DHKD (`--kd_T 4`): kl_div(log_softmax(s/T),
    softmax(t/T), sum) · T² / B. Computed from two log-softmaxes, so a saturated teacher
    (p_t = 0 exactly) contributes 0·finite = 0 and never NaN.
    """
    log_p_s = F.log_softmax(student / T, dim=1)
    log_p_t = F.log_softmax(teacher / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    return T**2 * _reduce(kl, reduction)


def bernoulli_kl_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(Bern(σ(a)) ‖ Bern(σ(b))) elementwise, from log-sigmoids (finite for any finite a, b).

    = σ(a)(log σ(a) − log σ(b)) + σ(−a)(log σ(−a) − log σ(−b))
    = softplus(b) − softplus(a) − σ(a)(b − a)   (its gradient in b is σ(b) − σ(a)).
    """
    return (torch.sigmoid(a) * (F.logsigmoid(a) - F.logsigmoid(b))
            + torch.sigmoid(-a) * (F.logsigmoid(-a) - F.logsigmoid(-b)))


def binary_kl_loss(student: torch.Tensor, teacher: torch.Tensor, T: float = 2.0,
                   reduction: str = "mean") -> torch.Tensor:
    """DHKD's logit-level loss BinaryKL: T² · Σ_k KL(Bern(σ(t_k/T)) ‖ Bern(σ(s_k/T))) (mean: /B).

    One sigmoid per class, so — unlike softmax KD — it sees a common shift of all logits.
    Official `BinaryKL` (default T = 2) clamps the sigmoids to [1e-8, 1 − 1e-8] and takes logs;
    in float32 1 − 1e-8 rounds to 1 and σ(x) rounds to 1 for x ≳ 16.6, so that form gives
    inf/NaN once a *student* logit exceeds ≈ 17·T. This log-sigmoid form is exact and finite
    everywhere.
    """
    loss = bernoulli_kl_logits(teacher / T, student / T).sum(1)
    return T**2 * _reduce(loss, reduction)


def binary_kl_norm_loss(student: torch.Tensor, teacher: torch.Tensor, T: float = 2.0,
                        reduction: str = "mean") -> torch.Tensor:
    """BinaryKL-Norm, the loss `--distill dhkd` trains the auxiliary head with (T = 2):

    T² · Σ_k KL(Bern(½) ‖ Bern(σ((s_k − t_k)/T)))  =  T² · Σ_k log cosh((s_k − t_k)/(2T)),

    a log-cosh regression of the student logits on the teacher logits: ≈ (s − t)²/8 for small
    differences, ≈ (T/2)|s − t| for large ones; the per-logit gradient is (T/2) tanh((s−t)/2T).
    Computed as |u| + log1p(e^{−2|u|}) − log 2, u = (s − t)/(2T) (finite for any inputs; the
    same clamp-and-log on σ((s − t)/T) would overflow to inf for |s − t| ≳ 17·T in float32; the
    official BinaryKL-Norm file was not checked).
    """
    u = (student - teacher).abs() / (2 * T)
    loss = (u + torch.log1p(torch.exp(-2 * u)) - _LOG2).sum(1)
    return T**2 * _reduce(loss, reduction)


def distill_loss(name: str, student: torch.Tensor, teacher: torch.Tensor,
                 T: float) -> torch.Tensor:
    """The distillation loss by name: `kd`, `bkl` (BinaryKL) or `bkln` (BinaryKL-Norm)."""
    if name == "kd":
        return kd_loss(student, teacher, T)
    if name == "bkl":
        return binary_kl_loss(student, teacher, T)
    if name == "bkln":
        return binary_kl_norm_loss(student, teacher, T)
    raise ValueError(f"unknown distillation loss {name!r}; valid: kd, bkl, bkln")
