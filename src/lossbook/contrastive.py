"""Contrastive losses with additive margins on the positive pair (Lepage & Dehak, Interspeech 2023).

Faithful to the official code `theolepage/sslsv` at commit 97915a6 (the Interspeech-2023
experiments), `sslsv/losses/Custom.py` and `sslsv/models/Custom.py`:

- every embedding is L2-normalised, so a logit is a cosine c = cos θ ∈ [−1, 1], multiplied by the
  scale s (`loss_scale = 5`, i.e. temperature τ = 1/s = 0.2; the Odyssey-2024 follow-up uses
  s = 30, τ ≈ 0.033);
- **NT-Xent** (`NTXent`, non-symmetric): anchors are the first views z¹_i, candidates the second
  views z²_j — N anchors, each with 1 positive and N − 1 negatives;
- **SNT-Xent** (`SNTXent`, symmetric = SimCLR): all 2N views are anchors, the other view of the same
  utterance is the positive, every view of another utterance a negative (self-similarity
  discarded) — 2N anchors, each with 1 positive and 2(N − 1) negatives;
- a margin acts on the positive cosine only: **AM** (`SNTXentAM`, CosFace) c − m, **AAM**
  (`SNTXentAAM`, ArcFace) cos(θ + m) where c > cos(π − m), else the monotonic fallback
  c − m·sin(m) (the code writes sin(π − m)·m); default `loss_margin = 0.2`;
- the loss is the cross-entropy of s·[pos | negatives] with the positive as target, averaged over
  anchors.

A learnable margin (`loss_margin_learnable`, initialised at 0 in the paper's configs) is an
`nn.Parameter` here and differentiable for both margins. (In the official code at 97915a6 the AAM
margin enters through `math.cos`/`math.sin`, which detach it; and the margin parameter is not in
the optimiser's parameter groups — see the chapter.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbook.margins import angular_shift

SCALE = 5.0  # official `CustomConfig.loss_scale` (τ = 0.2) — the Interspeech-2023 setting
SCALE_FOLLOW_UP = 30.0  # Odyssey-2024 follow-up / VoxCeleb2 slide (τ = 1/30)
MARGIN = 0.2  # official `CustomConfig.loss_margin` default
MARGIN_KINDS = ("none", "am", "aam")


def positive_logit(cosine: torch.Tensor, margin: float | torch.Tensor = 0.0,
                   kind: str = "am") -> torch.Tensor:
    """The positive cosine after the margin: c (none), c − m (AM), cos(θ + m) (AAM).

    AAM follows `SNTXentAAM._process_pos`: φ = c·cos m − √(1 − c²)·sin m where c > cos(π − m),
    else c − m·sin(m) — non-increasing in θ over [0, π] (at θ = π − m the linear fallback
    starts m·sin m + cos m − 1 ≈ m²/2 below cos(θ + m) = −1).
    """
    if kind == "none":
        return cosine
    m = torch.as_tensor(margin, dtype=cosine.dtype, device=cosine.device)
    if kind == "am":
        return cosine - m
    if kind == "aam":
        return angular_shift(cosine, m)
    raise ValueError(f"unknown margin kind {kind!r}; valid: {', '.join(MARGIN_KINDS)}")


def contrastive_logits(z1: torch.Tensor, z2: torch.Tensor, symmetric: bool):
    """Cosines of every anchor to every candidate, the target column, and a mask of excluded cells.

    Non-symmetric: [N, N] cosines z¹_i·z²_j, target i. Symmetric: the [2N, 2N] cosines of
    cat(z¹, z²) with itself, target (i + N) mod 2N, the diagonal (self-similarity) excluded.
    """
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = len(a)
    if symmetric:
        z = torch.cat([a, b])
        cosine = z @ z.T
        target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
        excluded = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    else:
        cosine = a @ b.T
        target = torch.arange(n, device=a.device)
        excluded = torch.zeros(n, n, dtype=torch.bool, device=a.device)
    return cosine, target, excluded


def margin_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, *, symmetric: bool = True,
                            scale: float = SCALE, margin: float | torch.Tensor = 0.0,
                            kind: str = "none", reduction: str = "mean") -> torch.Tensor:
    """(S)NT-Xent with an optional additive (AM) or additive angular (AAM) margin.

    z1, z2: [N, D] embeddings (projector outputs) of the two views of N utterances (row i of both
    is the same utterance). Per anchor a with positive p(a):
    ℓ_a = −log e^{s·ψ(c_{a,p(a)})} / (e^{s·ψ(c_{a,p(a)})} + Σ_{k negative} e^{s·c_{a,k}}),
    ψ the margin transform (`positive_logit`). Equal to the official `Custom.py` losses (the
    order of the columns of a cross-entropy row is immaterial); checked against
    pytorch-metric-learning in the tests.
    """
    cosine, target, excluded = contrastive_logits(z1, z2, symmetric)
    pos = positive_logit(cosine.gather(1, target[:, None]), margin, kind)
    logits = cosine.scatter(1, target[:, None], pos) * scale
    logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, target, reduction=reduction)


def positive_probability(z1: torch.Tensor, z2: torch.Tensor, *, symmetric: bool = True,
                         scale: float = SCALE, margin: float | torch.Tensor = 0.0,
                         kind: str = "none") -> torch.Tensor:
    """Per anchor, the softmax probability p_a of the positive under the loss's logits
    (ℓ_a = −log p_a).

    It says how saturated the loss is. For AM the gradient of ℓ_a with respect to the anchor's
    cosines is s·(1 − p_a)·(−1 on the positive, softmax of the negatives' logits on the
    negatives): the bracket does not depend on m, so an additive margin only *re-weights anchors*
    by (1 − p_a) — a no-op while every p_a ≪ 1 (and a global gradient scale is undone by Adam).
    """
    cosine, target, excluded = contrastive_logits(z1, z2, symmetric)
    pos = positive_logit(cosine.gather(1, target[:, None]), margin, kind)
    logits = (cosine.scatter(1, target[:, None], pos) * scale).masked_fill(excluded,
                                                                         float("-inf"))
    return torch.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)


def nt_xent(z1, z2, scale: float = SCALE, margin: float = 0.0, kind: str = "none"):
    """Non-symmetric NT-Xent (official `NTXent`): z¹ anchors against z² candidates."""
    return margin_contrastive_loss(z1, z2, symmetric=False, scale=scale, margin=margin, kind=kind)


def snt_xent(z1, z2, scale: float = SCALE, margin: float = 0.0, kind: str = "none"):
    """Symmetric SNT-Xent (official `SNTXent`/`SNTXentAM`/`SNTXentAAM`): all 2N views anchor."""
    return margin_contrastive_loss(z1, z2, symmetric=True, scale=scale, margin=margin, kind=kind)


class MarginContrastiveLoss(nn.Module):
    """The loss as a module, so that a learnable margin can be trained with the model.

    `learnable=True` makes the margin an `nn.Parameter` initialised at `margin` (the paper's
    "learnable" rows start from 0).
    """

    def __init__(self, symmetric: bool = True, scale: float = SCALE, margin: float = 0.0,
                 kind: str = "none", learnable: bool = False):
        super().__init__()
        if kind not in MARGIN_KINDS:
            raise ValueError(f"unknown margin kind {kind!r}; valid: {', '.join(MARGIN_KINDS)}")
        self.symmetric, self.scale, self.kind = symmetric, float(scale), kind
        if learnable:
            self.margin = nn.Parameter(torch.tensor(float(margin)))
        else:
            self.register_buffer("margin", torch.tensor(float(margin)), persistent=False)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return margin_contrastive_loss(z1, z2, symmetric=self.symmetric, scale=self.scale,
                                       margin=self.margin, kind=self.kind)


def pair_counts(n: int, symmetric: bool) -> dict[str, int]:
    """Anchors, positives and negatives in one batch of N utterances (two views each).

    NT-Xent: N anchors, N positive pairs, N(N − 1) negative pairs; SNT-Xent: 2N anchors, 2N
    positive pairs (each unordered pair counted from both ends), 2N·2(N − 1) negative pairs —
    "2N positive pairs have 2(N − 1) negatives" (paper slides).
    """
    if symmetric:
        return {"anchors": 2 * n, "positives": 2 * n, "negatives": 2 * n * 2 * (n - 1),
                "negatives_per_anchor": 2 * (n - 1)}
    return {"anchors": n, "positives": n, "negatives": n * (n - 1),
            "negatives_per_anchor": n - 1}
