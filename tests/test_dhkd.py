"""Chapter 2 (DHKD): distillation losses, the dual-head student, gradient alignment, the
neural-collapse probes, the CIFAR model zoo and the chapter's run functions (incl. `full`)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_vision import fake_cifar100

from lossbook import data, distill, kd_nets, losses, presets, vision
from lossbook.chapters import dhkd as C

LOSSES = ("kd", "bkl", "bkln")


def logits(n=16, classes=7, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, classes, generator=g, dtype=dtype)


# --- reference formulas (written out independently of lossbook.losses) ------------------------

def official_kd(s, t, T):
    """RepDistiller / DHKD `DistillKL`: kl_div(log_softmax(s/T), softmax(t/T), sum)·T²/N."""
    return F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="sum") * T**2 / len(s)


def official_bkl(s, t, T, eps=1e-8):
    """DHKD `BinaryKL`: clamp the sigmoids to [eps, 1 − eps], KLDivLoss on both outcomes."""
    ps = torch.sigmoid(s / T).clamp(eps, 1 - eps)
    pt = torch.sigmoid(t / T).clamp(eps, 1 - eps)
    kl = F.kl_div(torch.log(ps), pt, reduction="none") + \
        F.kl_div(torch.log(1 - ps), 1 - pt, reduction="none")
    return T**2 * kl.sum() / len(s)


def official_bkln(s, t, T, eps=1e-8):
    """DHKD `BinaryKLNorm`: KL(Bern(1/2) ‖ Bern(σ((s − t)/T))) with the same clamp."""
    q = torch.sigmoid((s - t) / T).clamp(eps, 1 - eps)
    half = torch.full_like(q, 0.5)
    kl = F.kl_div(torch.log(q), half, reduction="none") + \
        F.kl_div(torch.log(1 - q), 1 - half, reduction="none")
    return T**2 * kl.sum() / len(s)


def reference64(name, s, t, T):
    """float64 references valid for any finite logits (closed forms)."""
    s, t = s.double(), t.double()
    if name == "kd":
        lt, ls = F.log_softmax(t / T, 1), F.log_softmax(s / T, 1)
        return T**2 * (lt.exp() * (lt - ls)).sum() / len(s)
    if name == "bkl":  # softplus(b) − softplus(a) − σ(a)(b − a), a = t/T, b = s/T
        a, b = t / T, s / T
        return T**2 * (F.softplus(b) - F.softplus(a) - torch.sigmoid(a) * (b - a)).sum() / len(s)
    return T**2 * torch.log(torch.cosh((s - t) / (2 * T))).sum() / len(s)


# --- losses -----------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_matches_the_official_formula(T):
    s, t = logits(seed=1), logits(seed=2)
    torch.testing.assert_close(losses.kd_loss(s, t, T), official_kd(s, t, T))
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="none").sum(1)
    torch.testing.assert_close(losses.kd_loss(s, t, T, reduction="none"), T**2 * kl)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_binary_kl_matches_official_and_bce_identity(T):
    s, t = logits(seed=3), logits(seed=4)
    torch.testing.assert_close(losses.binary_kl_loss(s, t, T), official_bkl(s, t, T))
    p = torch.sigmoid(t / T)
    bce = (F.binary_cross_entropy_with_logits(s / T, p, reduction="none")
           - F.binary_cross_entropy_with_logits(t / T, p, reduction="none"))
    torch.testing.assert_close(losses.binary_kl_loss(s, t, T), T**2 * bce.sum() / len(s))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_binary_kl_norm_is_log_cosh_and_matches_official(T):
    s, t = logits(seed=5), logits(seed=6)
    torch.testing.assert_close(losses.binary_kl_norm_loss(s, t, T), official_bkln(s, t, T))
    log_cosh = torch.log(torch.cosh((s - t) / (2 * T))).sum(1)
    torch.testing.assert_close(losses.binary_kl_norm_loss(s, t, T, reduction="none"),
                               T**2 * log_cosh)


def test_binary_kl_norm_limits():
    """≈ Δ²/8 for small differences, ≈ (T/2)|Δ| − T² log 2 for large ones."""
    T = 2.0
    small = torch.tensor([[1e-3, -2e-3]], dtype=torch.float64)
    torch.testing.assert_close(losses.binary_kl_norm_loss(small, torch.zeros_like(small), T),
                               (small**2 / 8).sum(), rtol=1e-5, atol=0)
    large = torch.tensor([[60.0, -80.0]], dtype=torch.float64)
    expected = (T / 2 * large.abs() - T**2 * math.log(2)).sum()
    torch.testing.assert_close(losses.binary_kl_norm_loss(large, torch.zeros_like(large), T),
                               expected)


def test_softmax_kd_is_blind_to_a_shift_but_binary_kl_is_not():
    """The paper's Fig. 1(a): logits [2,3,4] and [−2,−1,0]."""
    t = torch.tensor([[2.0, 3.0, 4.0]], dtype=torch.float64)
    s = t - 4.0
    assert abs(float(losses.kd_loss(s, t, 4.0))) < 1e-12
    assert float(losses.binary_kl_loss(s, t, 2.0)) > 1.0
    assert float(losses.binary_kl_norm_loss(s, t, 2.0)) > 1.0
    for name in LOSSES:  # every loss vanishes at s = t and is non-negative
        assert abs(float(losses.distill_loss(name, t, t, 2.0))) < 1e-12
        assert float(losses.distill_loss(name, logits(seed=7), logits(seed=8), 2.0)) >= 0


@pytest.mark.parametrize("name", LOSSES)
def test_logit_gradients(name):
    """∂/∂s: T(softmax(s/T) − softmax(t/T))/N, T(σ(s/T) − σ(t/T))/N, (T/2)·tanh((s−t)/2T)/N."""
    T = 3.0
    s, t = logits(seed=9).requires_grad_(True), logits(seed=10)
    grad, = torch.autograd.grad(losses.distill_loss(name, s, t, T), s)
    s = s.detach()
    expected = {"kd": T * (F.softmax(s / T, 1) - F.softmax(t / T, 1)),
                "bkl": T * (torch.sigmoid(s / T) - torch.sigmoid(t / T)),
                "bkln": T / 2 * torch.tanh((s - t) / (2 * T))}[name] / len(s)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("name", LOSSES)
def test_stable_with_saturated_teacher_and_student(name):
    """Logits of ±100 in float32 for both models: finite values and gradients, = float64."""
    g = torch.Generator().manual_seed(0)
    s = (100 * torch.randint(-1, 2, (32, 10), generator=g)).float()
    t = (100 * torch.randint(-1, 2, (32, 10), generator=g)).float()
    s[:, 0], t[:, 0] = 100.0, -100.0  # opposite saturation somewhere in every row
    T = 4.0 if name == "kd" else 2.0
    s32 = s.clone().requires_grad_(True)
    value = losses.distill_loss(name, s32, t, T)
    grad, = torch.autograd.grad(value, s32)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    torch.testing.assert_close(value.double(), reference64(name, s, t, T), rtol=1e-5, atol=1e-4)
    s64 = s.double().requires_grad_(True)
    grad64, = torch.autograd.grad(reference64(name, s64, t, T), s64)
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-5, atol=1e-6)


def test_official_clamp_form_overflows_in_float32():
    """The pitfall our log-sigmoid forms avoid: 1 − 1e-8 rounds to 1 in float32."""
    s = torch.tensor([[100.0, -100.0]])
    t = torch.tensor([[-100.0, 100.0]])
    assert not torch.isfinite(official_bkl(s, t, 2.0))
    assert not torch.isfinite(official_bkln(s, t, 2.0))
    assert torch.isfinite(losses.binary_kl_loss(s, t, 2.0))
    assert torch.isfinite(losses.binary_kl_norm_loss(s, t, 2.0))


def test_unknown_distillation_loss():
    with pytest.raises(ValueError, match="valid: kd, bkl, bkln"):
        losses.distill_loss("dkd", logits(), logits(), 2.0)


# --- the dual-head student --------------------------------------------------------------------

def tiny_student(aux="linear", classes=5, seed=0):
    torch.manual_seed(seed)
    body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU())
    return distill.Student(body, 8, classes, aux)


def test_student_heads_and_inference():
    x = torch.randn(4, 6)
    single = tiny_student("none")
    z, z_aux = single.heads(x)
    assert z_aux is z and torch.equal(single(x), z)
    dual = tiny_student("linear")
    z1, z2 = dual.heads(x)
    assert torch.equal(dual(x), z1) and not torch.allclose(z1, z2)  # inference = CE head
    nonlinear = tiny_student("nonlinear")
    kinds = [type(m) for m in nonlinear.aux]
    assert kinds == [torch.nn.Linear, torch.nn.Dropout, torch.nn.BatchNorm1d, torch.nn.ReLU,
                     torch.nn.Linear]
    assert nonlinear.aux[0].out_features == 200 and nonlinear.aux[1].p == 0.1
    with pytest.raises(ValueError, match="valid: none, linear, nonlinear"):
        tiny_student("bilinear")


def test_each_head_gets_only_its_own_loss():
    model = tiny_student("linear")
    teacher = tiny_student("none", seed=1)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    for gamma, alpha, silent in ((1.0, 0.0, "aux"), (0.0, 1.0, "head")):
        model.zero_grad()
        distill.distill_objective(teacher, loss="bkln", gamma=gamma, alpha=alpha,
                                  T=2.0)(model, x, y).backward()
        quiet = getattr(model, silent)
        assert all(p.grad is None or not p.grad.any() for p in quiet.parameters())
        assert any(p.grad is not None and p.grad.any() for p in model.features.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())  # the teacher is frozen


def test_dhkd_objective_value():
    model, teacher = tiny_student("linear"), tiny_student("none", seed=1)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    z1, z2 = model.heads(x)
    with torch.no_grad():
        t = teacher(x)
    expected = F.cross_entropy(z1, y) + 0.5 * losses.binary_kl_norm_loss(z2, t, 2.0)
    value = distill.distill_objective(teacher, loss="bkln", gamma=1.0, alpha=0.5, T=2.0)(
        model, x, y)
    torch.testing.assert_close(value, expected)
    with pytest.raises(ValueError, match="needs a teacher"):
        distill.distill_objective(None, loss="kd", gamma=1.0, alpha=1.0, T=4.0)


# --- gradient alignment -----------------------------------------------------------------------

def test_projection_of_conflicting_gradients():
    g_ce = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(distill.project_conflicting(g_ce, torch.tensor([-1.0, 1.0])),
                               torch.tensor([0.0, 1.0]))
    agree = torch.tensor([0.5, 2.0])
    assert torch.equal(distill.project_conflicting(g_ce, agree), agree)
    g_ce, g_kd = torch.tensor([2.0, 1.0]), torch.tensor([-3.0, 1.0])
    projected = distill.project_conflicting(g_ce, g_kd)
    assert abs(float(projected @ g_ce)) < 1e-6  # normal to g_CE


def test_aligned_loss_has_the_aligned_gradient():
    model, teacher = tiny_student("none"), tiny_student("none", seed=1)
    x, y = torch.randn(16, 6), torch.randint(0, 5, (16,))
    params = list(model.parameters())
    with torch.no_grad():
        t = teacher(x) * 5
    ce = F.cross_entropy(model(x), y)
    kd = losses.binary_kl_loss(model(x), t, 2.0)
    g_ce, g_kd = distill.flat_grad(ce, params), distill.flat_grad(kd, params)
    assert float(g_ce @ g_kd) < 0  # the case under test: a conflict
    expected = g_ce + g_kd - (g_kd @ g_ce) / (g_ce @ g_ce) * g_ce
    total = distill.aligned_loss(params, ce, kd)
    torch.testing.assert_close(total, (ce + kd).detach())
    torch.testing.assert_close(distill.flat_grad(total, params), expected)
    model.zero_grad()
    distill.distill_objective(teacher, loss="bkl", gamma=1.0, alpha=1.0, T=2.0, ga=True)(
        model, x, y).backward()
    assert all(p.grad is not None for p in model.parameters())


# --- neural-collapse probes -------------------------------------------------------------------

def test_simplex_etf():
    m = distill.simplex_etf(6, dim=9)
    gram = m @ m.T
    torch.testing.assert_close(gram.diagonal(), torch.ones(6, dtype=torch.float64))
    off = gram[~torch.eye(6, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 5))


@pytest.mark.parametrize("loss", LOSSES)
def test_collapse_point_conflict_sign_and_symmetry(loss):
    for ratio, sign in ((0.5, 1.0), (2.0, -1.0)):
        cos = distill.etf_gradient_cosines(8, 6.0 * ratio, 6.0, loss=loss, T=2.0,
                                           sample_dark=0.0)
        assert cos["cos_head"] == pytest.approx(sign, abs=1e-6)
        assert cos["cos_features"] == pytest.approx(sign, abs=1e-6)
    dark = distill.etf_gradient_cosines(8, 12.0, 6.0, loss=loss, T=2.0, sample_dark=1.0)
    assert dark["cos_head"] < dark["cos_features"] < 0  # diluted, not removed


def test_gradient_cosines_match_a_manual_computation():
    model, teacher = tiny_student("linear"), tiny_student("none", seed=1)
    x, y = torch.randn(16, 6), torch.randint(0, 5, (16,))
    t = teacher(x).detach() * 3
    out = distill.gradient_cosines(model, x, y, t, loss="bkl", T=2.0)
    z1, z2 = model.heads(x)
    head, body = model.head_parameters(), model.backbone_parameters()
    ce = F.cross_entropy(z1, y)
    expect_head = F.cosine_similarity(
        distill.flat_grad(ce, head), distill.flat_grad(losses.binary_kl_loss(z1, t, 2.0), head),
        dim=0)
    expect_body = F.cosine_similarity(
        distill.flat_grad(ce, body), distill.flat_grad(losses.binary_kl_loss(z2, t, 2.0), body),
        dim=0)
    assert out["cos_head"] == pytest.approx(float(expect_head), abs=1e-5)
    assert out["cos_backbone"] == pytest.approx(float(expect_body), abs=1e-5)


def test_nc1_vanishes_for_collapsed_features():
    model = distill.Student(torch.nn.Identity(), 4, 4)
    y = torch.arange(4).repeat(5)
    x = torch.eye(4)[y] * 3.0
    assert distill.collapse_metrics(model, x, y, 4)["nc1"] == pytest.approx(0.0, abs=1e-10)
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert distill.collapse_metrics(model, noisy, y, 4)["nc1"] > 1e-3


# --- training helpers -------------------------------------------------------------------------

def test_official_step_decay_phases():
    assert distill.phase_bounds(240, (0.625, 0.75, 0.875)) == [
        (0, 150, 0), (150, 180, 1), (180, 210, 2), (210, 240, 3)]
    assert distill.phase_bounds(10, ()) == [(0, 10, 0)]


def test_memo_teacher_is_exact_and_falls_back():
    teacher = tiny_student("none", seed=3).eval()
    known = torch.randn(50, 6)
    memo = distill.MemoTeacher(teacher, known)
    idx = torch.tensor([7, 3, 49, 3])
    with torch.no_grad():
        torch.testing.assert_close(memo(known[idx]), teacher(known[idx]))
        fresh = torch.randn(3, 6)
        torch.testing.assert_close(memo(fresh), teacher(fresh))


def test_load_or_train_caches_the_weights():
    calls = []

    def train_fn(model):
        calls.append(1)
        with torch.no_grad():
            model.head.weight.fill_(0.25)
        return {"test_acc": 0.5}

    spec = {"kind": "unit-test", "seed": 1}
    a, metrics = distill.load_or_train("teacher", spec, lambda: tiny_student("none"), train_fn)
    b, again = distill.load_or_train("teacher", spec, lambda: tiny_student("none"), train_fn)
    assert calls == [1] and metrics == again == {"test_acc": 0.5}
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)


# --- the CIFAR model zoo ----------------------------------------------------------------------

@pytest.mark.parametrize("name,dim", [("resnet8", 64), ("resnet8x4", 256), ("wrn_16_2", 128)])
def test_zoo_backbones(name, dim):
    net = kd_nets.backbone(name)
    assert net.feature_dim == dim
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_zoo_parameter_counts_match_the_model_zoo():
    """With a 100-class linear head: the sizes the CRD/RepDistiller papers list (millions)."""
    expected = {"resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_40_2": 2.25, "wrn_16_2": 0.70,
                "resnet56": 0.86, "resnet20": 0.28, "resnet110": 1.73, "resnet32": 0.47}
    for name, millions in expected.items():
        net = kd_nets.backbone(name)
        count = sum(p.numel() for p in net.parameters()) + net.feature_dim * 101
        assert count / 1e6 == pytest.approx(millions, abs=0.01), name


def test_zoo_depths_and_errors():
    count = {n: sum(isinstance(m, (kd_nets.BasicBlock, kd_nets.WideBlock))
                    for m in kd_nets.backbone(n).modules())
             for n in ("resnet20", "resnet56", "resnet110", "wrn_16_2", "wrn_40_2")}
    assert count == {"resnet20": 9, "resnet56": 27, "resnet110": 54, "wrn_16_2": 6,
                     "wrn_40_2": 18}
    with pytest.raises(ValueError, match="valid: resnet8"):
        kd_nets.backbone("vgg8")


# --- the chapter ------------------------------------------------------------------------------

def test_specs_cover_the_grid():
    cfg = C.PRESETS["book"]
    specs = C.student_specs(cfg, 0, "cpu")
    per_setting = [len(cfg.methods)] + [len(cfg.other_methods)] * (len(cfg.settings) - 1)
    assert len(specs) == sum(per_setting) * cfg.seeds
    assert set(C.PRESETS["full"].methods) == set(C.METHODS)
    assert set(cfg.other_methods) <= set(cfg.methods)  # every method a claim compares
    dhkd = next(s for s in specs if s["method"] == "dhkd")
    assert (dhkd["loss"], dhkd["aux"], dhkd["gamma"], dhkd["alpha"], dhkd["T"]) == \
        ("bkln", "linear", 1.0, 1.0, 2.0)
    kd = next(s for s in specs if s["method"] == "kd")
    assert (kd["gamma"], kd["alpha"], kd["T"]) == (0.1, 0.9, 4.0)
    assert len({str(s["teacher"]) for s in specs}) == len(cfg.settings)
    with pytest.raises(ValueError, match="unknown method"):
        C.student_specs(dataclasses.replace(cfg, methods=("fitnet",)), 0, "cpu")


def test_student_run_is_deterministic():
    cfg = dataclasses.replace(C.PRESETS["smoke"], settings=("mnist1d",), methods=("dhkd_ga",))
    spec = C.student_specs(cfg, 0, "cpu")[0]
    a, b = C.run(spec), C.run(spec)
    assert a["test_acc"] == b["test_acc"] and 0 <= a["test_acc"] <= 1
    record = a["history"][-1]
    assert record["step"] == cfg.steps and -1 <= record["cos_head"] <= 1
    assert a["aux_test_acc"] is not None
    with pytest.raises(ValueError, match="unknown role"):
        C.run({**spec, "role": "referee"})


def test_full_preset_one_step_on_fabricated_cifar100(tmp_path, monkeypatch):
    """The `full` path (CIFAR-100 archive → zoo teacher → dual-head zoo student with crop/flip,
    gradient alignment, probes) for a couple of steps on CPU."""
    archive = tmp_path / vision.DATASETS["cifar100"].files["archive"].filename
    fake_cifar100(archive)
    monkeypatch.setattr(vision.DATASETS["cifar100"].files["archive"], "md5",
                        vision.file_digest(archive))
    cfg = presets.resolve("02_dhkd", "full", {
        "pairs": ["resnet8:wrn_16_1"], "methods": ["kd", "dhkd_nonlinear", "dhkd_ga"],
        "seeds": 1, "teacher_steps": 2, "steps": 2, "batch_size": 2, "evals": 1,
        "probe_size": 2, "data_dir": str(tmp_path), "download": False})
    assert cfg.settings == ("cifar100",) and cfg.milestones == (0.625, 0.75, 0.875)
    for spec in C.teacher_specs(cfg, 0, "cpu") + C.student_specs(cfg, 0, "cpu"):
        out = C.run(spec)
        assert 0 <= out["test_acc"] <= 1


def test_full_preset_without_data_names_the_download(tmp_path):
    cfg = presets.resolve("02_dhkd", "full", {"data_dir": str(tmp_path), "download": False})
    with pytest.raises(FileNotFoundError, match="cifar-100-binary.tar.gz"):
        C.run(C.teacher_specs(cfg, 0, "cpu")[0])


# --- the official numerics, the UFM, the protocol helpers ------------------------------------

def test_official_binary_kl_equals_the_stable_form_where_finite():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(64, 10, generator=g, dtype=torch.float64) - 0.5) * 30
    t = (torch.rand(64, 10, generator=g, dtype=torch.float64) - 0.5) * 30
    official = distill.binary_kl_official(s, t, 2.0)
    stable = losses.binary_kl_loss(s, t, 2.0)
    assert torch.isfinite(official) and torch.allclose(official, stable, rtol=1e-7)
    # gradients agree too (float32, logits well inside the finite range)
    s32 = s.float().clamp(-20, 20).requires_grad_(True)
    g_off, = torch.autograd.grad(distill.binary_kl_official(s32, t.float(), 2.0), s32)
    s32b = s32.detach().clone().requires_grad_(True)
    g_st, = torch.autograd.grad(losses.binary_kl_loss(s32b, t.float(), 2.0), s32b)
    assert torch.allclose(g_off, g_st, atol=1e-6)
    err, n = C.official_matches_stable(2.0, n=300)
    assert err < 1e-6 and n > 100


def test_official_binary_kl_overflows_in_float32_past_17T():
    T = 2.0
    below = C.bkl_forms_at(33.0, 40.0, T)  # σ(16.5) < 1 in float32
    assert all(np.isfinite(below))
    above = C.bkl_forms_at(34.0, 40.0, T)  # σ(17) rounds to 1: log(1 − σ) = −inf
    assert np.isnan(above[0]) and np.isnan(above[1]) and np.isfinite(above[2:]).all()
    assert np.isinf(C.bkl_forms_at(35.0, 10.0, T)[0])  # teacher not saturated: inf


def _nan_onset(loss: str) -> tuple:
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = torch.arange(64) % 4
    teacher = torch.nn.Linear(8, 4)
    with torch.no_grad():  # a confident teacher: logits up to ≈ 190
        teacher.weight.mul_(100.0)
    model = distill.Student(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU()), 16, 4)
    objective = distill.distill_objective(teacher, loss=loss, gamma=1.0, alpha=1.0, T=2.0)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(300):
        value = objective(model, x, y)
        opt.zero_grad()
        value.backward()
        opt.step()
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return objective.first_nonfinite, finite


def test_nan_onset_is_reproducible_and_only_official():
    first = _nan_onset("bkl_official")
    assert first[0] is not None and not first[1]
    assert _nan_onset("bkl_official") == first  # deterministic
    assert _nan_onset("bkl") == (None, True)  # the log-sigmoid form stays finite


def test_ufm_reaches_neural_collapse():
    y = torch.arange(10).repeat(30)
    fit = distill.ufm_collapse(y, 10, 16, steps=400, lr=0.05, weight_decay=5e-3, seed=0)
    assert fit["history"][-1]["nc1"] < 1e-3 < fit["history"][0]["nc1"]
    assert fit["history"][-1]["train_acc"] == 1.0
    t = torch.randn(len(y), 10, dtype=torch.float64)
    c = distill.ufm_gradient_cosines(fit["h"], fit["w"], y, t, loss="bkl", T=2.0)
    assert -1 <= c["cos_head"] <= 1 and -1 <= c["cos_features"] <= 1
    # the NC1 helper matches collapse_metrics' definition on random features
    h = torch.randn(200, 5, dtype=torch.float64)
    yy = torch.arange(4).repeat(50)
    means = torch.stack([h[yy == c].mean(0) for c in range(4)])
    expected = ((h - means[yy]) ** 2).sum() / 200 / (((means - h.mean(0)) ** 2).sum() / 4)
    assert distill.nc1_trace(h, yy, 4) == pytest.approx(float(expected))


def test_validation_split_is_disjoint_and_alpha_selection_uses_it():
    full = data.Dataset(torch.arange(600.0)[:, None], torch.arange(600) % 3,
                        torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), 3)
    train, x_val, y_val = C._split_val(full, 50, 20)
    assert len(train.y_train) == 150 and len(y_val) == 60
    assert not set(train.x_train.flatten().tolist()) & set(x_val.flatten().tolist())
    assert torch.bincount(y_val).tolist() == [20, 20, 20]
    key = {"data": {"setting": "terminal"}, "pair": "a:b", "method": "dhkd"}
    specs = [{**key, "alpha_factor": f, "alpha": f} for f in (0.3, 1.0, 3.0) for _ in range(2)]
    results = [{"val_acc": v} for v in (0.5, 0.6, 0.7, 0.7, 0.65, 0.7)]
    factors = C.select_alpha(specs, results)
    assert factors == {("terminal", "a:b", "dhkd"): 1.0}
    assert C.alpha_of(factors, "terminal", "a:b", "dhkd") == 1.0
    assert C.alpha_of({("terminal", "a:b", "ce_bkl_1h"): 0.3}, "terminal", "a:b",
                      "ce_bkl_1h_official") == 0.3
    with pytest.raises(ValueError, match="validation split"):
        C.select_alpha(specs[:1], [{"val_acc": None}])


def test_plateau_and_kd_precondition():
    def run(accs):
        return {"test_acc": accs[-1], "train_acc": 1.0,
                "history": [{"step": 100 * (i + 1), "test_acc": a} for i, a in enumerate(accs)]}

    spec = {"data": {"setting": "terminal"}, "pair": "a:b", "method": "ce"}
    flat = C.plateau([spec] * 2, [run([0.3, 0.5, 0.5, 0.505]), run([0.3, 0.5, 0.5, 0.5])],
                     "terminal", "a:b")
    assert flat["ok"] and flat["late_step"] == 300
    rising = C.plateau([spec], [run([0.3, 0.4, 0.45, 0.5])], "terminal", "a:b")
    assert not rising["ok"]
    assert C.kd_beats_ce([0.6, 0.61, 0.62, 0.6, 0.61], [0.5, 0.5, 0.51, 0.5, 0.5])["ok"]
    assert not C.kd_beats_ce([0.5, 0.51, 0.49, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5, 0.5])["ok"]


def test_tuning_and_sweep_specs():
    cfg = C.PRESETS["book"]
    tune = C.tuning_specs(cfg, 0, "cpu")
    assert len(tune) == len(cfg.tuned) * len(cfg.alpha_factors) * cfg.tune_seeds
    claim_seeds = {s["seed"] for s in C.student_specs(cfg, 0, "cpu")}
    assert not claim_seeds & {s["seed"] for s in tune}  # tuning seeds are not claim seeds
    assert all(not s["probes"] for s in tune)
    factors = {("terminal", cfg.pairs[0], "ce_bkl_1h"): 3.0}
    specs = C.student_specs(cfg, 0, "cpu", factors)
    official = next(s for s in specs if s["method"] == "ce_bkl_1h_official")
    assert official["alpha"] == 3.0 * cfg.alpha and official["loss"] == "bkl_official"
    assert official["probe_loss"] == "bkl"
    sweep = C.scale_specs(cfg, 0, "cpu", factors)
    assert {s["teacher_scale"] for s in sweep} == set(cfg.teacher_scales) - {1.0}
    assert len(sweep) == (len(cfg.teacher_scales) - 1) * 2 * cfg.scale_seeds
    assert len(C.ufm_specs(cfg, 0, "cpu")) == cfg.ufm_seeds >= 5
