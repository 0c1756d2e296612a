import pytest
import torch

from lossbook import data, losses, models, train


def small_data():
    return data.gaussian_mixture(5, 8, 40, 20, noise=1.0, seed=0)


def run(seed=0, **kw):
    torch.manual_seed(seed)
    model = models.mlp(8, (16,), 5)
    objective = train.logit_objective(lambda z, y: losses.comp_sum_loss(z, y, 1.0))
    kw.setdefault("epochs", 3)
    return model, train.fit(model, small_data(), objective, batch_size=32, lr=1e-2, seed=seed,
                            **kw)


def test_deterministic_for_a_seed():
    _, a = run(0)
    _, b = run(0)
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in b["history"]]
    _, c = run(1)
    assert c["history"][-1]["loss"] != a["history"][-1]["loss"]


def test_learns_and_logs_every_epoch():
    _, result = run(epochs=20)
    assert [r["epoch"] for r in result["history"]] == list(range(1, 21))
    assert result["final"]["train_acc"] > 0.8


def test_steps_mode_eval_every_and_validation():
    _, result = run(epochs=None, steps=14, eval_every=2)
    assert result["final"]["step"] == 14
    # 200 samples / batch 32 = 6 steps per epoch: epochs 2 and the final partial epoch 3
    assert [r["epoch"] for r in result["history"]] == [2, 3]
    with pytest.raises(ValueError, match="exactly one"):
        run(epochs=2, steps=3)


def test_select_restores_best_weights():
    scores = iter([0.1, 0.9, 0.2])

    def evaluate(model):
        return {"score": next(scores), "w": model[0].weight.sum().item()}

    model, result = run(epochs=3, evaluate=evaluate, select="score")
    assert result["selected"] == 0.9
    assert model[0].weight.sum().item() == pytest.approx(result["history"][1]["w"])


def test_lr_schedules():
    assert train.lr_factor("cosine", 0, 10) == 1.0
    assert train.lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    assert train.lr_factor("multistep", 8, 10) == pytest.approx(0.01)
    assert train.lr_factor("multistep", 8, 10, milestones=(0.3,), gamma=0.5) == 0.5
    # official SSL-SV decay: × 0.95 every 10 epochs (here 10 epochs = 50 steps)
    assert train.lr_factor("step", 49, 1000, gamma=0.95, steps_per_decay=50) == 1.0
    assert train.lr_factor("step", 100, 1000, gamma=0.95, steps_per_decay=50) == 0.95**2
    with pytest.raises(ValueError, match="valid: constant, cosine, multistep, step"):
        train.lr_factor("linear", 0, 1)
