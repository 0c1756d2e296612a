"""H-consistency of comp-sum losses (Mao, Mohri & Zhong, ICML 2023), computed exactly.

Notation: n classes, scores h ∈ Rⁿ, q = softmax(h), p the conditional label distribution.
The comp-sum loss is ℓ_τ(h, y) = Φ^τ(u) with u = Σ_{y'≠y} exp(h_{y'} − h_y) = 1/q_y − 1, i.e.
ℓ_τ = (1 − q_y^{τ−1})/(τ − 1): τ=0 sum-exp, τ=1 cross-entropy, τ∈(1,2) GCE, τ=2 MAE (1 − q_y).

Closed forms use numpy/scipy; the tabular optimisation experiment uses torch float64.
Everything here is exact (no sampling of data): population risks are finite sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import entr, log_softmax, softmax

from lossbook.losses import comp_sum_from_log_probs

ArrayLike = float | np.ndarray


def _check_tau(tau: float) -> None:
    if not 0 <= tau <= 2:
        raise ValueError(f"closed forms here need 0 <= tau <= 2, got {tau}")


# --- Losses ----------------------------------------------------------------------------------

def phi(u: ArrayLike, tau: float) -> np.ndarray:
    """Φ^τ(u) = ((1+u)^{1−τ} − 1)/(1−τ), Φ^1(u) = log(1+u), for u ≥ 0 (vectorised)."""
    log1pu = np.log1p(np.asarray(u, dtype=float))
    if tau == 1:
        return log1pu
    return np.expm1((1 - tau) * log1pu) / (1 - tau)


def _loss_from_log_probs(log_q: ArrayLike, tau: float) -> np.ndarray:
    log_q = np.asarray(log_q, dtype=float)
    if tau == 1:
        return -log_q
    return -np.expm1((tau - 1) * log_q) / (tau - 1)


def comp_sum_from_probs(q_y: ArrayLike, tau: float) -> np.ndarray:
    """ℓ_τ = (1 − q_y^{τ−1})/(τ−1) as a function of the true-class probability (τ=1: −log q_y)."""
    with np.errstate(divide="ignore"):
        return _loss_from_log_probs(np.log(q_y), tau)


# --- Conditional risks -----------------------------------------------------------------------

def _expected_loss(p: np.ndarray, loss: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(p > 0, p * loss, 0.0), axis=-1)


def conditional_risk(p: ArrayLike, q: ArrayLike, tau: float) -> np.ndarray:
    """C_τ(p, q) = Σ_y p_y ℓ_τ(q, y) over the last axis (leading axes broadcast)."""
    return _expected_loss(np.asarray(p, dtype=float), comp_sum_from_probs(q, tau))


def conditional_risk_from_scores(p: ArrayLike, h: ArrayLike, tau: float) -> np.ndarray:
    """C_τ(p, softmax h), computed from log-softmax (accurate for saturated scores)."""
    return _expected_loss(np.asarray(p, dtype=float),
                          _loss_from_log_probs(log_softmax(h, axis=-1), tau))


def conditional_risk_inf(p: ArrayLike, tau: float) -> np.ndarray:
    """C*_τ(p) = inf_q C_τ(p, q) over the whole simplex (complete hypothesis set).

    τ<2, τ≠1: (1 − (Σ_y p_y^{1/(2−τ)})^{2−τ})/(τ−1);  τ=1: entropy H(p);  τ=2: 1 − max_y p_y.
    """
    _check_tau(tau)
    p = np.asarray(p, dtype=float)
    if tau == 1:
        return entr(p).sum(axis=-1)
    if tau == 2:
        return 1 - p.max(axis=-1)
    log_s = np.log(np.sum(p ** (1 / (2 - tau)), axis=-1))
    return -np.expm1((2 - tau) * log_s) / (tau - 1)


def conditional_minimizer(p: ArrayLike, tau: float) -> np.ndarray:
    """The minimiser q ∝ p^{1/(2−τ)} of C_τ(p, ·), τ < 2 (at τ=2 the infimum is not attained)."""
    if not 0 <= tau < 2:
        raise ValueError(f"the minimiser exists for 0 <= tau < 2, got {tau}")
    w = np.asarray(p, dtype=float) ** (1 / (2 - tau))
    return w / w.sum(axis=-1, keepdims=True)


def pooled_distribution(p: ArrayLike, j: int) -> np.ndarray:
    """p with class j pooled (averaged) with every class whose probability exceeds the pool mean.

    The pool is {j} ∪ top-k classes, k maximising the mean of p_j and the k largest other p_y.
    Derived (KKT): inf{C_τ(p, q) : q_j ≥ q_y ∀y} = C*_τ(pooled_distribution(p, j)), τ ∈ [0, 2].
    """
    p = np.asarray(p, dtype=float)
    n = p.shape[-1]
    others = -np.sort(-np.delete(p, j, axis=-1), axis=-1)
    head = np.concatenate([np.zeros_like(others[..., :1]), np.cumsum(others, axis=-1)], axis=-1)
    level = np.max((p[..., j:j + 1] + head) / np.arange(1, n + 1), axis=-1, keepdims=True)
    pool = (p > level) | (np.arange(n) == j)
    return np.where(pool, level, p)


def wrong_argmax_risk_inf(p: ArrayLike, j: int, tau: float) -> np.ndarray:
    """inf of C_τ(p, q) over softmax outputs q whose argmax is class j (closure: q_j ≥ q_y)."""
    return conditional_risk_inf(pooled_distribution(p, j), tau)


# --- H-consistency transform -----------------------------------------------------------------

def T(t: ArrayLike, tau: float, n: int) -> np.ndarray:
    """The recalled transform T_τ(t), t ∈ [0, 1], with M(t) = ((1+t)^a + (1−t)^a)/2, a = 1/(2−τ):

    τ∈[0,1): 2^{1−τ}/(1−τ) · (1 − M^{2−τ});     τ=1: ((1+t)log(1+t) + (1−t)log(1−t))/2;
    τ∈(1,2): (M^{2−τ} − 1)/((τ−1) n^{τ−1});      τ=2: t/n.
    Computed with log1p/expm1 so that T stays accurate down to t ≈ 1e-6.
    """
    _check_tau(tau)
    t = np.asarray(t, dtype=float)
    if tau == 2:
        return t / n
    with np.errstate(divide="ignore", invalid="ignore"):
        log1m = np.log1p(-t)
        if tau == 1:
            return 0.5 * ((1 + t) * np.log1p(t) + np.where(t < 1, (1 - t) * log1m, 0.0))
        a = 1 / (2 - tau)
        m_minus_1 = 0.5 * (np.expm1(a * np.log1p(t)) + np.expm1(a * log1m))
    g = np.expm1((2 - tau) * np.log1p(m_minus_1))  # M^{2−τ} − 1
    scale = 2.0 ** (1 - tau) if tau < 1 else float(n) ** (1 - tau)
    return scale * g / (tau - 1)


def Gamma(eps: ArrayLike, tau: float, n: int, iters: int = 100) -> np.ndarray:
    """Γ_τ = T_τ^{-1} by vectorised bisection on [0, 1]; 0 for ε ≤ 0 and 1 for ε ≥ T_τ(1).

    Returns the upper end of the final bracket, so it never underestimates Γ (by > 2^-iters).
    """
    eps = np.asarray(eps, dtype=float)
    lo, hi = np.zeros_like(eps), np.ones_like(eps)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = T(mid, tau, n) < eps
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(eps <= 0, 0.0, hi)


# --- Minimizability ----------------------------------------------------------------------------

def minimizability_gap_deterministic(tau: float, n: int, Lambda: float) -> np.ndarray:
    """Φ^τ((n−1) e^{−2Λ}): the smallest τ-loss reachable with scores ‖h‖∞ ≤ Λ on a sure label.

    Precisely: min_{h ∈ [−Λ, Λ]ⁿ} ℓ_τ(h, y), attained at h_y = Λ, h_{y'} = −Λ (u = (n−1)e^{−2Λ}).
    This is the best conditional τ-risk E_x[C*_τ(H, x)] for deterministic labels, i.e. the
    approximation error R*_τ(H) − R*_τ(all) of the bounded set. The research note calls it the
    minimizability gap M_τ; that identification with the paper's statement is recalled, not
    verified (for H = all functions with ‖h‖∞ ≤ Λ, unrestricted across x, the gap
    R*_τ(H) − E_x[C*_τ(H, x)] itself is 0).
    """
    return phi((n - 1) * np.exp(-2.0 * Lambda), tau)


# --- Calibration function search ---------------------------------------------------------------

def _distribution_at_regret(w: np.ndarray, t: float) -> np.ndarray:
    """p with p_0 − p_1 = t from free weights w (..., n−1), s = softmax(w):
    p_0 = t + (1−t)s_0/2, p_1 = (1−t)s_0/2, p_{k+1} = (1−t)s_k; covers all such p as w varies."""
    s = softmax(w, axis=-1)
    pair = (1 - t) * s[..., :1] / 2
    return np.concatenate([t + pair, pair, (1 - t) * s[..., 1:]], axis=-1)


def _calibration_gap(w: np.ndarray, t: float, tau: float) -> np.ndarray:
    p = _distribution_at_regret(w, t)
    return wrong_argmax_risk_inf(p, 1, tau) - conditional_risk_inf(p, tau)


def calibration_gap_search(tau: float, n: int, t_grid: ArrayLike, n_samples: int = 4000,
                           n_refine: int = 3, seed: int = 0) -> np.ndarray:
    """Estimate δ_τ(t) = inf{C_τ(p,q) − C*_τ(p) : max_y p_y − p_{argmax q} ≥ t} for each t.

    By symmetry of ℓ_τ under relabelling, take the wrong predicted class j = 1 and p_0 − p_1 = t
    (δ is nondecreasing, so regret exactly t suffices; then max p − p_1 ≥ t). The inner
    infimum over q is exact (pooled_distribution); the outer one over p is a random search over
    softmax weights (a quarter of them with equal weights on the classes ≥ 2), with random
    supports (weights −∞) to reach the simplex faces, then Nelder–Mead from the n_refine best.
    Every estimate is the gap of a feasible point, so it is ≥ δ_τ(t): an estimate below T_τ(t)
    refutes the recalled T_τ.
    """
    rng = np.random.default_rng(seed)
    w = 3.0 * rng.standard_normal((n_samples, n - 1))
    w[: n_samples // 4, 1:] = 0.0  # a quarter with equal mass on the other classes
    w[rng.random(w.shape) < 0.3] = -np.inf
    w[np.all(np.isinf(w), axis=1), 0] = 0.0
    best = []
    for t in np.asarray(t_grid, dtype=float):
        gaps = _calibration_gap(w, t, tau)
        estimate = float(gaps.min())
        for row in w[np.argsort(gaps)[:n_refine]]:
            active = np.isfinite(row)

            def objective(x: np.ndarray, row: np.ndarray = row, active: np.ndarray = active,
                          t: float = t) -> float:
                w_x = row.copy()
                w_x[active] = x
                return float(_calibration_gap(w_x, t, tau))

            res = minimize(objective, row[active], method="Nelder-Mead",
                           options={"xatol": 1e-10, "fatol": 1e-16, "maxiter": 2000})
            estimate = min(estimate, float(res.fun))
        best.append(estimate)
    return np.array(best)


# --- Exact tabular experiment ------------------------------------------------------------------

@dataclass(frozen=True)
class TabularProblem:
    """X = {1..K} uniform, p(y|x) = p[x] (rows drawn from Dirichlet(α·1))."""

    p: np.ndarray
    alpha: float
    seed: int

    @property
    def K(self) -> int:
        return self.p.shape[0]

    @property
    def n(self) -> int:
        return self.p.shape[1]


def make_tabular_problem(K: int = 100, n: int = 10, alpha: float = 1.0,
                         seed: int = 0) -> TabularProblem:
    """A deterministic-by-seed tabular problem with K inputs and n classes."""
    p = np.random.default_rng(seed).dirichlet(alpha * np.ones(n), size=K)
    return TabularProblem(p=p, alpha=alpha, seed=seed)


def surrogate_excess_risk(h_table: ArrayLike, problem: TabularProblem, tau: float) -> np.ndarray:
    """E_x[C_τ(p(x), softmax h(x))] − E_x[C*_τ(p(x))]; h_table is (..., K, n)."""
    risk = conditional_risk_from_scores(problem.p, h_table, tau)
    return np.mean(risk - conditional_risk_inf(problem.p, tau), axis=-1)


def zero_one_excess_risk(h_table: ArrayLike, problem: TabularProblem) -> np.ndarray:
    """E_x[max_y p(y|x) − p(argmax_y h(x, y) | x)] (ties broken to the lowest index)."""
    pred = np.argmax(np.asarray(h_table), axis=-1)
    p_pred = np.take_along_axis(np.broadcast_to(problem.p, np.shape(h_table)),
                                pred[..., None], axis=-1)[..., 0]
    return np.mean(problem.p.max(axis=-1) - p_pred, axis=-1)


def population_risk_torch(h: torch.Tensor, p: torch.Tensor, tau: float) -> torch.Tensor:
    """E_x Σ_y p(y|x) ℓ_τ(h(x), y) for a score table h (K, n), differentiable."""
    loss = comp_sum_from_log_probs(torch.log_softmax(h, dim=-1), tau)
    return (p * loss).sum(dim=-1).mean()


def bound_trajectory(problem: TabularProblem, tau: float, steps: int = 200, lr: float = 0.05,
                     seed: int = 0, init_scale: float = 1.0, optimizer: str = "adam",
                     log_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch descent on the exact population τ-risk of a free score table (torch float64).

    Starts from h = init_scale · N(0, 1) (torch generator seeded by `seed`); `optimizer` is
    "adam" (default: robust for sum-exp's exploding and MAE's vanishing gradients) or "gd"
    (plain gradient descent; the risk averages K rows, so each row moves by about lr/K times
    its own gradient). Returns (surrogate excess, 0-1 excess) at steps 0, log_every, ….
    """
    gen = torch.Generator().manual_seed(seed)
    h = (init_scale * torch.randn(problem.K, problem.n, generator=gen,
                                  dtype=torch.float64)).requires_grad_()
    p = torch.as_tensor(problem.p)
    opt = torch.optim.Adam([h], lr=lr) if optimizer == "adam" else torch.optim.SGD([h], lr=lr)
    tables = []
    for step in range(steps + 1):
        if step % log_every == 0:
            tables.append(h.detach().numpy().copy())
        if step == steps:
            break
        opt.zero_grad()
        population_risk_torch(h, p, tau).backward()
        opt.step()
    tables = np.stack(tables)
    return surrogate_excess_risk(tables, problem, tau), zero_one_excess_risk(tables, problem)


def bound_trajectories(problem: TabularProblem, tau: float, starts: list[tuple[int, float]],
                       steps: int = 200, lr: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """`bound_trajectory` (Adam, every step logged) from several (seed, init_scale) starts at
    once: the tables are stacked and their population risks summed, so each gets its own
    gradient and (Adam being elementwise) its own trajectory, equal to `bound_trajectory`'s up
    to rounding. Returns the pooled (surrogate excess, 0-1 excess)."""
    h0 = [scale * torch.randn(problem.K, problem.n, generator=torch.Generator().manual_seed(s),
                              dtype=torch.float64) for s, scale in starts]
    h = torch.stack(h0).requires_grad_()
    p = torch.as_tensor(problem.p)
    opt = torch.optim.Adam([h], lr=lr)
    tables = []
    for step in range(steps + 1):
        tables.append(h.detach().numpy().copy())
        if step == steps:
            break
        opt.zero_grad()
        loss = comp_sum_from_log_probs(torch.log_softmax(h, dim=-1), tau)
        (p * loss).sum(dim=-1).mean(dim=-1).sum().backward()  # Σ_j population risk of h[j]
        opt.step()
    tables = np.concatenate(np.stack(tables, axis=1))  # trajectory-major, as bound_trajectory
    return surrogate_excess_risk(tables, problem, tau), zero_one_excess_risk(tables, problem)


def random_score_tables(problem: TabularProblem, count: int = 200,
                        seed: int = 0) -> np.ndarray:
    """Tables c·log p(x) + s·N(0,1), c ~ U(0, 3), s log-uniform in [0.01, 3]: shape (count, K, n).

    They range from near-Bayes (small s) to heavily perturbed, filling the scatter between the
    trajectories and the bound curve.
    """
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 3, size=(count, 1, 1))
    s = 10 ** rng.uniform(-2, np.log10(3), size=(count, 1, 1))
    return c * np.log(problem.p) + s * rng.standard_normal((count, problem.K, problem.n))


def bound_scatter(problem: TabularProblem, tau: float,
                  init_scales: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0), n_inits: int = 2,
                  steps: int = 200, lr: float = 0.05, n_random: int = 200,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(surrogate excess, 0-1 excess) pooled over Adam trajectories from several inits and
    init scales, plus `n_random` random_score_tables: the point cloud to plot under Γ_τ."""
    starts = [(seed + 1000 * k + i, scale) for k, scale in enumerate(init_scales)
              for i in range(n_inits)]
    pts = [bound_trajectories(problem, tau, starts, steps, lr)]
    tables = random_score_tables(problem, n_random, seed)
    pts.append((surrogate_excess_risk(tables, problem, tau),
                zero_one_excess_risk(tables, problem)))
    return np.concatenate([a for a, _ in pts]), np.concatenate([b for _, b in pts])


def check_bound(surrogate_excess: ArrayLike, zero_one_excess: ArrayLike, tau: float, n: int,
                atol: float = 1e-9) -> float:
    """max(0-1 excess − Γ_τ(surrogate excess)); > 0 means the bound is violated.

    Surrogate excesses in [−atol, 0) are rounding and are clipped to 0; below −atol they mean
    a wrong C*_τ, and raise ValueError.
    """
    s = np.asarray(surrogate_excess, dtype=float)
    if np.any(s < -atol):
        raise ValueError(f"negative surrogate excess {s.min():.3g}: C*_tau is wrong")
    return float(np.max(np.asarray(zero_one_excess) - Gamma(np.clip(s, 0, None), tau, n)))
