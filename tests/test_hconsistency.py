"""lossbook.hconsistency: comp-sum closed forms, the recalled T_τ, and the exact tabular bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import softmax

from lossbook import losses
from lossbook.hconsistency import (
    Gamma,
    T,
    bound_scatter,
    bound_trajectory,
    calibration_gap_search,
    check_bound,
    comp_sum_from_probs,
    conditional_minimizer,
    conditional_risk,
    conditional_risk_from_scores,
    conditional_risk_inf,
    make_tabular_problem,
    minimizability_gap_deterministic,
    phi,
    pooled_distribution,
    population_risk_torch,
    surrogate_excess_risk,
    wrong_argmax_risk_inf,
    zero_one_excess_risk,
)

TAUS = [0.0, 0.5, 1.0, 1.5, 1.9]  # τ < 2: the minimiser exists
ALL_TAUS = [*TAUS, 2.0]
T_GRID = np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9])


def _rng(*key: float) -> np.random.Generator:
    return np.random.default_rng([int(1000 * k) for k in key])


# --- Losses ----------------------------------------------------------------------------------

def test_phi_reductions() -> None:
    u = np.linspace(0, 20, 41)
    np.testing.assert_allclose(phi(u, 0), u, rtol=1e-14)
    np.testing.assert_allclose(phi(u, 1), np.log1p(u), rtol=1e-14)
    np.testing.assert_allclose(phi(u, 2), u / (1 + u), rtol=1e-14)


@pytest.mark.parametrize("tau", [*ALL_TAUS, 0.3, 1.7])
def test_phi_of_u_is_loss_of_true_class_probability(tau: float) -> None:
    h = _rng(tau).normal(0, 3, size=(50, 5))
    q = softmax(h, axis=1)
    u = np.exp(h[:, 1:] - h[:, :1]).sum(axis=1)  # true class y = 0
    np.testing.assert_allclose(phi(u, tau), comp_sum_from_probs(q[:, 0], tau), rtol=1e-11)
    if tau == 2:
        np.testing.assert_allclose(phi(u, tau), 1 - q[:, 0], rtol=1e-12)
    torch_loss = losses.comp_sum_loss(torch.as_tensor(h), torch.zeros(50, dtype=torch.long),
                                      tau, reduction="none").numpy()
    np.testing.assert_allclose(torch_loss, phi(u, tau), rtol=1e-11)


def test_loss_and_inf_continuous_in_tau_at_one() -> None:
    q = np.logspace(-6, 0, 25)
    p = _rng(1).dirichlet(np.ones(5), size=20)
    for d in (1e-7, -1e-7):
        np.testing.assert_allclose(comp_sum_from_probs(q, 1 + d), -np.log(q), rtol=1e-5,
                                   atol=1e-12)
        np.testing.assert_allclose(phi(q, 1 + d), np.log1p(q), rtol=1e-6)
        np.testing.assert_allclose(conditional_risk_inf(p, 1 + d), conditional_risk_inf(p, 1),
                                   rtol=1e-5)


# --- Conditional risks -----------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 4])
@pytest.mark.parametrize("tau", TAUS)
def test_conditional_inf_and_minimizer_match_numerical_minimisation(n: int, tau: float) -> None:
    rng = _rng(n, tau)
    for p in rng.dirichlet(np.ones(n), size=3):
        res = minimize(lambda q, p=p: float(conditional_risk(p, q, tau)), np.ones(n) / n,
                       method="SLSQP", bounds=[(1e-12, 1)] * n,
                       constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1}],
                       options={"ftol": 1e-15, "maxiter": 500})
        closed = float(conditional_risk_inf(p, tau))
        assert closed - 1e-12 <= res.fun <= closed + 1e-9
        np.testing.assert_allclose(res.x, conditional_minimizer(p, tau), atol=1e-4)
        q_star = conditional_minimizer(p, tau)
        assert conditional_risk(p, q_star, tau) == pytest.approx(conditional_risk_inf(p, tau),
                                                                 abs=1e-13)
        q_random = rng.dirichlet(np.ones(n), size=2000)
        assert np.all(conditional_risk(p, q_random, tau) >= conditional_risk_inf(p, tau))


def test_conditional_inf_tau_two_is_one_minus_max() -> None:
    p = np.array([0.5, 0.3, 0.2])
    assert conditional_risk_inf(p, 2) == pytest.approx(0.5)
    q_random = _rng(2).dirichlet(np.ones(3), size=2000)
    assert np.all(conditional_risk(p, q_random, 2) >= 0.5)
    assert conditional_risk_from_scores(p, [40.0, 0, 0], 2) == pytest.approx(0.5, abs=1e-15)


@pytest.mark.parametrize("n", [3, 4])
@pytest.mark.parametrize("tau", ALL_TAUS)
def test_pooled_distribution_gives_constrained_minimum(n: int, tau: float) -> None:
    """inf{C(p, q) : q_j ≥ q_y ∀y} = C*(pooled p), checked with SLSQP over the simplex."""
    rng = _rng(n, tau, 7)
    for p in rng.dirichlet(np.ones(n), size=4):
        j = int(np.argmin(p)) if rng.random() < 0.5 else int(np.argsort(p)[-2])
        closed = float(wrong_argmax_risk_inf(p, j, tau))
        cons = [{"type": "eq", "fun": lambda q: q.sum() - 1}] + [
            {"type": "ineq", "fun": lambda q, j=j, y=y: q[j] - q[y]} for y in range(n) if y != j]
        res = minimize(lambda q, p=p: float(conditional_risk(p, q, tau)), np.ones(n) / n,
                       method="SLSQP", bounds=[(1e-9, 1)] * n, constraints=cons,
                       options={"ftol": 1e-14, "maxiter": 500})
        assert res.fun == pytest.approx(closed, abs=1e-6)
        if tau < 2:  # the closed-form minimiser predicts j (up to ties) and attains the value
            q = conditional_minimizer(pooled_distribution(p, j), tau)
            assert q[j] >= q.max() - 1e-15
            assert conditional_risk(p, q, tau) == pytest.approx(closed, abs=1e-13)


# --- T and Γ ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 10, 100])
@pytest.mark.parametrize("tau", ALL_TAUS)
def test_T_zero_increasing_convex(n: int, tau: float) -> None:
    t = np.linspace(0, 1, 2001)
    values = T(t, tau, n)
    assert values[0] == 0
    assert np.all(np.diff(values) > 0)
    assert np.all(np.diff(values, 2) >= -1e-13)


@pytest.mark.parametrize("tau", ALL_TAUS)
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_T_binary_is_exact_regret_of_the_boundary_hypothesis(tau: float, t: float) -> None:
    """n = 2, also for the τ ∈ (1, 2) branch whose n^{τ−1} factor equals 2^{τ−1} here."""
    p = np.array([(1 + t) / 2, (1 - t) / 2])
    regret = conditional_risk(p, np.array([0.5, 0.5]), tau) - conditional_risk_inf(p, tau)
    assert float(T(t, tau, 2)) == pytest.approx(float(regret), rel=1e-12)


@pytest.mark.parametrize("tau", [1.2, 1.5, 1.9])
def test_T_n_dependence_is_a_pure_factor_for_tau_in_1_2(tau: float) -> None:
    t = np.linspace(0, 1, 11)
    for n in (3, 10, 100):
        np.testing.assert_allclose(T(t, tau, n), (2 / n) ** (tau - 1) * T(t, tau, 2),
                                   rtol=1e-13)


@pytest.mark.parametrize("n", [2, 10])
@pytest.mark.parametrize("tau", ALL_TAUS)
def test_Gamma_is_inverse_of_T(n: int, tau: float) -> None:
    top = float(T(1.0, tau, n))
    eps = np.concatenate([np.logspace(-10, np.log10(top), 50, endpoint=False), [top, 2 * top]])
    g = Gamma(eps, tau, n)
    np.testing.assert_allclose(T(g[:-1], tau, n), eps[:-1], rtol=1e-9)
    assert g[-1] == 1 and Gamma(0.0, tau, n) == 0
    t = np.linspace(0.001, 1, 50)
    np.testing.assert_allclose(Gamma(T(t, tau, n), tau, n), t, rtol=1e-9)


@pytest.mark.parametrize("n", [2, 10, 100])
@pytest.mark.parametrize("tau", [*ALL_TAUS, 1.2, 1.7])
def test_Gamma_small_eps_matches_table(n: int, tau: float) -> None:
    eps = 1e-6
    if tau <= 1:
        expected = np.sqrt(2**tau * (2 - tau) * eps)
    elif tau < 2:
        expected = np.sqrt(2 * (2 - tau) * n ** (tau - 1) * eps)
    else:
        expected = n * eps
    assert float(Gamma(eps, tau, n)) == pytest.approx(expected, rel=1e-3)


# --- The recalled T_τ against the true calibration function ----------------------------------

@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("tau", ALL_TAUS)
def test_conditional_regret_dominates_T_on_random_pairs(n: int, tau: float) -> None:
    """Direct check, no search and no pooling: C(p,q) − C*(p) ≥ T_τ(0-1 regret) for random p, q."""
    rng = _rng(n, tau, 3)
    p = rng.dirichlet(0.5 * np.ones(n), size=20_000)
    h = rng.normal(0, 1, size=(20_000, n)) * rng.choice([0.01, 0.3, 3.0], size=(20_000, 1))
    regret = p.max(axis=1) - np.take_along_axis(p, h.argmax(1)[:, None], 1)[:, 0]
    gap = conditional_risk_from_scores(p, h, tau) - conditional_risk_inf(p, tau)
    assert np.all(gap >= T(regret, tau, n) - 1e-12)


@pytest.mark.parametrize("tau", [*ALL_TAUS, 1.2, 1.7])
def test_calibration_search_never_below_T(tau: float) -> None:
    """n = 3: the true calibration function must dominate T_τ, else the bound would be false."""
    found = calibration_gap_search(tau, 3, T_GRID)
    assert np.all(found >= T(T_GRID, tau, 3) * (1 - 1e-9))


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0])
def test_T_is_tight_for_tau_at_most_one(n: int, tau: float) -> None:
    """τ ≤ 1: the search reaches T_τ itself (n-independent, attained on two classes)."""
    np.testing.assert_allclose(calibration_gap_search(tau, n, T_GRID), T(T_GRID, tau, n),
                               rtol=1e-4)


@pytest.mark.parametrize("tau", [1.2, 1.5, 1.7, 1.9, 2.0])
def test_T_for_tau_above_one_tight_at_n2_loose_at_n3(tau: float) -> None:
    """n = 2: tight. n = 3: the calibration function at small t is the binary one, so it exceeds
    T_τ by (3/2)^{τ−1} (τ < 2); at τ = 2 it is t/3 = T_τ exactly while t ≤ 1/2."""
    t_small = np.array([0.01, 0.02])
    np.testing.assert_allclose(calibration_gap_search(tau, 2, T_GRID), T(T_GRID, tau, 2),
                               rtol=1e-4)
    ratio = calibration_gap_search(tau, 3, t_small) / T(t_small, tau, 3)
    expected = 1.0 if tau == 2 else 1.5 ** (tau - 1)
    np.testing.assert_allclose(ratio, expected, rtol=1e-3)


# --- Exact tabular experiment ----------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 10])
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.5, 2.0])
def test_tabular_points_satisfy_the_bound(n: int, tau: float) -> None:
    problem = make_tabular_problem(K=100, n=n, alpha=1.0, seed=0)
    surrogate, zero_one = bound_scatter(problem, tau, init_scales=(0.3, 3.0, 10.0), n_inits=1,
                                        steps=100, n_random=100, seed=1)
    assert np.any(zero_one > 0.01) and surrogate.min() < 1e-2  # a non-trivial cloud
    assert check_bound(surrogate, zero_one, tau, n) <= 1e-9


def test_tabular_is_deterministic_by_seed() -> None:
    a, b = make_tabular_problem(50, 4, 0.5, 3), make_tabular_problem(50, 4, 0.5, 3)
    np.testing.assert_array_equal(a.p, b.p)
    assert (a.K, a.n) == (50, 4)
    run = [bound_trajectory(a, 1.0, steps=20, seed=5, init_scale=2.0) for _ in range(2)]
    np.testing.assert_array_equal(run[0][0], run[1][0])
    np.testing.assert_array_equal(run[0][1], run[1][1])
    assert len(run[0][0]) == 21


@pytest.mark.parametrize("tau", TAUS)
def test_tabular_risks_are_exact(tau: float) -> None:
    problem = make_tabular_problem(K=30, n=5, alpha=1.0, seed=2)
    h_star = np.log(conditional_minimizer(problem.p, tau))
    assert abs(float(surrogate_excess_risk(h_star, problem, tau))) < 1e-13
    assert float(zero_one_excess_risk(h_star, problem)) == 0
    h = _rng(tau).normal(size=(30, 5))
    risk = population_risk_torch(torch.as_tensor(h), torch.as_tensor(problem.p), tau).item()
    assert risk == pytest.approx(float(conditional_risk_from_scores(problem.p, h, tau).mean()),
                                 rel=1e-13)
    manual = np.mean(problem.p.max(1) - problem.p[np.arange(30), h.argmax(1)])
    assert float(zero_one_excess_risk(h, problem)) == pytest.approx(manual, abs=1e-15)


def test_plain_gradient_descent_decreases_the_risk() -> None:
    problem = make_tabular_problem(K=40, n=3, alpha=1.0, seed=4)
    surrogate, _ = bound_trajectory(problem, 1.0, steps=50, lr=20.0, optimizer="gd")
    assert np.all(np.diff(surrogate) <= 1e-15) and surrogate[-1] < 0.5 * surrogate[0]


def test_check_bound_rejects_negative_excess() -> None:
    with pytest.raises(ValueError):
        check_bound(np.array([-1e-6]), np.array([0.0]), 1.0, 3)
    assert check_bound(np.array([-1e-12, 0.1]), np.array([0.0, 0.05]), 1.0, 3) == 0


# --- Minimizability --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("Lambda", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("tau", ALL_TAUS)
def test_best_bounded_risk_matches_numerical_minimisation(n: int, Lambda: float,
                                                          tau: float) -> None:
    """min over h ∈ [−Λ, Λ]ⁿ of ℓ_τ(h, y) (sure label y = 0) equals Φ^τ((n−1)e^{−2Λ})."""
    p = np.eye(n)[0]
    res = minimize(lambda h: float(conditional_risk_from_scores(p, h, tau)),
                   _rng(n, Lambda, tau).uniform(-Lambda, Lambda, n), method="L-BFGS-B",
                   bounds=[(-Lambda, Lambda)] * n)
    best = float(minimizability_gap_deterministic(tau, n, Lambda))
    assert res.fun == pytest.approx(best, rel=1e-9)


def test_best_bounded_risk_table_and_monotone_in_tau() -> None:
    values = [float(minimizability_gap_deterministic(tau, 10, 1.0)) for tau in ALL_TAUS]
    np.testing.assert_allclose([values[i] for i in (0, 1, 2, 3, 5)],
                               [1.218, 0.979, 0.797, 0.657, 0.549], atol=6e-4)
    for n, Lambda in [(2, 0.5), (10, 1.0), (100, 2.0)]:
        fine = [minimizability_gap_deterministic(tau, n, Lambda) for tau in np.linspace(0, 3, 61)]
        assert np.all(np.diff(fine) < 0)


def test_stacked_trajectories_equal_single_ones():
    from lossbook import hconsistency as hc

    problem = hc.make_tabular_problem(K=20, n=4, alpha=1.0, seed=0)
    starts = [(3, 0.3), (4, 3.0)]
    s, z = hc.bound_trajectories(problem, 1.5, starts, steps=30, lr=0.05)
    singles = [hc.bound_trajectory(problem, 1.5, 30, 0.05, seed, scale) for seed, scale in starts]
    np.testing.assert_allclose(s, np.concatenate([a for a, _ in singles]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(z, np.concatenate([b for _, b in singles]), atol=1e-12)
