import copy

import torch
import torch.nn.functional as F
from torch.func import stack_module_state

from lossbook import attacks, batched, losses, models


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


def stacked(nets):
    params, _ = stack_module_state(nets)
    forward = batched.exact_mlp_forward(copy.deepcopy(nets[0]).to("meta"))
    return lambda x: forward(params, x)


def test_attacks_on_stacked_models_equal_attacks_one_by_one():
    """PGD (CE, margin) and the divergence PGD on M stacked models, with one generator per
    model, give each model bit for bit the adversarial examples of attacking it alone."""
    torch.manual_seed(0)
    nets = [models.mlp(40, (100, 100), 10) for _ in range(3)]
    x, y = torch.randn(3, 96, 40), torch.randint(0, 10, (3, 96))
    f = stacked(nets)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4, 5)]  # noqa: E731
    kw = dict(eps=0.2, step_size=0.05, steps=5)
    runs = {"ce": lambda m, g, xx, yy: attacks.pgd(m, xx, yy, loss="ce", generator=g, **kw),
            "margin": lambda m, g, xx, yy: attacks.pgd(m, xx, yy, loss="margin", generator=g,
                                                       **kw),
            "kl": lambda m, g, xx, yy: attacks.pgd_divergence(m, xx, losses.trades_kl,
                                                              generator=g, **kw)}
    for name, run in runs.items():
        together = run(f, gens(), x, y)
        for m, g in enumerate(gens()):
            alone = run(nets[m], g, x[m], y[m])
            assert torch.equal(together[m], alone), name
            assert (alone - x[m]).abs().max() <= 0.2 + 1e-6


def test_exact_mlp_forward_has_linear_gradients():
    """Weight and input gradients of the stacked forward equal nn.Linear's, bit for bit (the
    batched matmul of `grouped_forward` differs in the last bits for a 100 → 10 layer)."""
    torch.manual_seed(1)
    nets = [models.mlp(40, (100, 100), 10) for _ in range(2)]
    params, _ = stack_module_state(nets)
    forward = batched.exact_mlp_forward(copy.deepcopy(nets[0]).to("meta"))
    x = torch.randn(2, 128, 40, requires_grad=True)
    y = torch.randint(0, 10, (2, 128))
    z = forward(params, x)
    loss = sum(losses.trades_loss(z[m], z[m] * 1.1, y[m], 6.0) for m in range(2))
    grads = torch.autograd.grad(loss, [*params.values(), x])
    for m, net in enumerate(nets):
        xm = x[m].detach().clone().requires_grad_(True)
        zm = net(xm)
        alone = torch.autograd.grad(losses.trades_loss(zm, zm * 1.1, y[m], 6.0),
                                    [*net.parameters(), xm])
        assert all(torch.equal(a, b[m]) for a, b in zip(alone, grads))
    assert batched.exact_mlp_forward(models.CNN1D(40, 8, 10)) is None


def test_worst_case_is_below_every_attack():
    model, x, y = setup()
    g = torch.Generator().manual_seed(0)
    worst = attacks.worst_case_correct(model, x, y, eps=0.3, steps=10, restarts=2, generator=g)
    assert worst["all"].sum() <= min(worst["margin"].sum(), worst["ce"].sum())
    assert torch.equal(worst["all"], worst["margin"] & worst["ce"])
    clean = model(x).argmax(1) == y
    assert not (worst["all"] & ~clean).any()  # never robust where wrong on clean data
    single = attacks.robust_accuracy(model, x, y, eps=0.3, step_size=0.075, steps=10,
                                     generator=torch.Generator().manual_seed(0))
    assert worst["margin"].float().mean() <= single + 1e-9  # the first restart is that run
