"""Chapter 5 (transformers learn in-context by GD): data, model, construction, baselines, runs."""

import dataclasses
import json
import math

import pytest
import torch

from lossbook import icl, presets
from lossbook.chapters import icl_gd as C


def tasks(n=512, seed=0, dtype=torch.float64, **kw):
    return icl.sample_tasks(n, generator=torch.Generator().manual_seed(seed), dtype=dtype, **kw)


def test_tasks_follow_the_official_data():
    t = tasks(256, input_range=1.0)
    assert t.tokens.shape == (256, 11, 11)
    assert torch.all(t.tokens[:, -1, -1] == 0)  # the query's y-slot starts at 0
    x = t.tokens[..., :-1]
    assert x.abs().max() <= 0.5  # U(−r/2, r/2) with r = 1
    torch.testing.assert_close(t.tokens[:, :-1, -1], torch.einsum("bnd,bd->bn", x[:, :-1], t.w))
    torch.testing.assert_close(t.target, (x[:, -1] * t.w).sum(-1))
    assert torch.equal(tasks(8, seed=3).tokens, tasks(8, seed=3).tokens)
    assert not torch.equal(tasks(8, seed=3).tokens, tasks(8, seed=4).tokens)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_construction_reproduces_gd_to_float_precision(steps):
    t = tasks()
    eta = 1.3
    model = icl.constructed_lsa(10, 10, eta, layers=steps, dtype=torch.float64)
    reference = icl.gd_predict(t.tokens, eta, steps)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(t.tokens), reference, rtol=0, atol=1e-12)
        torch.testing.assert_close(-model(t.tokens)[:, -1, -1], reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(icl.gd_tokens(t.tokens, eta, steps), reference, rtol=0, atol=1e-12)
    t32 = tasks(dtype=torch.float32)
    model32 = icl.constructed_lsa(10, 10, eta, layers=steps)
    with torch.no_grad():
        torch.testing.assert_close(model32.predict(t32.tokens),
                                   icl.gd_predict(t32.tokens.double(), eta, steps).float(),
                                   rtol=1e-5, atol=1e-5)


def test_construction_from_nonzero_start_and_gdpp():
    t = tasks()
    w0 = torch.randn(10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = icl.gd_construction(10, 10, 0.9, w0=w0, dtype=torch.float64)
    model = icl.LSA(11, key_size=11).double().load_matrices(c["W_Q"], c["W_K"], c["W_V"], c["P"])
    tokens = t.tokens.clone()
    tokens[:, -1, -1] = -(tokens[:, -1, :-1] @ w0)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(tokens), icl.gd_predict(t.tokens, 0.9, w0=w0),
                                   rtol=0, atol=1e-12)
    gdpp = icl.constructed_lsa(10, 10, 2.0, gamma=0.4, layers=2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gdpp.predict(t.tokens), icl.gd_tokens(t.tokens, 2.0, 2, 0.4),
                                   rtol=0, atol=1e-12)
    # GD++ moves the inputs by x ← x − (γ/N) Σ_j x_j x_jᵀ x
    out = gdpp.layer(t.tokens, 0)
    x = t.tokens[..., :-1]
    expected = x - 0.4 / 10 * torch.einsum("bnd,bne,bte->btd", x[:, :-1], x[:, :-1], x)
    torch.testing.assert_close(out[..., :-1], expected)


def test_fast_prediction_path_equals_full_forward():
    t = tasks(64)
    for layers, shared, clip in ((1, True, 0.0), (3, False, 0.0), (2, True, 0.0), (2, False, 0.0),
                                 (2, True, 2.0), (4, False, 3.0)):
        model = icl.LSA(11, layers=layers, shared=shared, init_scale=0.5, clip=clip,
                        seed=layers).double()
        with torch.no_grad():
            torch.testing.assert_close(model.predict(t.tokens), -model(t.tokens)[:, -1, -1])
        assert len(model.W_Q) == (1 if shared else layers)


def test_haiku_initialisation_scale():
    weight = torch.empty(400, 500)
    icl.haiku_variance_scaling_(weight, 0.002, fan_in=11, generator=torch.Generator())
    target = math.sqrt(0.002 / 11)
    assert weight.std().item() == pytest.approx(target, rel=0.01)
    assert weight.abs().max().item() <= 2 * target / icl.TRUNCATED_NORMAL_STD + 1e-9
    model = icl.LSA(11, layers=2)  # official init_scale = 0.002 / num_layers
    assert model.W_Q[0].std().item() < 0.02


def test_closed_form_step_size_matches_line_search():
    big = tasks(100_000, seed=5)
    eta, loss = icl.line_search_eta(big)
    eta_cf, loss_cf = icl.optimal_eta(10, 10, 2.0)
    assert eta == pytest.approx(eta_cf, rel=0.02)
    assert loss == pytest.approx(loss_cf, rel=0.02)
    assert icl.optimal_eta(10, 10, 1.0)[0] == pytest.approx(4 * eta_cf)  # η* ∝ 1/σ²
    small = tasks(2048)
    eta_s, loss_s = icl.line_search_eta(small)
    for other in (0.9 * eta_s, 1.1 * eta_s):
        assert float(icl.icl_loss(icl.gd_predict(small.tokens, other), small.target)) > loss_s
    eta2, loss2 = icl.line_search_eta(small, 2)
    for other in (0.95 * eta2, 1.05 * eta2):
        assert float(icl.icl_loss(icl.gd_predict(small.tokens, other, 2), small.target)) > loss2
    _, gamma, loss_pp = icl.fit_gdpp(small, 2, eta2)
    assert gamma > 0 and loss_pp < 0.9 * loss2  # the curvature correction helps


def test_gd_sensitivity_is_its_learned_weight_vector():
    t = tasks(32)
    pred, sens = icl.sensitivities(lambda tok: icl.gd_predict(tok, 1.5), t.tokens)
    x, y = t.tokens[:, :-1, :-1], t.tokens[:, :-1, -1]
    torch.testing.assert_close(sens, 1.5 / 10 * torch.einsum("bn,bnd->bd", y, x))
    same = icl.alignment(pred, sens, pred, sens)
    assert same["cos"] == pytest.approx(1.0) and same["pred_dist"] == 0
    assert same["sens_dist"] == 0


def test_effective_weights_undo_the_scale_ambiguity():
    c = icl.gd_construction(10, 10, 1.5, dtype=torch.float64)
    model = icl.LSA(11, key_size=11).double().load_matrices(3 * c["W_Q"], c["W_K"], c["W_V"],
                                                           c["P"] / 3)
    kq, pv = model.products()
    eff = icl.effective_weights(kq, pv, 10)
    torch.testing.assert_close(eff["KQ"], c["KQ"])
    assert eff["eta_over_n"] == pytest.approx(0.15)
    assert icl.matrix_cosine(eff["PV"], c["PV"]) == pytest.approx(1.0)


def test_global_norm_clipping_like_optax():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    assert icl.clip_by_global_norm_(params, 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.0]))
    params[0].grad, params[1].grad = torch.tensor([0.3, 0.0]), torch.tensor([0.4])
    icl.clip_by_global_norm_(params, 1.0)  # below the threshold: unchanged
    torch.testing.assert_close(params[1].grad, torch.tensor([0.4]))


def test_training_is_deterministic_and_learns():
    def train(seed):
        model = icl.LSA(11, seed=seed)
        test = tasks(512, dtype=torch.float32, seed=99)
        history = icl.train_lsa(
            model, steps=200, batch_size=256, lr=1e-2, task_kwargs={"input_range": 2.0},
            seed=seed, eval_every=100,
            evaluate=lambda m: {"loss": float(icl.icl_loss(m.predict(test.tokens),
                                                           test.target))})
        return history

    a, b = train(0), train(0)
    assert a == b
    assert [h["step"] for h in a] == [0, 100, 200]
    assert a[-1]["loss"] < 0.6 * a[0]["loss"]
    assert train(1)[-1]["loss"] != a[-1]["loss"]


def test_presets_and_depth_settings():
    for name in ("smoke", "book", "full"):
        cfg = presets.resolve("05_icl_gd", name)
        assert isinstance(cfg, C.Config)
    assert presets.resolve("05_icl_gd", "book", {"seeds": 1}).seeds == 1
    with pytest.raises(presets.ConfigError):
        presets.resolve("05_icl_gd", "book", {"layers": 3})
    assert C.depth_hparams(2) == {"lr_factor": 1.0, "grad_clip": None, "clip": 0.0}
    assert C.depth_hparams(5) == {"lr_factor": 0.5, "grad_clip": 10.0, "clip": 10.0}


def test_full_code_path_one_step():
    """The `full` preset's runs (1 layer; non-recurrent 2–5 layers with the per-depth settings)
    for one training step on tiny data, results JSON-able, summaries computable."""
    cfg = dataclasses.replace(
        C.PRESETS["full"], seeds=1, deep_seeds=1, steps=1, code_steps=1, deep_steps=1,
        batch_size=16, deep_batch_size=16, eval_tasks=64, line_search_tasks=256, ood_tasks=32,
        eval_every=1, ood_scales=(0.5, 2.0))
    run_specs = C.specs(cfg, 0, "cpu")
    assert [s["layers"] for s in run_specs] == [5, 4, 3, 2, 1, 1]
    assert run_specs[0]["clip"] == 10.0 and run_specs[0]["lr"] == pytest.approx(5e-4)
    results = [C.lsa_run(s) for s in run_specs]
    json.dumps(results)
    for spec, result in zip(run_specs, results):
        assert [h["step"] for h in result["history"]] == [0, 1]
        assert len(result["weights"]) == (1 if spec["shared"] else spec["layers"])
        assert ("gdpp" in result["ref_loss"]) == (spec["layers"] > 1)
        assert len(result["ood"]["lsa"]) == 2
    match = C.weight_match(results[-1], run_specs[-1])
    assert -1 <= match["cos_kq"] <= 1
    groups = C.by_group(run_specs, results)
    assert list(groups)[-2:] == ["1 layer (paper)", "1 layer (code)"]


def test_shared_deep_weight_match_on_the_construction():
    spec = {"dim": 10, "context": 10}
    c = icl.gd_construction(10, 10, 3.0, 0.4)
    result = {"baselines": {"eta": 1.5, "gdpp_eta": 3.0, "gdpp_gamma": 0.4},
              "weights": [{"KQ": c["KQ"].tolist(), "PV": c["PV"].tolist()}]}
    match = C.deep_weight_match(result, spec)
    assert match["cos_kq"] == pytest.approx(1.0) and match["cos_pv"] == pytest.approx(1.0)
    assert match["eta_lsa"] == pytest.approx(3.0) and match["gamma_lsa"] == pytest.approx(0.4)


def test_plateau_check():
    flat = [{"step": s, "test_loss": 1.0 if s == 0 else 0.3} for s in range(0, 5001, 100)]
    p = C.plateau(flat)
    assert p["change"] == pytest.approx(0.0) and p["fallen"] == pytest.approx(0.3)
    assert p["window"] == (4000, 4500, 5000)  # last 10 % against the 10 % before
    falling = [{"step": s, "test_loss": 1.0 - s / 10000} for s in range(0, 2501, 100)]
    p = C.plateau(falling)  # 2,500 steps: windows of 3 evaluations (300 steps)
    assert p["window"] == (1900, 2200, 2500)
    assert p["change"] == pytest.approx(1 - 0.76 / 0.79)
    with pytest.raises(ValueError):
        C.plateau(falling[:1])


def test_baselines_shared_by_seed_replicates_equal_a_fresh_computation():
    """The per-process memo of the GD/GD++ baselines returns exactly what a fresh computation
    gives, for every seed replicate (they depend on the notebook seed only)."""
    cfg = dataclasses.replace(C.PRESETS["smoke"], line_search_tasks=512)
    deep = [s for s in C.specs(dataclasses.replace(cfg, deep_seeds=2), 0, "cpu")
            if s["layers"] == 2]
    assert deep[0]["seed"] != deep[1]["seed"]
    C._baselines.cache_clear()
    first = C.baselines(deep[0])
    assert C.baselines(deep[1]) == first and C._baselines.cache_info().hits == 1
    C._baselines.cache_clear()
    assert C.baselines(deep[1]) == first
    assert {"eta", "gdpp_eta", "gdpp_gamma"} <= set(first)
