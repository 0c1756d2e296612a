import math

import pytest
import torch
import torch.nn.functional as F

from lossbook import losses

TAUS = [0.0, 0.5, 1.0, 1.5, 1.7, 2.0]


def batch(n=64, classes=7, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, classes, generator=g, dtype=dtype),
            torch.randint(0, classes, (n,), generator=g))


def test_tau_one_is_cross_entropy():
    logits, y = batch(dtype=torch.float32)
    torch.testing.assert_close(losses.comp_sum_loss(logits, y, 1.0), F.cross_entropy(logits, y))
    torch.testing.assert_close(losses.comp_sum_loss(logits, y, 1.0, "none"),
                               F.cross_entropy(logits, y, reduction="none"))


@pytest.mark.parametrize("tau", TAUS)
def test_closed_form_equals_defining_form(tau):
    logits, y = batch()
    torch.testing.assert_close(losses.comp_sum_loss(logits, y, tau, "none"),
                               losses.comp_sum_general(logits, y, tau, "none"))


def test_named_members_of_the_family():
    logits, y = batch()
    p_y = logits.softmax(1).gather(1, y[:, None]).squeeze(1)
    none = dict(reduction="none")
    torch.testing.assert_close(losses.comp_sum_loss(logits, y, 0.0, **none), 1 / p_y - 1)
    torch.testing.assert_close(losses.comp_sum_loss(logits, y, 2.0, **none), 1 - p_y)
    for q in (0.5, 0.7):  # GCE (Zhang & Sabuncu 2018) with q = τ − 1
        torch.testing.assert_close(losses.comp_sum_loss(logits, y, 1 + q, **none),
                                   (1 - p_y**q) / q)


def test_continuous_in_tau_at_one():
    logits, y = batch()
    ce = losses.comp_sum_loss(logits, y, 1.0)
    for delta in (1e-3, 1e-5, 1e-7):
        for tau in (1 - delta, 1 + delta):
            assert abs(float(losses.comp_sum_loss(logits, y, tau) - ce)) < 10 * delta * (1 + ce)


def test_phi_reductions():
    u = torch.linspace(0, 20, 50, dtype=torch.float64)
    torch.testing.assert_close(losses.comp_sum_phi(u, 0.0), u)
    torch.testing.assert_close(losses.comp_sum_phi(u, 1.0), torch.log1p(u))
    torch.testing.assert_close(losses.comp_sum_phi(u, 2.0), u / (1 + u))


@pytest.mark.parametrize("tau", TAUS)
def test_stable_for_saturated_logits_float32(tau):
    # true class far ahead, far behind, and ties of huge logits
    logits = torch.tensor([[40.0, -40.0, 0.0], [-40.0, 40.0, 0.0], [1e4, 1e4, -1e4]])
    y = torch.tensor([0, 0, 0])
    logits.requires_grad_(True)
    loss = losses.comp_sum_loss(logits, y, tau, "none")
    assert torch.isfinite(loss).all(), loss
    reference = losses.comp_sum_loss(logits.detach().double(), y, tau, "none")
    torch.testing.assert_close(loss.double(), reference, rtol=1e-4, atol=1e-6)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert loss[0] < 1e-15 and loss[0] >= 0


@pytest.mark.parametrize("tau", [1.0, 1.5, 2.0])
def test_bounded_or_linear_growth_for_huge_wrong_margins(tau):
    logits = torch.tensor([[-1e4, 1e4]])
    loss = losses.comp_sum_loss(logits, torch.tensor([0]), tau)
    assert math.isfinite(loss.item())
    if tau > 1:
        assert loss.item() <= 1 / (tau - 1) + 1e-6


def test_reductions_and_validation():
    logits, y = batch()
    per = losses.comp_sum_loss(logits, y, 0.5, "none")
    torch.testing.assert_close(losses.comp_sum_loss(logits, y, 0.5, "sum"), per.sum())
    torch.testing.assert_close(losses.comp_sum_loss(logits, y, 0.5), per.mean())
    with pytest.raises(ValueError, match="valid: mean, sum, none"):
        losses.comp_sum_loss(logits, y, 0.5, "avg")
    with pytest.raises(ValueError, match="tau >= 0"):
        losses.comp_sum_loss(logits, y, -1.0)


def test_margin_vector_and_shift():
    logits = torch.tensor([[1.0, 3.0, -2.0]])
    y = torch.tensor([1])
    torch.testing.assert_close(losses.margin_vector(logits, y), torch.tensor([[2.0, 5.0]]))
    shifted = logits + torch.tensor([[0.5, 0.0, 0.0]])
    torch.testing.assert_close(losses.margin_shift(shifted, logits, y), torch.tensor([0.5]))
    # a common shift of all logits changes no margin
    torch.testing.assert_close(losses.margin_shift(logits + 7, logits, y), torch.tensor([0.0]))


def test_smooth_adv_loss_reduces_to_comp_sum_without_perturbation():
    logits, y = batch()
    for tau in TAUS:
        torch.testing.assert_close(
            losses.smooth_adv_comp_sum_loss(logits, logits.clone(), y, tau, nu=3.0),
            losses.comp_sum_loss(logits, y, tau))
    # ρ rescales the scores inside ℓ_τ
    torch.testing.assert_close(losses.smooth_adv_comp_sum_loss(logits, logits, y, 1.0, 1.0, 2.0),
                               F.cross_entropy(logits / 2, y))


def test_trades_loss_matches_official_formula():
    logits, y = batch(dtype=torch.float32)
    adv = logits + 0.3 * torch.randn_like(logits)
    p = logits.softmax(1)
    kl = (p * (p.log() - adv.log_softmax(1))).sum()
    torch.testing.assert_close(losses.trades_kl(adv, logits), kl)
    torch.testing.assert_close(losses.trades_loss(logits, adv, y, 6.0),
                               F.cross_entropy(logits, y) + 6.0 * kl / len(y))
