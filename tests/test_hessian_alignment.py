"""Chapter 3 (Hessian alignment): identities, penalties against slow explicit computations,
environments, the MNIST IDX loader, and the full preset's code path on fabricated data."""

import dataclasses
import gzip
import hashlib
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossbook import domains, mnist, presets
from lossbook import invariance as inv
from lossbook.chapters import hessian_alignment as C
from lossbook.vision import ChecksumError


def head_problem(classes, d=5, n=24, seed=0, dtype=torch.float64):
    return C.random_head_problem(d, classes, n=n, in_dim=4, seed=seed, dtype=dtype)


def flat_loss_fn(model, x, y):
    """The loss as a function of the flattened head parameters (for autograd.functional)."""
    w, b = model.head.weight, model.head.bias
    features = model.body(x).detach()

    def loss(theta):
        weight = theta[: w.numel()].view_as(w)
        bias = theta[w.numel():]
        return inv.nll(features @ weight.t() + bias, y)
    return loss, torch.cat([w.detach().reshape(-1), b.detach()])


# --- identities ------------------------------------------------------------------------------

@pytest.mark.parametrize("classes", [1, 3])
def test_hgp_identity_matches_autograd_hvp(classes):
    model, x, y = head_problem(classes)
    params = list(model.head.parameters())
    loss = inv.nll(model(x), y)
    hg, g = inv.hessian_gradient_product(loss, params)
    fn, theta = flat_loss_fn(model, x, y)
    _, ref = torch.autograd.functional.hvp(fn, theta, g.detach())
    assert torch.allclose(hg, ref, rtol=1e-12, atol=1e-14)
    assert torch.allclose(inv.hessian_vector_product(loss, params, g.detach()), ref,
                          rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("classes", [1, 2, 4])
def test_closed_form_head_hessian_and_gradient(classes):
    model, x, y = head_problem(classes)
    features, logits = model.features_and_logits(x)
    fn, theta = flat_loss_fn(model, x, y)
    ref = torch.autograd.functional.hessian(fn, theta)
    assert torch.allclose(inv.linear_head_hessian(features, logits), ref, atol=1e-14)
    assert torch.allclose(inv.full_hessian(inv.nll(logits, y), list(model.head.parameters())),
                          ref, atol=1e-14)
    g_ref = torch.autograd.grad(fn(theta.requires_grad_()), theta)[0]
    assert torch.allclose(inv.linear_head_gradient(features, logits, y), g_ref, atol=1e-14)


@pytest.mark.parametrize("classes", [1, 3])
def test_per_sample_head_gradients_match_a_loop(classes):
    model, x, y = head_problem(classes)
    features, logits = model.features_and_logits(x)
    params = list(model.head.parameters())
    loop = torch.stack([inv.flat(torch.autograd.grad(inv.nll(logits[i:i + 1], y[i:i + 1]),
                                                     params, retain_graph=True))
                        for i in range(len(y))])
    assert torch.allclose(inv.per_sample_head_gradients(features, logits, y), loop, atol=1e-14)


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_matches_the_official_loop():
    a = torch.tensor([0.5, 2.0, -1.0, 3.0], dtype=torch.float64)
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (a * theta ** 2).sum() + theta.sum() ** 3 * 0  # diagonal Hessian diag(a)
    g = inv.head_gradient(loss, [theta])
    est = inv.hutchinson_diagonal(g, [theta], 3, torch.Generator().manual_seed(0))
    assert torch.allclose(est, a)
    # a full Hessian: batched estimate == the official calc_hessian_diag loop, same probes
    model, x, y = head_problem(3)
    params = list(model.head.parameters())
    g = inv.head_gradient(inv.nll(model(x), y), params)
    batched = inv.hutchinson_diagonal(g, params, 7, torch.Generator().manual_seed(3))
    z = inv.rademacher((7, g.numel()), torch.Generator().manual_seed(3), dtype=g.dtype)
    loop = sum(zs * inv.flat(torch.autograd.grad(g @ zs, params, retain_graph=True))
               for zs in z) / 7
    assert torch.allclose(batched, loop, atol=1e-14)
    # unbiased: many probes approach the exact diagonal
    exact = inv.full_hessian(inv.nll(model(x), y), params).diagonal()
    many = inv.hutchinson_diagonal(g, params, 20000, torch.Generator().manual_seed(1))
    assert (many - exact).norm() / exact.norm() < 0.03


# --- penalties against direct computations -----------------------------------------------------

def envs_problem(classes=1, n_envs=2, seed=0):
    model, x, y = head_problem(classes, n=40, seed=seed)
    chunks = torch.arange(len(y)).chunk(n_envs)
    return model, [(x[c], y[c]) for c in chunks]


def test_irm_penalty_is_squared_scale_derivative():
    model, envs = envs_problem()
    x, y = envs[0]
    z = model(x)
    direct = ((torch.sigmoid(z[:, 0]) - y.double()) * z[:, 0]).mean() ** 2
    assert torch.allclose(inv.irm_penalty(z, y), direct)


def test_vrex_penalty_forms():
    losses = [torch.tensor(0.3), torch.tensor(0.7)]
    assert torch.isclose(inv.vrex_penalty(losses), torch.tensor(0.16))
    three = torch.tensor([0.2, 0.5, 0.9])
    assert torch.isclose(inv.vrex_penalty(list(three)), 9 * three.var(unbiased=False))


def test_fishr_penalty_against_explicit_loops():
    model, envs = envs_problem(classes=3, n_envs=3)
    params = list(model.head.parameters())
    variances = []
    for x, y in envs:
        z = model(x)
        per = [inv.flat(torch.autograd.grad(F.cross_entropy(z[i:i + 1], y[i:i + 1]), params,
                                            retain_graph=True)).detach().numpy()
               for i in range(len(y))]
        variances.append(np.var(np.stack(per), axis=0))  # population variance per parameter
    mean = np.mean(variances, axis=0)
    expected_sum = sum(((v - mean) ** 2).sum() for v in variances)
    expected_mean = np.mean([((v - mean) ** 2).mean() for v in variances])
    ours = [inv.gradient_variance(inv.per_sample_head_gradients(*model.features_and_logits(x), y))
            for x, y in envs]
    assert np.isclose(inv.fishr_penalty(ours, "sum").item(), expected_sum, rtol=1e-10)
    assert np.isclose(inv.fishr_penalty(ours, "mean").item(), expected_mean, rtol=1e-10)


def test_coral_penalty_against_numpy():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(20, 4, generator=g, dtype=torch.float64) * (k + 1) for k in range(3)]
    expected = []
    for a, b in itertools.combinations([f.numpy() for f in feats], 2):
        mean_diff = ((a.mean(0) - b.mean(0)) ** 2).mean()
        cov_diff = ((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2).mean()
        expected.append(mean_diff + cov_diff)
    assert np.isclose(inv.coral_penalty(feats).item(), np.mean(expected), rtol=1e-12)


@pytest.mark.parametrize("protocol", ["cmnist", "domainbed"])
def test_hgp_penalty_against_explicit_hessians(protocol):
    model, envs = envs_problem(classes=1 if protocol == "cmnist" else 3)
    params = list(model.head.parameters())
    cfg = inv.MethodConfig("hgp", protocol, alpha=0.3, beta=2.0)
    terms = inv.penalty_terms(model, envs, cfg, inv.StepState())
    losses = [inv.nll(model(x), y) for x, y in envs]
    mean_loss = torch.stack(losses).mean()

    def hg(loss):
        g = inv.head_gradient(loss, params).detach()
        return inv.full_hessian(loss, params) @ g, g

    (hg0, g0), (hg1, g1), (hgm, gm) = hg(losses[0]), hg(losses[1]), hg(mean_loss)
    alpha, beta, divide = (1.0, 1.0, 1) if protocol == "cmnist" else (0.3, 2.0, 2)
    expected = sum(alpha * (h - hgm).pow(2).sum() + beta * (g - gm).pow(2).sum()
                   for h, g in ((hg0, g0), (hg1, g1))) / divide
    assert torch.allclose(terms["penalty"], expected, rtol=1e-10)


def test_hutchinson_penalty_uses_independent_probe_draws_per_term():
    model, envs = envs_problem(classes=3)
    params = list(model.head.parameters())
    cfg = inv.MethodConfig("hutchinson", "cmnist", probes=5)
    terms = inv.penalty_terms(model, envs, cfg, inv.StepState(generator=torch.Generator()
                                                                  .manual_seed(4)))
    gen = torch.Generator().manual_seed(4)
    losses = [inv.nll(model(x), y) for x, y in envs]
    grads = [inv.head_gradient(loss, params) for loss in losses]
    g_mean = inv.head_gradient(torch.stack(losses).mean(), params)
    diags = [inv.hutchinson_diagonal(g, params, 5, gen) for g in grads]
    d_mean = inv.hutchinson_diagonal(g_mean, params, 5, gen)
    expected = inv.alignment_penalty(diags, d_mean, grads, g_mean)
    assert torch.allclose(terms["penalty"], expected, rtol=1e-12)


@pytest.mark.parametrize("method", inv.METHODS)
def test_every_penalty_reaches_the_feature_extractor(method):
    model, envs = envs_problem(classes=3)
    protocol = "domainbed" if method == "coral" else "cmnist"
    cfg = inv.MethodConfig(method, protocol, probes=3, penalty_weight=10.0)
    out = inv.objective(model, envs, cfg, inv.StepState(step=5,
                                                        generator=torch.Generator()))
    out["loss"].backward()
    body_grad = sum(p.grad.abs().sum() for p in model.body.parameters())
    assert torch.isfinite(out["loss"]) and body_grad > 0
    if method != "erm":
        assert out["penalty"] > 0


def test_penalty_schedule_and_rescaling():
    cfg = inv.MethodConfig("vrex", "cmnist", penalty_weight=100.0, anneal_iters=3)
    assert [inv.step_weight(cfg, t) for t in (0, 2, 3, 9)] == [1.0, 1.0, 100.0, 100.0]
    model, envs = envs_problem()
    state = inv.StepState(step=4)
    out = inv.objective(model, envs, cfg, state)
    terms = inv.penalty_terms(model, envs, cfg, state)
    assert torch.allclose(out["loss"], (terms["nll"] + 100 * terms["penalty"]) / 100)
    fishr = inv.MethodConfig("fishr", "domainbed", penalty_weight=5.0, anneal_iters=3)
    assert [inv.step_weight(fishr, t) for t in (0, 3)] == [0.0, 5.0]
    with pytest.raises(ValueError, match="valid"):
        inv.MethodConfig("sam")


def test_branching_reproduces_an_unbranched_run():
    def make():
        torch.manual_seed(0)
        return inv.cmnist_mlp(6, 8)
    g = torch.Generator().manual_seed(0)
    envs = [(torch.randn(30, 6, generator=g), torch.randint(0, 2, (30,), generator=g))
            for _ in range(2)]
    cfg = inv.MethodConfig("hutchinson", penalty_weight=50.0, anneal_iters=4, l2=1e-3, probes=3)
    direct = inv.Trainer(make(), envs, cfg, lr=1e-2, seed=1)
    direct.run(9)
    prefix = inv.Trainer(make(), envs, dataclasses.replace(cfg, penalty_weight=1.0), lr=1e-2,
                         seed=1)
    prefix.run(4)
    branch = prefix.branch(penalty_weight=50.0)
    branch.run(9)
    other = prefix.branch(penalty_weight=7.0)
    other.run(9)
    for a, b in zip(direct.model.parameters(), branch.model.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(next(other.model.parameters()), next(branch.model.parameters()))
    assert prefix.state.step == 4  # branches leave the prefix untouched


# --- environments ------------------------------------------------------------------------------

def test_colored_environment_construction():
    g = torch.Generator().manual_seed(0)
    n = 20000
    signals = torch.randn(n, 5, generator=g)
    digits = torch.randint(0, 10, (n,), generator=g)
    x, y = domains.make_environment(signals, digits, 0.2, g)
    colour = (x[:, 1].abs().sum(1) > 0).long()
    assert torch.all(x[torch.arange(n), 1 - colour] == 0)
    assert torch.allclose(x[torch.arange(n), colour], signals)
    assert abs((colour == y).float().mean().item() - 0.8) < 0.01
    assert abs((y == (digits < 5).long()).float().mean().item() - 0.75) < 0.01
    gray, _ = domains.make_environment(signals, digits, 0.9, g, grayscale=True)
    assert torch.allclose(gray[:, 0], gray[:, 1])


def test_label_shift_split_matches_the_imbalanced_scripts():
    digits = torch.arange(1000) % 10
    env0, env1 = domains.label_shift_split(digits, 0.97)
    assert len(env0) + len(env1) == 1000 and len(set(env0.tolist()) & set(env1.tolist())) == 0
    assert (digits[env0] < 5).sum() == 485 and (digits[env0] >= 5).sum() == 15
    assert (digits[env1] < 5).sum() == 15


def test_environments_hold_out_and_redraw_per_restart():
    g = torch.Generator().manual_seed(0)
    pool = (torch.randn(100, 3, generator=g), torch.randint(0, 10, (100,), generator=g),
            torch.randn(30, 3, generator=g), torch.randint(0, 10, (30,), generator=g))
    a = domains.colored_environments(*pool, seed=0)
    b = domains.colored_environments(*pool, seed=1)
    assert [len(e[1]) for e in a.train] == [40, 40] and [len(e[1]) for e in a.val] == [10, 10]
    assert a.train[0][0].shape[1:] == (2, 3) and set(a.test) == {"test", "gray"}
    assert not torch.equal(a.train[0][1], b.train[0][1])


# --- MNIST IDX loader -----------------------------------------------------------------------------

def fabricate_mnist(folder, n_train=120, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test).astype(np.uint8)}
    files = {}
    for role, array in arrays.items():
        name = mnist.FILES[role][0]
        path = mnist.write_idx(array, folder / name)
        files[role] = (name, hashlib.md5(path.read_bytes()).hexdigest())
    return arrays, files


def test_idx_parser_round_trip_and_errors(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = mnist.write_idx(images, tmp_path / "x-idx3-ubyte.gz")
    assert np.array_equal(mnist.read_idx(path), images)
    ints = np.array([1, -2, 300], dtype=np.int32)
    assert np.array_equal(mnist.read_idx(mnist.write_idx(ints, tmp_path / "i-idx1")), ints)
    raw = gzip.decompress(path.read_bytes())
    with pytest.raises(ValueError, match="magic"):
        mnist.parse_idx(b"\x01" + raw[1:])
    with pytest.raises(ValueError, match="payload"):
        mnist.parse_idx(raw[:-1])
    with pytest.raises(ValueError, match="type"):
        mnist.parse_idx(raw[:2] + b"\x07" + raw[3:])


def test_load_mnist_checks_and_downloads(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    arrays, files = fabricate_mnist(source)
    monkeypatch.setattr(mnist, "MIRROR", source.as_uri() + "/")
    data = mnist.load_mnist(tmp_path / "root", download_missing=True, files=files)
    assert data["x_train"].shape == (120, 28, 28) and data["x_train"].dtype == torch.uint8
    assert np.array_equal(data["y_test"].numpy(), arrays["test_labels"])
    assert (tmp_path / "root" / "mnist.pt").is_file()
    bad = {**files, "train_labels": (files["train_labels"][0], "0" * 32)}
    with pytest.raises(ChecksumError):
        mnist.load_mnist(tmp_path / "other", download_missing=True, files=bad)
    with pytest.raises(FileNotFoundError, match="download"):
        mnist.load_mnist(tmp_path / "empty", files=files)
    assert set(mnist.FILES) == {"train_images", "train_labels", "test_images", "test_labels"}


# --- the chapter's configurations and runs -------------------------------------------------------

def test_presets_resolve():
    for name in ("smoke", "book", "full", "extended"):
        presets.resolve("03_hessian_alignment", name)
    book = C.PRESETS["book"]
    assert book.penalty_weights[-1] == C.OFFICIAL_WEIGHT and book.probes == 150
    assert C.draw_hparams("hgp", 0) == {"penalty_alpha": 1e-4, "penalty_beta": 5e-3}
    drawn = C.draw_hparams("hutchinson", 3)
    assert 10 <= drawn["penalty_alpha"] <= 1e4 and 1e2 <= drawn["penalty_beta"] <= 1e6


def test_selection_rules():
    history = [{"step": 10, "val": 0.8, "test_val": 0.2, "test": 0.1},
               {"step": 20, "val": 0.9, "test_val": 0.3, "test": 0.2},
               {"step": 30, "val": 0.9, "test_val": 0.6, "test": 0.5},
               {"step": 40, "val": 0.7, "test_val": 0.5, "test": 0.6}]
    collected = {"finals": {"hgp": {C.OFFICIAL_WEIGHT: [history[-1]]},
                            "erm": {0.0: [history[-1]]}},
                 "histories": {"hgp": {C.OFFICIAL_WEIGHT: [history]}, "erm": {0.0: [history]}}}
    records = C.rule_records(collected)
    assert records["hgp"]["official"] == [history[-1]]  # the final model
    assert records["hgp"]["train-domain"] == [history[1]]  # best val, earliest on ties
    assert records["hgp"]["oracle"] == [history[2]]
    assert C.official_weight({1e2: [], C.OFFICIAL_WEIGHT: []}) == C.OFFICIAL_WEIGHT
    assert C.official_weight({0.0: []}) == 0.0
    rho = C.within_run_spearman(history, 20, x="val", y="test")
    assert rho == pytest.approx(-0.866, abs=1e-3)


def test_full_preset_code_path_one_step_on_fabricated_mnist(tmp_path, monkeypatch):
    """The `full` preset's runs (real Colored MNIST, label shift, diversity) for one step."""
    root = tmp_path / "mnist"
    _, files = fabricate_mnist(root, n_train=120)
    monkeypatch.setattr(mnist, "FILES", files)
    cfg = dataclasses.replace(C.PRESETS["full"], data_dir=str(root), download=False, hidden=8,
                              steps=2, anneal_iters=1, probes=2, restarts=1, eval_every=1,
                              domain_samples=60, diversity_steps=1, diversity_channels=4,
                              diversity_batch=8, diversity_eval_every=1, diversity_restarts=1,
                              diversity_probes=2, hparam_draws=1, fishr_anneal=1)
    C.signal_pools.cache_clear()
    groups = C.all_specs(cfg, 0, "cpu")
    assert set(groups) == {"correlation", "label", "diversity"}
    for kind in ("correlation", "label"):
        spec = next(s for s in groups[kind] if s["method"] == "hutchinson")
        result = C.run(spec)
        assert len(result["branches"]) == len(cfg.penalty_weights)
        final = result["branches"][-1]["final"]
        assert final["step"] == 2 and 0 <= final["test"] <= 1 and final["hdist_train"] >= 0
        assert final["hrel_train"] >= 0 and final["hutch_noise"] > 0
        assert np.isfinite(result["branches"][-1]["transfer"]["gap"])
    first = C.environments(groups["correlation"][0])
    assert first.train[0][0].shape[1:] == (2, 14, 14)
    spec = next(s for s in groups["diversity"] if s["method"] == "hgp" and s["draw"] == 1)
    result = C.run(spec)
    assert result["selected"]["step"] == 1 and result["hparams"]["penalty_alpha"] < 1e-2
    C.signal_pools.cache_clear()


def test_smoke_runs_and_summaries():
    cfg = dataclasses.replace(C.PRESETS["smoke"], mnist1d_samples=600, steps=6, anneal_iters=2,
                              eval_every=3, methods=("erm", "hgp", "fishr"))
    groups = C.all_specs(cfg, 0, "cpu")
    results = C.sweep_all(lambda fn, specs, desc: [fn(s) for s in specs], groups)
    collected = C.collect(groups["correlation"], results["correlation"])
    summary = C.summarize(C.rule_records(collected))
    assert set(summary) == {"erm", "hgp", "fishr", "gray"}
    assert summary["hgp"]["official"]["test"][0] == pytest.approx(
        np.mean([r["test"] for r in collected["finals"]["hgp"][max(cfg.penalty_weights)]]))
    assert collected["transfers"]["gray"][0.0] == [None]  # no head transfer for the oracle
    assert collected["transfers"]["hgp"][max(cfg.penalty_weights)][0]["hrel"] > 0
    table = C.diversity_table(groups["diversity"], results["diversity"])
    assert set(table) == set(cfg.diversity_methods)


def test_build_cnn_has_a_linear_head():
    model = C.build_cnn(4)
    assert isinstance(model.head, nn.Linear) and model(torch.zeros(3, 40)).shape == (3, 10)


# --- closed forms used for speed, against the autograd forms ------------------------------------

@pytest.mark.parametrize("classes", [1, 3])
def test_linear_head_hvp_and_closed_hutchinson(classes):
    model, x, y = head_problem(classes)
    features, logits = model.features_and_logits(x)
    params = list(model.head.parameters())
    hess = inv.full_hessian(inv.nll(logits, y), params)
    v = torch.randn(hess.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(inv.linear_head_hvp(features, logits, v), hess @ v, atol=1e-14)
    g = inv.head_gradient(inv.nll(logits, y), params)
    batched = inv.hutchinson_diagonal(g, params, 9, torch.Generator().manual_seed(5))
    z = inv.rademacher((9, g.numel()), torch.Generator().manual_seed(5), dtype=g.dtype)
    assert torch.allclose(inv.hutchinson_diagonal_closed(hess, z), batched, atol=1e-14)


@pytest.mark.parametrize("method", ["hgp", "hutchinson"])
@pytest.mark.parametrize("protocol", ["cmnist", "domainbed"])
@pytest.mark.parametrize("classes", [1, 3])
def test_closed_form_penalties_equal_the_autograd_forms(method, protocol, classes):
    model, envs = envs_problem(classes=classes)
    values, grads = [], []
    for closed in (False, True):
        cfg = inv.MethodConfig(method, protocol, probes=7, alpha=0.3, beta=2.0,
                               closed_form=closed)
        state = inv.StepState(generator=torch.Generator().manual_seed(3))
        penalty = inv.penalty_terms(model, envs, cfg, state)["penalty"]
        values.append(penalty)
        grads.append(inv.flat(torch.autograd.grad(penalty, list(model.parameters()))))
    assert torch.allclose(values[0], values[1], rtol=1e-12)
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-16)


def test_closed_form_training_equals_autograd_training():
    def run(closed):
        torch.manual_seed(0)
        model = inv.cmnist_mlp(6, 8).double()
        g = torch.Generator().manual_seed(0)
        envs = [(torch.randn(30, 6, generator=g, dtype=torch.float64),
                 torch.randint(0, 2, (30,), generator=g)) for _ in range(2)]
        cfg = inv.MethodConfig("hutchinson", penalty_weight=50.0, anneal_iters=2, l2=1e-3,
                               probes=4, closed_form=closed)
        inv.Trainer(model, envs, cfg, lr=1e-2, seed=1).run(6)
        return inv.flat([p.detach() for p in model.parameters()])
    assert torch.allclose(run(False), run(True), rtol=1e-9, atol=1e-12)


def test_expected_hutchinson_penalty_by_enumeration():
    """E over every Rademacher probe triple (S = 1, P = 3) equals signal + noise exactly."""
    g = torch.Generator().manual_seed(0)
    hessians = []
    for _ in range(2):
        a = torch.randn(3, 3, generator=g, dtype=torch.float64)
        hessians.append(a @ a.t())
    h_mean = torch.stack(hessians).mean(0)
    signs = [torch.tensor(v, dtype=torch.float64)[None]
             for v in itertools.product((-1.0, 1.0), repeat=3)]
    total = 0.0
    for z0, z1, zm in itertools.product(signs, repeat=3):
        d_mean = inv.hutchinson_diagonal_closed(h_mean, zm)
        total += sum((inv.hutchinson_diagonal_closed(h, z) - d_mean).pow(2).sum().item()
                     for h, z in zip(hessians, (z0, z1)))
    signal, noise = C.hutchinson_expected_penalty(hessians, probes=1)
    assert total / 8 ** 3 == pytest.approx(signal + noise, rel=1e-12)
    assert C.off_diagonal_energy(torch.eye(3)) == 0.0
    check = C.hutchinson_bias_check(5, 300, d=4, n=32)
    assert abs(check["mc_mean"] - check["exact"]) < 4 * check["mc_se"]


def test_fit_logistic_head_is_the_regularised_optimum():
    g = torch.Generator().manual_seed(0)
    phi = torch.cat([torch.randn(200, 4, generator=g, dtype=torch.float64),
                     torch.ones(200, 1, dtype=torch.float64)], 1)
    y = (phi[:, 0] + 0.5 * torch.randn(200, generator=g, dtype=torch.float64) > 0).long()
    theta = C.fit_logistic_head(phi, y, 1e-3).requires_grad_()
    loss = (F.binary_cross_entropy_with_logits(phi @ theta, y.double())
            + 1e-3 * theta.pow(2).sum())
    (grad,) = torch.autograd.grad(loss, theta)
    assert grad.norm() < 1e-9


def test_fixed_feature_transfer_is_zero_without_shift():
    torch.manual_seed(0)
    model = inv.cmnist_mlp(6, 8).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (100,), generator=g)
    envs = domains.Environments([(x[:50], y[:50]), (x[50:], y[50:])], [],
                                {"test": (x, y)}, (0.1, 0.2))
    out = C.fixed_feature_transfer(model, envs, 1e-3)  # source = target: no gap, no distance
    assert abs(out["gap"]) < 1e-9 and out["hrel"] < 1e-9
