import torch
import torch.nn.functional as F

from lossbook import attacks, losses, models


def setup():
    torch.manual_seed(0)
    model = models.mlp(10, (32,), 4)
    x = torch.randn(64, 10)
    y = torch.randint(0, 4, (64,))
    return model, x, y


def test_margin_loss():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    torch.testing.assert_close(attacks.margin_loss(logits, torch.tensor([1, 2])),
                               torch.tensor([-3.0, -3.0]))


def test_pgd_stays_in_ball_and_increases_loss():
    model, x, y = setup()
    for loss in ("ce", "margin"):
        x_adv = attacks.pgd(model, x, y, eps=0.1, step_size=0.025, steps=10, loss=loss)
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    clamped = attacks.pgd(model, x.sigmoid(), y, eps=0.5, step_size=0.2, steps=3,
                          clamp=(0.0, 1.0))
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_fgsm_and_robust_accuracy():
    model, x, y = setup()
    x_adv = attacks.fgsm(model, x, y, eps=0.2)
    torch.testing.assert_close((x_adv - x).abs().max(), torch.tensor(0.2))
    clean = attacks.accuracy(model, x, y)
    robust = attacks.robust_accuracy(model, x, y, eps=0.5, step_size=0.1, steps=10)
    assert robust <= clean
    assert attacks.robust_accuracy(model, x, y, eps=0.0, step_size=0.0, steps=1) == clean


def test_divergence_pgd_increases_divergence_and_restores_mode():
    model, x, y = setup()
    model.train()
    x_adv = attacks.pgd_divergence(model, x, losses.trades_kl, eps=0.3, step_size=0.1, steps=5)
    assert model.training
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    near = x + 0.001 * torch.randn_like(x)
    assert losses.trades_kl(model(x_adv), model(x)) > losses.trades_kl(model(near), model(x))
