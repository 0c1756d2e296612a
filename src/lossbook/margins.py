"""The margin family: label-distribution-aware margins (LDAM) and the angular margins of face and
speaker recognition, with the cosine classifier they act on.

Every margin here is a transform of the logits (or cosines) of the *true* class; the loss on top
is plain cross-entropy. With cosines c_j = cos θ_j ∈ [−1, 1] and a scale s:

- additive margin (CosFace / AM-softmax, Wang et al. 2018): s · (c_y − m),
- additive angular margin (ArcFace / AAM-softmax, Deng et al. 2019): s · cos(θ_y + m),
- LDAM (Cao et al., NeurIPS 2019): s · (z_y − Δ_y) with a *class-dependent* margin
  Δ_j = C / n_j^{1/4} — an additive margin that grows as the class gets rarer.

The LDAM part follows the official code `kaidic/LDAM-DRW` (read at commit 2536330):
`losses.LDAMLoss` (max_m = 0.5, s = 30, optional per-class weights), `models/resnet_cifar.
NormedLinear` (the cosine classifier used whenever the loss is LDAM) and the DRW rule of
`cifar_train.py` (β ∈ [0, 0.9999] switched at epoch 160 of 200).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lossbook.data import effective_number_weights

# --- additive and angular margins -------------------------------------------------------------


def _per_sample(margin: float | torch.Tensor, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The margin of each sample's true class, shape [B]: a scalar, or a per-class vector [n]."""
    m = torch.as_tensor(margin, dtype=like.dtype, device=like.device)
    if m.dim() == 0:
        return m.expand(len(y))
    if m.dim() != 1 or len(m) != like.shape[1]:
        raise ValueError(f"margin must be a scalar or one value per class ({like.shape[1]}), "
                         f"got shape {tuple(m.shape)}")
    return m[y]


def additive_margin(logits: torch.Tensor, y: torch.Tensor,
                    margin: float | torch.Tensor) -> torch.Tensor:
    """z − m_y·e_y: subtract the margin from the true-class logit only (other logits unchanged).

    `margin` is a scalar (CosFace / AM-softmax on cosines) or a per-class vector (LDAM). The
    official LDAM code builds the same thing with a one-hot mask and `torch.where`.
    """
    m = _per_sample(margin, y, logits)
    return logits - F.one_hot(y, logits.shape[1]).to(logits.dtype) * m[:, None]


def additive_angular_margin(cosine: torch.Tensor, y: torch.Tensor,
                            margin: float | torch.Tensor) -> torch.Tensor:
    """ArcFace / AAM-softmax: the true-class cosine cos θ_y becomes cos(θ_y + m).

    Where θ_y + m would pass π (cos θ_y ≤ cos(π − m)) the function would stop decreasing, so the
    usual monotonic fallback cos θ_y − m·sin m is used there (insightface, `easy_margin=False`).
    """
    m = _per_sample(margin, y, cosine)
    target = angular_shift(cosine.gather(1, y[:, None]).squeeze(1), m)
    return cosine.scatter(1, y[:, None], target[:, None])


def angular_shift(c: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Elementwise cos(θ + m) for c = cos θ, with the monotonic fallback c − m·sin m where
    θ + m would pass π (c ≤ cos(π − m))."""
    sin = torch.sqrt((1.0 - c * c).clamp_min(0.0))
    shifted = c * torch.cos(m) - sin * torch.sin(m)
    return torch.where(c > torch.cos(math.pi - m), shifted, c - m * torch.sin(m))


class NormedLinear(nn.Module):
    """Cosine classifier: z_j = ⟨x/‖x‖, w_j/‖w_j‖⟩ ∈ [−1, 1] (no bias).

    As `NormedLinear` of the official LDAM-DRW code: weight stored as [in, out], initialised
    uniform(−1, 1) with every column renormalised to unit length (`renorm_(2, 1, 1e-5).mul_(1e5)`).
    The scale s is applied by the loss, not here, so predictions are arg-max cosines.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


# --- LDAM (Cao, Wei, Gaidon, Arechiga & Ma, NeurIPS 2019) -------------------------------------

LDAM_MAX_MARGIN = 0.5  # official `LDAMLoss(max_m=0.5)`: the largest (rarest-class) margin
LDAM_SCALE = 30.0  # official `LDAMLoss(s=30)`: logits (cosines) are multiplied by s
DRW_BETAS = (0.0, 0.9999)  # official DRW: β = 0 (plain weights), then β = 0.9999


def ldam_margins(class_counts: list[int], max_margin: float = LDAM_MAX_MARGIN) -> torch.Tensor:
    """Δ_j = C / n_j^{1/4}, with C such that the largest margin (the rarest class) is `max_margin`.

    Paper §3, with the official normalisation (`m_list = 1/sqrt(sqrt(n))`,
    `m_list *= max_m / max(m_list)`, max_m = 0.5).
    """
    n = np.asarray(class_counts, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError(f"every class needs at least one example, got counts {list(n)}")
    m = n ** -0.25
    return torch.as_tensor(m * (max_margin / m.max()), dtype=torch.float32)


def ldam_loss(logits: torch.Tensor, y: torch.Tensor, margins: torch.Tensor,
              s: float = LDAM_SCALE, weight: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """LDAM: cross-entropy of s·(z − Δ_y e_y), optionally class-weighted.

    −log e^{s(z_y−Δ_y)} / (e^{s(z_y−Δ_y)} + Σ_{j≠y} e^{s z_j})  (paper §3, scaled as in the
    official `LDAMLoss.forward`). `z` are the cosine-classifier outputs (`NormedLinear`); with
    `weight`, the mean is the weighted mean Σ w_{y_i} ℓ_i / Σ w_{y_i} of `F.cross_entropy`.
    At Δ = 0 and s = 1 this is plain cross-entropy.
    """
    return F.cross_entropy(s * additive_margin(logits, y, margins), y, weight=weight,
                           reduction=reduction)


def drw_weights(epoch: int, class_counts: list[int], switch_epoch: int,
                betas: tuple[float, ...] = DRW_BETAS) -> torch.Tensor:
    """Deferred re-weighting: the class weights in force at `epoch` (0-based).

    Official `cifar_train.py`, train rule `DRW`: `idx = epoch // 160`, `betas = [0, 0.9999]`,
    weights (1 − β)/(1 − β^{n_j}) normalised to sum to the number of classes — all ones before
    the switch, class-balanced (effective-number) weights from epoch `switch_epoch` on.
    """
    idx = min(epoch // switch_epoch, len(betas) - 1) if switch_epoch > 0 else len(betas) - 1
    return effective_number_weights(class_counts, betas[idx])


# --- the margin trade-off behind Δ_j ∝ n_j^{-1/4} (paper §3) --------------------------------

def margin_bound(margins, class_counts) -> np.ndarray:
    """Σ_j 1/(γ_j √n_j): the margin-dependent part of the paper's balanced-error bound (§3;
    the common factor √C(F)/k and the log terms are dropped). Broadcasts over leading axes."""
    gamma = np.asarray(margins, dtype=np.float64)
    n = np.asarray(class_counts, dtype=np.float64)
    return (1.0 / (gamma * np.sqrt(n))).sum(-1)


def optimal_margins(class_counts, total: float = 1.0) -> np.ndarray:
    """The minimiser of `margin_bound` under Σ_j γ_j = total: γ_j = total·n_j^{-1/4}/Σ_i n_i^{-1/4}.

    For two classes this is the paper's trade-off (shifting the decision boundary moves margin
    from one class to the other, γ_1 + γ_2 fixed); Lagrange: 1/(γ_j² √n_j) equal for all j.
    """
    w = np.asarray(class_counts, dtype=np.float64) ** -0.25
    return total * w / w.sum()
