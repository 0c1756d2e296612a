"""Speaker-verification metrics and trials: EER, minDCF, DET curve, cosine scoring.

Conventions of the official evaluation of Lepage & Dehak (`theolepage/sslsv` @97915a6,
`sslsv/utils/evaluate.py`), itself the one of clovaai/voxceleb_trainer:

- the operating points are those of sklearn's `roc_curve(drop_intermediate=False)`: one per
  distinct score (plus "reject everything"), FNR = 1 − TPR;
- **EER** = max(FPR, FNR) at the point where |FNR − FPR| is smallest, in %;
- **minDCF** (NIST SRE 2016 eqs. 2–4) = min over points of c_miss·FNR·p_target +
  c_fa·FPR·(1 − p_target), divided by min(c_miss·p_target, c_fa·(1 − p_target)), with
  p_target = 0.01, c_miss = c_fa = 1 — so 1.0 is the cost of the best trivial system.

The operating points are computed here from a sort (no sklearn); the tests compare them with a
transcription of the official code and with a brute-force threshold sweep.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize, stats

P_TARGET = 0.01
C_MISS = 1.0
C_FA = 1.0


def operating_points(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, FNR, thresholds) at every distinct score, accepting trials with score ≥ threshold.

    The first point (threshold +inf) accepts nothing: FPR = 0, FNR = 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError("scores and labels must be 1-D arrays of the same length")
    n_target, n_nontarget = int(labels.sum()), int((~labels).sum())
    if n_target == 0 or n_nontarget == 0:
        raise ValueError("need at least one target and one non-target trial")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp = np.r_[0, np.cumsum(t)[last]]
    fp = np.r_[0, np.cumsum(~t)[last]]
    return fp / n_nontarget, 1.0 - tp / n_target, np.r_[np.inf, s[last]]


def eer(scores, labels) -> float:
    """Equal error rate in % (official `compute_eer`: max(FPR, FNR) at argmin |FNR − FPR|)."""
    fpr, fnr, _ = operating_points(scores, labels)
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float(max(fpr[i], fnr[i]) * 100)


def min_dcf(scores, labels, p_target: float = P_TARGET, c_miss: float = C_MISS,
            c_fa: float = C_FA) -> float:
    """Normalised minimum detection cost (official `compute_min_dcf`, NIST SRE16 eqs. 2–4)."""
    fpr, fnr, _ = operating_points(scores, labels)
    c_det = c_miss * fnr * p_target + c_fa * fpr * (1 - p_target)
    return float(c_det.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def det_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, FNR) of every operating point, for a DET plot on probit axes."""
    fpr, fnr, _ = operating_points(scores, labels)
    return fpr, fnr


def score_gap(scores, labels) -> float:
    """Mean target score minus mean non-target score (the paper's Fig. 4 statistic)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    return float(scores[labels].mean() - scores[~labels].mean())


def summary(scores, labels) -> dict:
    return {"eer": eer(scores, labels), "min_dcf": min_dcf(scores, labels),
            "gap": score_gap(scores, labels)}


# --- closed forms for Gaussian scores ---------------------------------------------------------

def gaussian_eer(d_prime: float) -> float:
    """EER (%) of target ~ N(μ₁, σ²) vs non-target ~ N(μ₀, σ²), d' = (μ₁ − μ₀)/σ: Φ(−d'/2)."""
    return float(stats.norm.cdf(-d_prime / 2) * 100)


def gaussian_min_dcf(d_prime: float, p_target: float = P_TARGET, c_miss: float = C_MISS,
                     c_fa: float = C_FA) -> float:
    """Normalised minDCF for equal-variance Gaussian scores (exact 1-D minimisation over t).

    With μ₀ = 0, σ = 1: C(t) = c_miss·p·Φ(t − d') + c_fa·(1 − p)·(1 − Φ(t)); the optimum has
    a closed form t* = d'/2 + log(c_fa(1 − p)/(c_miss p))/d' (likelihood-ratio threshold),
    checked here against a bounded numerical minimisation.
    """
    def cost(t):
        return c_miss * p_target * stats.norm.cdf(t - d_prime) + \
            c_fa * (1 - p_target) * stats.norm.sf(t)

    norm = min(c_miss * p_target, c_fa * (1 - p_target))
    if d_prime <= 0:
        return float(min(cost(-np.inf), cost(np.inf)) / norm)
    t_star = d_prime / 2 + np.log(c_fa * (1 - p_target) / (c_miss * p_target)) / d_prime
    numeric = optimize.minimize_scalar(cost, bounds=(t_star - 5, t_star + 5), method="bounded")
    best = min(cost(t_star), numeric.fun, cost(np.inf))
    return float(best / norm)


# --- trials and scoring -------------------------------------------------------------------------

def make_trials(identities, num_nontarget: int, seed: int = 0,
                max_target: int | None = None) -> np.ndarray:
    """Trials [T, 3] = (label, i, j) among utterances with the given identity labels.

    Every same-identity pair i < j is a target trial (or a random `max_target` of them), plus
    `num_nontarget` random pairs of different identities (as VoxCeleb1-O mixes the two).
    """
    ids = np.asarray(identities)
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(ids), k=1)
    same = ids[i] == ids[j]
    target = np.stack([i[same], j[same]], 1)
    if max_target is not None and len(target) > max_target:
        target = target[rng.choice(len(target), max_target, replace=False)]
    a = rng.integers(0, len(ids), size=4 * num_nontarget)
    b = rng.integers(0, len(ids), size=4 * num_nontarget)
    keep = ids[a] != ids[b]
    nontarget = np.stack([a[keep], b[keep]], 1)[:num_nontarget]
    if len(nontarget) < num_nontarget:
        raise ValueError("too few identities to draw the requested non-target trials")
    pairs = np.concatenate([target, nontarget])
    labels = np.r_[np.ones(len(target), int), np.zeros(len(nontarget), int)]
    return np.concatenate([labels[:, None], pairs], 1)


def cosine_scores(embeddings: torch.Tensor, trials: np.ndarray) -> np.ndarray:
    """Cosine similarity of L2-normalised embeddings for each trial (label, i, j)."""
    e = F.normalize(embeddings.double(), dim=1).cpu()
    i, j = torch.as_tensor(trials[:, 1]), torch.as_tensor(trials[:, 2])
    return (e[i] * e[j]).sum(1).numpy()
