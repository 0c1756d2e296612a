"""Chapter 6 (LDAM-DRW): the margin family, the class-imbalance helpers, the schedule, and the
`full` code path (ResNet-32 on a fabricated CIFAR-10 archive) for one step per phase on CPU."""

from __future__ import annotations

import dataclasses
import io
import math
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossbook import data, margins, vision
from lossbook.chapters import ldam_drw as C
from lossbook.resnet_cifar import resnet32

# --- LDAM ---------------------------------------------------------------------------------


def official_margins(counts, max_m=0.5):
    """`LDAMLoss.__init__` of kaidic/LDAM-DRW, in numpy."""
    m_list = 1.0 / np.sqrt(np.sqrt(counts))
    return m_list * (max_m / np.max(m_list))


def official_ldam(x, target, m_list, s, weight=None):
    """`LDAMLoss.forward` of kaidic/LDAM-DRW (CPU tensors instead of cuda ones)."""
    index = torch.zeros_like(x, dtype=torch.uint8)
    index.scatter_(1, target.data.view(-1, 1), 1)
    batch_m = torch.matmul(m_list[None, :], index.float().transpose(0, 1)).view((-1, 1))
    output = torch.where(index.bool(), x - batch_m, x)
    return F.cross_entropy(s * output, target, weight=weight)


def test_ldam_margins_formula():
    counts = [5000, 1000, 200, 50]
    deltas = margins.ldam_margins(counts).numpy()
    assert deltas.max() == pytest.approx(0.5) and deltas.argmax() == 3
    assert np.allclose(deltas, 0.5 * (np.array(counts) / 50) ** -0.25)
    assert np.allclose(deltas, official_margins(counts))
    assert np.allclose(margins.ldam_margins(counts, 1.0).numpy(), 2 * deltas)
    assert np.allclose(margins.ldam_margins([7, 7, 7]).numpy(), 0.5)  # balanced: one margin
    with pytest.raises(ValueError, match="at least one"):
        margins.ldam_margins([10, 0])


def test_ldam_reduces_to_cross_entropy():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(64, 7, generator=g), torch.randint(0, 7, (64,), generator=g)
    zero = torch.zeros(7)
    assert torch.allclose(margins.ldam_loss(z, y, zero, s=1.0), F.cross_entropy(z, y))
    assert torch.allclose(margins.ldam_loss(z, y, zero, s=30.0), F.cross_entropy(30 * z, y))
    w = torch.rand(7, generator=g)
    assert torch.allclose(margins.ldam_loss(z, y, zero, s=1.0, weight=w),
                          F.cross_entropy(z, y, weight=w))


def test_ldam_matches_official_forward():
    g = torch.Generator().manual_seed(1)
    counts = [500, 300, 120, 40, 9]
    z = torch.rand(128, 5, generator=g) * 2 - 1  # cosines
    y = torch.randint(0, 5, (128,), generator=g)
    m = torch.as_tensor(official_margins(counts), dtype=torch.float32)
    w = data.effective_number_weights(counts, 0.9999)
    for weight in (None, w):
        ours = margins.ldam_loss(z, y, margins.ldam_margins(counts), s=30.0, weight=weight)
        assert torch.allclose(ours, official_ldam(z, y, m, 30.0, weight), atol=1e-6)


def test_ldam_penalises_rare_classes_more():
    z = torch.zeros(2, 3)
    y = torch.tensor([0, 2])
    per_sample = margins.ldam_loss(z, y, margins.ldam_margins([1000, 100, 10]), reduction="none")
    assert per_sample[1] > per_sample[0] > math.log(3)


def test_additive_margin_moves_only_the_true_logit():
    z = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 1])
    out = margins.additive_margin(z, y, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    diff = z - out
    assert torch.allclose(diff.gather(1, y[:, None]).squeeze(1),
                          torch.tensor([0.1, 0.2, 0.3, 0.4, 0.2]))
    diff.scatter_(1, y[:, None], 0.0)
    assert (diff == 0).all()
    assert torch.allclose(margins.additive_margin(z, y, 0.35), margins.additive_margin(
        z, y, torch.full((4,), 0.35)))
    with pytest.raises(ValueError, match="one value per class"):
        margins.additive_margin(z, y, torch.zeros(3))


def test_additive_angular_margin():
    theta = torch.linspace(0.05, math.pi - 0.05, 50)
    cos = torch.stack([theta.cos(), torch.zeros(50)], 1)
    y = torch.zeros(50, dtype=torch.long)
    assert torch.allclose(margins.additive_angular_margin(cos, y, 0.0), cos, atol=1e-6)
    m = 0.5
    out = margins.additive_angular_margin(cos, y, m)
    valid = theta + m < math.pi
    assert torch.allclose(out[valid, 0], torch.cos(theta[valid] + m), atol=1e-5)
    assert torch.allclose(out[~valid, 0], cos[~valid, 0] - m * math.sin(m), atol=1e-6)
    assert (out[:, 1] == 0).all()
    assert (out[1:, 0] < out[:-1, 0]).all()  # still decreasing in θ past the fallback point


def test_margins_agree_with_the_contrastive_module():
    """Chapter 4 applies AM/AAM to positive-pair cosines; the formulas must be the same."""
    contrastive = pytest.importorskip("lossbook.contrastive")
    g = torch.Generator().manual_seed(2)
    cos = torch.rand(64, 6, generator=g) * 2 - 1
    y = torch.randint(0, 6, (64,), generator=g)
    pos = cos.gather(1, y[:, None]).squeeze(1)
    for m in (0.1, 0.5, 1.2):
        for ours, kind in ((margins.additive_margin, "am"),
                           (margins.additive_angular_margin, "aam")):
            assert torch.allclose(ours(cos, y, m).gather(1, y[:, None]).squeeze(1),
                                  contrastive.positive_logit(pos, m, kind), atol=1e-6)


def test_normed_linear():
    torch.manual_seed(0)
    layer = margins.NormedLinear(16, 5)
    assert torch.allclose(layer.weight.norm(dim=0), torch.ones(5), atol=1e-5)
    x = torch.randn(8, 16) * 10
    out = layer(x)
    cos = F.cosine_similarity(x[:, :, None], layer.weight[None], dim=1)
    assert torch.allclose(out, cos, atol=1e-5)
    assert out.abs().max() <= 1 + 1e-6


# --- class-imbalance helpers and DRW --------------------------------------------------------


def test_effective_number_weights():
    counts = [1000, 100, 10]
    assert torch.allclose(data.effective_number_weights(counts, 0.0), torch.ones(3))
    w = data.effective_number_weights(counts, 0.9999)
    assert w.sum().item() == pytest.approx(3.0)
    raw = np.array([(1 - 0.9999) / (1 - 0.9999 ** n) for n in counts])
    assert np.allclose(w.numpy(), raw / raw.sum() * 3, rtol=1e-6)
    assert (w[1:] > w[:-1]).all()
    inv = data.effective_number_weights(counts, 1 - 1e-12)  # β → 1: inverse frequency
    assert np.allclose(inv.numpy(), (1 / np.array(counts)) / (1 / np.array(counts)).sum() * 3,
                       rtol=1e-3)
    with pytest.raises(ValueError, match="beta"):
        data.effective_number_weights(counts, 1.0)


def test_drw_weights_switch():
    counts = [500, 50, 5]
    for epoch in (0, 79):
        assert torch.allclose(margins.drw_weights(epoch, counts, 80), torch.ones(3))
    for epoch in (80, 99):
        assert torch.allclose(margins.drw_weights(epoch, counts, 80),
                              data.effective_number_weights(counts, 0.9999))
    assert margins.DRW_BETAS == (0.0, 0.9999)


def test_class_subset_and_counts():
    y = torch.arange(10).repeat(30)
    counts = data.long_tail_counts(30, 10, 10)
    idx = data.class_subset_indices(y, counts, seed=3)
    assert data.class_counts(y[idx], 10) == counts
    assert torch.equal(idx, data.class_subset_indices(y, counts, seed=3))
    assert (idx[1:] > idx[:-1]).all()
    with pytest.raises(ValueError, match="requested"):
        data.class_subset_indices(y, [31] + [1] * 9)


def test_class_balanced_sample():
    counts = [900, 90, 10]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    w = data.effective_number_weights(counts, 0.9999)
    idx = data.class_balanced_sample(y, w, 60000, torch.Generator().manual_seed(0))
    freq = np.bincount(y[idx].numpy(), minlength=3) / 60000
    expected = np.array(counts) * w.numpy()
    assert np.allclose(freq, expected / expected.sum(), atol=0.01)


# --- the trade-off --------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [1, 3, 10, 100, 1000])
def test_two_class_optimum_is_quarter_power(ratio):
    share = C.two_class_optimum(50.0 * ratio, 50.0)
    assert share == pytest.approx(1 / (1 + ratio ** 0.25), rel=1e-6)


def test_multiclass_optimum():
    counts = data.long_tail_counts(500, 10, 100)
    assert np.allclose(C.multiclass_optimum(counts), margins.optimal_margins(counts), rtol=1e-5)
    deltas = margins.ldam_margins(counts).numpy()
    opt = margins.optimal_margins(counts)
    assert np.allclose(deltas / deltas.max(), opt / opt.max(), rtol=1e-6)


# --- schedule ---------------------------------------------------------------------------------


def official_lr(epoch, base=0.1):
    """`adjust_learning_rate` of kaidic/LDAM-DRW (0-based epoch)."""
    epoch = epoch + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * 0.0001
    if epoch > 160:
        return base * 0.01
    return base


def test_full_schedule_matches_official():
    spec = {**C.specs(C.PRESETS["full"], 0, "cpu")[0], "method": "ldam_drw"}
    for epoch in range(200):
        assert spec["lr"] * C.lr_factor(epoch, spec) == pytest.approx(official_lr(epoch))
        assert C.reweighted(epoch, spec) == (epoch // 160 == 1)
    ph = C.phases(spec)
    # the last warm-up epoch already runs at the full rate, so it merges with the next phase
    assert [p[:2] for p in ph] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 160), (160, 180),
                                   (180, 200)]
    assert [p[3] for p in ph] == [False] * 5 + [True, True]
    assert all(not p[3] for p in C.phases({**spec, "method": "ldam"}))
    assert all(p[3] for p in C.phases({**spec, "method": "ce_rw"}))


def test_book_preset_scales_the_schedule():
    cfg = C.PRESETS["book"]
    assert cfg.drw_epoch == cfg.milestones[0] == 0.8 * cfg.epochs
    assert cfg.milestones[1] == 0.9 * cfg.epochs and cfg.lr_decay == 0.01
    assert (cfg.beta, cfg.max_margin, cfg.scale) == (0.9999, 0.5, 30.0)
    assert {"ce", "ce_rw", "ce_drw", "ldam", "ldam_drw", "cos", "ldam_uni",
            "ldam_uni_drw"} <= set(cfg.methods)
    assert set(C.PRESETS["smoke"].methods) == set(C.PRESETS["full"].methods) == set(C.METHODS)
    assert cfg.ratios == (10.0, 100.0) and cfg.seeds >= 5
    # book: augmentation and a per-seed class permutation; full: the paper's fixed CIFAR-LT order
    assert (cfg.shift, cfg.noise, cfg.permute_classes) == (4, 0.1, True)
    assert C.PRESETS["full"].permute_classes is False


# --- models and runs ------------------------------------------------------------------------


def test_resnet32():
    torch.manual_seed(0)
    net = resnet32(10)
    params = sum(p.numel() for p in net.parameters())
    assert 0.45e6 < params < 0.47e6  # 0.46 M, as in the official table
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]) == 31
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 10)
    cos_net = resnet32(100, cosine=True).eval()
    out = cos_net(x)
    assert out.shape == (2, 100) and out.abs().max() <= 1 + 1e-5


def test_smoke_run_mnist1d():
    cfg = dataclasses.replace(C.PRESETS["smoke"], methods=("ldam_drw",), ratios=(10.0,))
    (spec,) = C.specs(cfg, 0, "cpu")
    result = C.run(spec)
    assert result["class_counts"] == data.long_tail_counts(100, 10, 10)
    assert len(result["per_class_acc"]) == 10 and len(result["train_margin"]) == 10
    assert result["test_acc"] == pytest.approx(np.mean(result["per_class_acc"]))
    assert [h["epoch"] for h in result["history"]][-1] == cfg.epochs
    assert sorted(result["class_order"]) == list(range(10))
    assert all(0 <= h["train_acc"] <= 1 for h in result["history"])
    assert C.train_acc_at(result, cfg.drw_epoch) == next(
        h["train_acc"] for h in result["history"] if h["epoch"] == cfg.drw_epoch)
    with pytest.raises(ValueError, match="no training-accuracy record"):
        C.train_acc_at(result, 0)


# --- augmentation, class permutation, controls ----------------------------------------------


def test_shift_noise_augmentation():
    x = torch.randn(32, 40, generator=torch.Generator().manual_seed(0))
    # deterministic given the generator's seed
    a = C.shift_noise(x, torch.Generator().manual_seed(5), 4, 0.1)
    b = C.shift_noise(x, torch.Generator().manual_seed(5), 4, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(C.shift_noise(x, torch.Generator(), 0, 0.0), x)
    # shift only: every row is the input moved by some s in [-4, 4], zero-filled
    shifted = C.shift_noise(x, torch.Generator().manual_seed(1), 4, 0.0)
    padded = F.pad(x, (4, 4))
    seen = set()
    for row, orig in zip(shifted, padded):
        matches = [o for o in range(9) if torch.equal(row, orig[o:o + 40])]
        assert matches
        seen.update(matches)
    assert len(seen) > 3  # several offsets drawn
    # noise only: the residual has the stated standard deviation
    noisy = C.shift_noise(torch.zeros(4000, 40), torch.Generator().manual_seed(2), 0, 0.1)
    assert float(noisy.std()) == pytest.approx(0.1, rel=0.02)
    spec = dict(C.specs(C.PRESETS["book"], 0, "cpu")[0])
    assert C.augmentation(spec) is not None
    assert C.augmentation({**spec, "shift": 0, "noise": 0.0}) is None


def test_class_permutation_from_the_seed():
    cfg = dataclasses.replace(C.PRESETS["smoke"], methods=("ce",), ratios=(10.0,), seeds=4)
    specs = C.specs(cfg, 0, "cpu")
    orders = [C.class_order(s, 10) for s in specs]
    assert all(sorted(o) == list(range(10)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4  # each seed its own assignment
    assert orders[0] == C.class_order(specs[0], 10)  # deterministic
    assert C.class_order({**specs[0], "permute_classes": False}, 10) == list(range(10))
    full = C.base_data("mnist1d", cfg.mnist1d_samples, "", False)
    for spec, order in zip(specs[:2], orders):
        d = C.long_tail_data(spec)
        # per-label counts are the long-tail profile, whatever the permutation
        assert data.class_counts(d.y_train, 10) == data.long_tail_counts(100, 10, 10)
        assert len(set(data.class_counts(d.y_test, 10))) == 1  # balanced test set
        # label r holds examples of the original class order[r], in train and test
        for x, y, xs, ys in ((d.x_train, d.y_train, full.x_train, full.y_train),
                             (d.x_test, d.y_test, full.x_test, full.y_test)):
            for i in range(0, len(y), 37):
                j = int(torch.nonzero((xs == x[i]).all(1))[0])
                assert int(ys[j]) == order[int(y[i])]


def test_control_losses():
    counts = data.long_tail_counts(500, 10, 100)
    spec = C.specs(C.PRESETS["book"], 0, "cpu")[0]
    ldam = C.loss_margins({**spec, "method": "ldam"}, counts)
    uniform = C.loss_margins({**spec, "method": "ldam_uni_drw"}, counts)
    assert torch.allclose(ldam, margins.ldam_margins(counts, 0.5))
    assert torch.allclose(uniform, torch.full((10,), float(ldam.mean())))
    assert torch.equal(C.loss_margins({**spec, "method": "cos"}, counts), torch.zeros(10))
    g = torch.Generator().manual_seed(0)
    z, y = torch.rand(64, 10, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g)
    # Cos-CE is cross-entropy of s·cosine; uniform LDAM is CosFace with one margin
    cos = C.logit_loss({**spec, "method": "cos"}, counts, None, "cpu")
    assert torch.allclose(cos(z, y), F.cross_entropy(30 * z, y))
    uni = C.logit_loss({**spec, "method": "ldam_uni"}, counts, None, "cpu")
    shifted = z - float(ldam.mean()) * F.one_hot(y, 10)
    assert torch.allclose(uni(z, y), F.cross_entropy(30 * shifted, y))
    # every loss but plain CE sits on the cosine classifier
    for method, (loss, _) in C.METHODS.items():
        net = C.build_model({**spec, "method": method}, 40, 10)
        assert isinstance(net.head, margins.NormedLinear) == (loss != "ce")


@pytest.mark.parametrize("method", ["ldam_uni_drw", "cos", "ce_drw"])
def test_batched_equals_run_with_augmentation_and_permutation(method, monkeypatch):
    cfg = dataclasses.replace(C.PRESETS["smoke"], methods=(method,), ratios=(10.0,), seeds=2,
                              mnist1d_samples=1000, max_per_class=60, channels=8)
    specs = C.specs(cfg, 0, "cpu")
    assert C.augmentation(specs[0]) is not None
    assert C.class_order(specs[0], 10) != C.class_order(specs[1], 10)
    alone = [C.run(s) for s in specs]

    def no_fallback(spec):
        raise AssertionError("runs fell back to one-by-one training")

    monkeypatch.setattr(C, "run", no_fallback)  # the twin must train the seeds stacked
    together = C.runs(specs)
    for a, b in zip(alone, together):
        assert a["class_order"] == b["class_order"]
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-6)
        assert a["per_class_acc"] == pytest.approx(b["per_class_acc"], abs=1e-6)
        assert a["train_margin"] == pytest.approx(b["train_margin"], rel=1e-4, abs=1e-5)
        assert [h["train_acc"] for h in a["history"]] == pytest.approx(
            [h["train_acc"] for h in b["history"]], abs=1e-6)


def fake_cifar10(path, per_class_train=1, per_class_test=2):
    """A CIFAR-10 binary archive in the official layout, every class present."""
    rng = np.random.default_rng(0)
    members = {}
    for split, names in vision.DATASETS["cifar10"].members.items():
        per = per_class_train if split == "train" else per_class_test
        for name in names:
            labels = np.repeat(np.arange(10, dtype=np.uint8), per)[:, None]
            pixels = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
            members[name] = np.concatenate([labels, pixels], 1).tobytes()
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_full_code_path_on_fabricated_cifar(tmp_path, monkeypatch):
    remote = vision.DATASETS["cifar10"].files["archive"]
    fake_cifar10(tmp_path / remote.filename)
    monkeypatch.setattr(remote, "md5", vision.file_digest(tmp_path / remote.filename))
    cfg = dataclasses.replace(C.PRESETS["full"], tasks=("cifar10",), ratios=(2.0,), epochs=2,
                              drw_epoch=1, data_dir=str(tmp_path), download=False)
    specs = C.specs(cfg, 0, "cpu")
    assert {s["method"] for s in specs} == set(C.METHODS) and specs[0]["model"] == "resnet32"
    expected = data.long_tail_counts(5, 10, 2.0)  # 5 train batches × 1 per class
    # every code path: re-sampling, re-weighting from the start, LDAM + cosine head + DRW
    for spec in (s for s in specs if s["method"] in ("ce_rs", "ce_rw", "ldam_drw")):
        result = C.run(spec)
        assert result["class_counts"] == expected
        assert len(result["per_class_acc"]) == 10
        assert all(math.isfinite(v) for v in result["train_margin"])
        assert len(result["history"]) == 2  # one record per phase (warm-up epochs 1 and 2)
