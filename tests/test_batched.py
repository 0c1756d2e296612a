"""`fit_batched` over seeds equals `train.fit` once per seed (float tolerance), for the MLP and
the 1D-CNN, every optimizer and schedule, per-model data, early stopping; and the sweep seam."""

import pytest
import torch

from lossbook import batched, cache, data, losses, margins, models, train

SEEDS = [0, 3, 7]


def mixture(seed=0, dim=8):
    return data.gaussian_mixture(5, dim, 40, 20, noise=1.0, seed=seed)


def build(kind, seed, dim=8):
    torch.manual_seed(seed)
    if kind == "mlp":
        return models.mlp(dim, (16, 16), 5)
    if kind == "tanh":  # no grouped forward: goes through vmap(functional_call)
        return torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(),
                                   torch.nn.Linear(16, 5))
    net = models.CNN1D(dim, 8, 5)
    if kind == "cnn1d_cosine":
        net.head = margins.NormedLinear(net.head.in_features, 5)
    return net


def strip(history):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


def assert_close_history(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(strip(a), strip(b)):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), key


def compare(kind, loss_fn, datasets, dim=8, exact=True, **kw):
    """Train per seed with `fit` and all seeds with `fit_batched`; assert they agree: bit for
    bit (`exact`; else to float tolerance). Float-level differences grow over a long SGD run
    until the runs part (seen in chapter 6 with a grouped convolution), so the MLP and the
    1-D CNN paths are held to bitwise equality."""
    alone, alone_results = [], []
    for seed, dataset in zip(SEEDS, datasets):
        model = build(kind, seed, dim)
        alone_results.append(train.fit(model, dataset, train.logit_objective(loss_fn),
                                       seed=seed, **kw))
        alone.append(model)
    stacked = [build(kind, seed, dim) for seed in SEEDS]
    stacked_results = batched.fit_batched(stacked, datasets, loss_fn, seeds=SEEDS, **kw)
    for a, b, ra, rb in zip(alone, stacked, alone_results, stacked_results):
        for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(pb, pa, rtol=0, atol=0, msg=name) if exact else \
                torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-5, msg=name)
        assert_close_history(ra["history"], rb["history"])
        assert ra["selected"] == rb["selected"]
    return stacked_results


@pytest.mark.parametrize("kind,dim", [("mlp", 8), ("cnn1d", 24), ("cnn1d_cosine", 24)])
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_equals_fit_per_seed(kind, dim, opt):
    kw = dict(optimizer=opt, lr=1e-2 if opt == "adam" else 0.05, weight_decay=1e-3,
              nesterov=opt == "sgd", schedule="cosine")
    compare(kind, lambda z, y: losses.comp_sum_loss(z, y, 0.5), [mixture(0, dim)] * 3, dim,
            epochs=3, batch_size=32, **kw)


def test_other_models_through_vmap():
    assert batched.grouped_forward(build("tanh", 0)) is None
    assert batched.grouped_forward(build("cnn1d", 0, 24)) is not None
    compare("tanh", torch.nn.functional.cross_entropy, [mixture()] * 3, exact=False, epochs=3,
            batch_size=32, lr=1e-2, optimizer="adam", weight_decay=1e-3)


def test_per_model_data_weights_steps_and_early_stopping():
    # each seed its own training labels (as label noise or a long-tailed draw per seed does)
    base = mixture()
    datasets = [data.Dataset(base.x_train, data.symmetric_noise(base.y_train, 0.3, 5, seed=s),
                             base.x_test, base.y_test, 5) for s in SEEDS]
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    deltas = margins.ldam_margins([40] * 5, 0.5)
    results = compare("cnn1d_cosine",
                      lambda z, y: margins.ldam_loss(z, y, deltas, s=30.0, weight=weight),
                      datasets, steps=20, batch_size=32, lr=0.05,
                      optimizer="sgd", schedule="multistep", eval_every=2, select="test_acc")
    assert [r["step"] for r in results[0]["history"]] == [12, 20]


def test_deterministic_and_rejects_what_it_cannot_reproduce():
    def once():
        nets = [build("mlp", s) for s in SEEDS]
        out = batched.fit_batched(nets, [mixture()] * 3, torch.nn.functional.cross_entropy,
                                  seeds=SEEDS, epochs=2, batch_size=32, lr=1e-2)
        return [strip(r["history"]) for r in out], [n[0].weight.clone() for n in nets]
    (h1, w1), (h2, w2) = once(), once()
    assert h1 == h2 and all(torch.equal(a, b) for a, b in zip(w1, w2))
    bn = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    assert not batched.batchable(bn) and batched.batchable(build("cnn1d", 0, 24))
    with pytest.raises(ValueError, match="BatchNorm"):
        batched.fit_batched([bn], [mixture()], torch.nn.functional.cross_entropy, seeds=[0],
                            epochs=1, batch_size=32, lr=1e-2)
    with pytest.raises(ValueError, match="one seed per model"):
        batched.fit_batched([build("mlp", 0)], [mixture()], torch.nn.functional.cross_entropy,
                            seeds=[0, 1], epochs=1, batch_size=32, lr=1e-2)


# --- the sweep seam: runs that differ only in their seed go to `fn.batched` together ----------

CALLS: list[list[int]] = []


def square(spec):
    return {"value": spec["x"] ** 2 + spec["seed"]}


def square_many(specs):
    CALLS.append([s["seed"] for s in specs])
    return [square(s) for s in specs]


square.batched = square_many


def test_sweep_groups_seed_replicates(tmp_path):
    CALLS.clear()
    specs = [{"x": x, "seed": s} for x in (1, 2) for s in (0, 1, 2)]
    run_cache = cache.RunCache(tmp_path)
    run_cache.put(square, specs[1], square(specs[1]))  # one replicate already cached
    results = cache.sweep(square, specs, cache=run_cache, progress=False)
    assert results == [square(s) for s in specs]
    assert sorted(CALLS) == [[0, 1, 2], [0, 2]]
    # one cache entry per spec, under the key of the unbatched path
    assert all(run_cache.get(square, s) == square(s) for s in specs)
    CALLS.clear()
    assert cache.sweep(square, specs, cache=run_cache, progress=False) == results
    assert CALLS == []


# --- chapter run functions: the batched twin equals the run function per spec -----------------

def assert_close_results(alone, together):
    """Same keys; numbers equal to float tolerance (accuracies may differ by a sample)."""
    assert alone.keys() == together.keys()
    for key, value in alone.items():
        if key == "history":
            assert_close_history(value, together[key])
        else:
            assert together[key] == pytest.approx(value, rel=1e-3, abs=2e-3), key


def test_compsum_loss_runs_equal_loss_run():
    import dataclasses

    from lossbook.chapters import compsum as C

    cfg = dataclasses.replace(C.PRESETS["smoke"], tasks=("mnist1d_noisy",), taus=(0.5,),
                              seeds=3, epochs=2, mnist1d_samples=600)
    specs = C.loss_specs(cfg, 0, "cpu")
    for alone, together in zip(map(C.loss_run, specs), C.loss_run.batched(specs)):
        assert_close_results(alone, together)


@pytest.mark.parametrize("method", ["ldam_drw", "ce_rw", "ce_rs"])
def test_ldam_drw_runs_equal_run(method):
    import dataclasses

    from lossbook.chapters import ldam_drw as C

    cfg = dataclasses.replace(C.PRESETS["smoke"], methods=(method,), ratios=(10.0,), seeds=2,
                              mnist1d_samples=1000, max_per_class=60, channels=8)
    specs = C.specs(cfg, 0, "cpu")
    for alone, together in zip(map(C.run, specs), C.run.batched(specs)):
        assert_close_results(alone, together)
