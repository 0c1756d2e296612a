"""Chapter 4 (additive margins for contrastive SSL speaker verification): losses against
pytorch-metric-learning and the official construction, metrics against the official evaluation,
a brute-force sweep and Gaussian closed forms, the log-mel front end against librosa, the VoxCeleb
reader on fabricated WAV files, and one step of the `full` code path."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from scipy.io import wavfile

from lossbook import audio, contrastive, speaker, verification
from lossbook.chapters import am_ssl_sv as C


def views(n=6, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(n, d, generator=g, dtype=torch.float64))


# --- losses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [5.0, 30.0])
def test_snt_xent_equals_pml_ntxent(scale):
    from pytorch_metric_learning.losses import NTXentLoss

    z1, z2 = views()
    n = len(z1)
    ref = NTXentLoss(temperature=1 / scale)(torch.cat([z1, z2]), torch.arange(n).repeat(2))
    assert contrastive.snt_xent(z1, z2, scale).item() == pytest.approx(ref.item(), rel=1e-12)


def pml_margin_loss(kind, margin, scale, num_classes, dim):
    """CosFace (AM) or ArcFace (AAM) of pytorch-metric-learning; ArcFace's margin is in degrees."""
    from pytorch_metric_learning.losses import ArcFaceLoss, CosFaceLoss

    if kind == "am":
        return CosFaceLoss(num_classes=num_classes, embedding_size=dim, margin=margin,
                           scale=scale)
    return ArcFaceLoss(num_classes=num_classes, embedding_size=dim, margin=math.degrees(margin),
                       scale=scale)


@pytest.mark.parametrize("kind", ["am", "aam"])
@pytest.mark.parametrize("margin, scale", [(0.1, 5.0), (0.4, 5.0), (0.2, 30.0)])
def test_nt_xent_with_margin_equals_pml(kind, margin, scale):
    z1, z2 = views()
    n, d = z1.shape
    ref = pml_margin_loss(kind, margin, scale, n, d).double()
    ref.W.data = F.normalize(z2, dim=1).T.clone()  # class weights = the second views
    expected = ref(z1, torch.arange(n)).item()
    assert contrastive.nt_xent(z1, z2, scale, margin, kind).item() == pytest.approx(expected,
                                                                                     rel=1e-10)


@pytest.mark.parametrize("kind, margin", [("am", 0.3), ("aam", 0.1)])
def test_snt_xent_with_margin_equals_pml_row_by_row(kind, margin):
    """Each of the 2N anchors is a CosFace/ArcFace problem whose classes are the other 2N − 1
    views; SNT-Xent-AM/AAM is their mean."""
    z1, z2 = views(n=5)
    z = torch.cat([z1, z2])
    n2, d = z.shape
    total = 0.0
    for a in range(n2):
        others = [k for k in range(n2) if k != a]
        target = others.index((a + n2 // 2) % n2)
        ref = pml_margin_loss(kind, margin, 5.0, n2 - 1, d).double()
        ref.W.data = F.normalize(z[others], dim=1).T.clone()
        total += ref(z[a:a + 1], torch.tensor([target])).item()
    ours = contrastive.snt_xent(z1, z2, 5.0, margin, kind).item()
    assert ours == pytest.approx(total / n2, rel=1e-10)


def official_loss(z1, z2, symmetric, scale, margin, kind):
    """Transcription of sslsv @97915a6 `losses/Custom.py` (BaseLoss._determine_logits, SNTXent,
    NTXent, SNTXentAM, SNTXentAAM): [pos | neg] logits and a soft-label cross-entropy."""
    Z = torch.stack([z1, z2], 1)  # (N, V, D)
    A, B = (Z, Z) if symmetric else (Z[:, 0:1], Z[:, 1:2])
    discard_diag = symmetric
    N, V_A, D = A.size()
    _, V_B, _ = B.size()
    A = F.normalize(A.transpose(0, 1).reshape(V_A * N, D), p=2, dim=-1)
    B = F.normalize(B.transpose(0, 1).reshape(V_B * N, D), p=2, dim=-1)
    logits = A @ B.T
    labels = (torch.arange(N).unsqueeze(0) == torch.arange(N).unsqueeze(1)).repeat(V_A, V_B)
    if discard_diag:
        mask = torch.eye(V_A * N, dtype=torch.bool)
        labels = labels[~mask].view(V_A * N, -1)
        logits = logits[~mask].view(V_A * N, -1)
    pos = logits[labels].view(V_A * N, -1)
    neg = logits[~labels].view(V_A * N, -1)
    if kind == "am":
        pos = pos - margin
    elif kind == "aam":
        sine = torch.sqrt((1.0 - pos * pos).clamp(0, 1))
        phi = pos * math.cos(margin) - sine * math.sin(margin)
        th, mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
        pos = torch.where((pos - th) > 0, phi, pos - mm)
    out = scale * torch.cat([pos, neg], 1)
    target = torch.zeros_like(out)
    target[:, :pos.size(-1)] = 1.0
    return F.cross_entropy(out, target)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("kind, margin", [("none", 0.0), ("am", 0.2), ("aam", 0.1),
                                          ("aam", 0.3)])
def test_loss_equals_official_construction(symmetric, kind, margin):
    z1, z2 = views(n=7, seed=3)
    ours = contrastive.margin_contrastive_loss(z1, z2, symmetric=symmetric, scale=5.0,
                                               margin=margin, kind=kind)
    assert ours.item() == pytest.approx(official_loss(z1, z2, symmetric, 5.0, margin, kind).item(),
                                        rel=1e-12)


@pytest.mark.parametrize("m", [0.05, 0.2, 0.5, 1.0])
def test_aam_transform_fallback_is_monotonic(m):
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    psi = contrastive.positive_logit(torch.cos(theta), m, "aam")
    inside = theta < math.pi - m - 1e-9
    assert torch.allclose(psi[inside], torch.cos(theta[inside] + m), atol=1e-12)
    assert torch.allclose(psi[~inside], torch.cos(theta[~inside]) - m * math.sin(m), atol=1e-12)
    assert (psi.diff() <= 1e-12).all()  # non-increasing in θ
    # the linear fallback meets cos(θ + m) = −1 at θ = π − m only up to a jump of
    # 1 − cos m − m·sin m ≈ m²/2 (downwards, so monotonicity is kept)
    jump = psi.diff().min().item()
    assert jump == pytest.approx(-(math.cos(m) + m * math.sin(m) - 1), abs=2 * math.pi / 20000)
    am = contrastive.positive_logit(torch.cos(theta), m, "am")
    assert torch.allclose(am, torch.cos(theta) - m)


def test_learnable_margin_gets_a_gradient_that_shrinks_it():
    z1, z2 = views()
    for kind in ("am", "aam"):
        loss_fn = contrastive.MarginContrastiveLoss(kind=kind, margin=0.1, learnable=True)
        loss_fn(z1.float(), z2.float()).backward()
        assert loss_fn.margin.grad is not None and loss_fn.margin.grad.item() > 0
    fixed = contrastive.MarginContrastiveLoss(kind="am", margin=0.1)
    assert not list(fixed.parameters())


@pytest.mark.parametrize("symmetric", [False, True])
def test_positive_probability_is_the_loss_and_am_only_reweights_anchors(symmetric):
    z1, z2 = views(n=6, seed=5)
    kw = dict(symmetric=symmetric, scale=5.0)
    p = contrastive.positive_probability(z1, z2, margin=0.3, kind="am", **kw)
    loss = contrastive.margin_contrastive_loss(z1, z2, margin=0.3, kind="am", **kw)
    assert (-p.log()).mean().item() == pytest.approx(loss.item(), rel=1e-12)

    def cosine_grad(margin):
        cosine, target, excluded = contrastive.contrastive_logits(z1, z2, symmetric)
        cosine = cosine.detach().requires_grad_(True)
        pos = contrastive.positive_logit(cosine.gather(1, target[:, None]), margin, "am")
        logits = (cosine.scatter(1, target[:, None], pos) * 5.0).masked_fill(excluded,
                                                                             float("-inf"))
        torch.nn.functional.cross_entropy(logits, target, reduction="sum").backward()
        return cosine.grad

    g0, g1 = cosine_grad(0.0), cosine_grad(0.3)
    p0 = contrastive.positive_probability(z1, z2, **kw)
    ratio = ((1 - p) / (1 - p0))[:, None]  # the same factor for every cell of an anchor's row
    assert torch.allclose(g1, ratio * g0, atol=1e-12)
    assert (ratio > 1).all()


@pytest.mark.parametrize("symmetric", [False, True])
def test_pair_counts_match_the_logit_masks(symmetric):
    n = 9
    cosine, target, excluded = contrastive.contrastive_logits(*views(n=n), symmetric=symmetric)
    counts = contrastive.pair_counts(n, symmetric)
    assert cosine.shape[0] == counts["anchors"] == len(target)
    negatives = (~excluded).sum().item() - len(target)
    assert negatives == counts["negatives"]
    assert negatives // len(target) == counts["negatives_per_anchor"]


def test_unknown_margin_kind_is_rejected():
    with pytest.raises(ValueError, match="valid: none, am, aam"):
        contrastive.MarginContrastiveLoss(kind="sphere")


# --- verification metrics ----------------------------------------------------------------------

def official_metrics(scores, labels):
    """Transcription of sslsv @97915a6 `utils/evaluate.py` (sklearn roc_curve, compute_eer,
    compute_min_dcf)."""
    from sklearn.metrics import roc_curve

    fprs, tprs, _ = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    fnrs = 1 - tprs
    idx = np.nanargmin(np.abs(fnrs - fprs))
    eer = max(fprs[idx], fnrs[idx]) * 100
    c_det = [1 * fnrs[i] * 0.01 + 1 * fprs[i] * (1 - 0.01) for i in range(len(fnrs))]
    return eer, min(c_det) / min(0.01, 0.99)


@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_the_official_evaluation(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    labels = rng.random(n) < 0.3
    scores = np.round(rng.normal(labels * 1.3, 1.0), 2)  # rounding creates ties
    eer, dcf = official_metrics(scores, labels.astype(int))
    assert verification.eer(scores, labels) == pytest.approx(eer, abs=1e-12)
    assert verification.min_dcf(scores, labels) == pytest.approx(dcf, abs=1e-12)


def test_operating_points_equal_a_brute_force_threshold_sweep():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 12, 200).astype(float)
    labels = rng.random(200) < 0.5
    fpr, fnr, thresholds = verification.operating_points(scores, labels)
    for t, a, b in zip(thresholds, fpr, fnr):
        accept = scores >= t
        assert a == pytest.approx((accept & ~labels).sum() / (~labels).sum())
        assert b == pytest.approx((~accept & labels).sum() / labels.sum())
    assert len(thresholds) == len(np.unique(scores)) + 1


@pytest.mark.parametrize("d", [0.5, 1.5, 3.0])
def test_metrics_match_gaussian_closed_forms(d):
    rng = np.random.default_rng(0)
    n = 200000
    scores = np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)]
    labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    assert verification.eer(scores, labels) == pytest.approx(verification.gaussian_eer(d),
                                                             abs=0.3)
    assert verification.min_dcf(scores, labels) == pytest.approx(
        verification.gaussian_min_dcf(d), abs=0.03)


def test_gaussian_min_dcf_is_the_minimum_over_thresholds():
    for d in (0.3, 1.0, 2.0, 4.0):
        t = np.linspace(-10, 15, 200001)
        cost = 0.01 * stats.norm.cdf(t - d) + 0.99 * stats.norm.sf(t)
        assert verification.gaussian_min_dcf(d) == pytest.approx(cost.min() / 0.01, abs=1e-6)
    assert verification.gaussian_min_dcf(0.0) == pytest.approx(1.0)
    assert verification.gaussian_eer(0.0) == pytest.approx(50.0)


def test_metrics_reject_degenerate_input_and_perfect_separation():
    with pytest.raises(ValueError, match="target and one non-target"):
        verification.eer([0.1, 0.2], [1, 1])
    assert verification.eer([0.9, 0.8, 0.1], [1, 1, 0]) == 0.0
    assert verification.min_dcf([0.9, 0.8, 0.1], [1, 1, 0]) == 0.0


def test_trials_and_cosine_scores():
    ids = np.repeat(np.arange(5), 4)
    trials = verification.make_trials(ids, num_nontarget=30, seed=0)
    target, pairs = trials[:, 0] == 1, trials[:, 1:]
    assert target.sum() == 5 * 6  # every same-identity pair
    assert (~target).sum() == 30
    assert (ids[pairs[:, 0]] == ids[pairs[:, 1]]).tolist() == target.tolist()
    e = torch.randn(20, 8)
    s = verification.cosine_scores(e, trials)
    i, j = trials[0, 1], trials[0, 2]
    assert s[0] == pytest.approx(F.cosine_similarity(e[i:i + 1], e[j:j + 1]).item(), abs=1e-6)


# --- log-mel front end -------------------------------------------------------------------------

def test_mel_filterbank_equals_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, htk=True, norm=None)
    ours = audio.mel_filterbank(257, 40, 16000).numpy().T
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_log_mel_equals_librosa_on_the_same_signal():
    librosa = pytest.importorskip("librosa")
    sr = 16000
    t = np.arange(sr) / sr
    rng = np.random.default_rng(0)
    x = (0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.05 * rng.normal(size=sr))
    x = x.astype(np.float32)
    ref = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=512, hop_length=160, win_length=400,
                                         window="hamming", center=True, pad_mode="reflect",
                                         power=2.0, n_mels=40, htk=True, norm=None)
    ours = audio.mel_spectrogram(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == ref.shape == (40, 101)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-4 * ref.max())
    np.testing.assert_allclose(np.log(ours + 1e-6), np.log(ref + 1e-6), atol=2e-3)


def test_pre_emphasis_and_frontend_shapes():
    x = torch.randn(2, 3200)
    y = audio.pre_emphasis(x)
    assert torch.allclose(y[:, 1:], x[:, 1:] - 0.97 * x[:, :-1])
    assert torch.allclose(y[:, 0], x[:, 0] - 0.97 * x[:, 1])  # reflect padding
    z = audio.LogMelFrontend()(x)
    assert z.shape == (2, 40, 21)
    assert torch.allclose(z.mean(-1), torch.zeros(2, 40), atol=1e-4)  # instance-normalised


# --- VoxCeleb layout, reader and augmentation ----------------------------------------------------

def write_wav(path: Path, seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = (rng.normal(size=int(seconds * sr)) * 3000).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, sr, samples)
    return samples


@pytest.fixture
def voxceleb_root(tmp_path):
    """A tiny VoxCeleb tree: 2 training and 2 test speakers, the official trial-list format,
    MUSAN pieces and simulated RIRs."""
    root = tmp_path / "data"
    k = 0
    for spk in ("id10001", "id10002", "id10270", "id10271"):
        for video in ("1zcIwhmdeo4", "7w0IBEWc9Qw"):
            write_wav(root / "voxceleb1" / spk / video / "00001.wav", 0.5 + 0.1 * k, seed=k)
            k += 1
    (root / "voxceleb1_test_O").write_text(
        "1 id10270/1zcIwhmdeo4/00001.wav id10270/7w0IBEWc9Qw/00001.wav\n"
        "0 id10270/1zcIwhmdeo4/00001.wav id10271/1zcIwhmdeo4/00001.wav\n"
        "1 id10271/1zcIwhmdeo4/00001.wav id10271/7w0IBEWc9Qw/00001.wav\n"
        "0 id10271/7w0IBEWc9Qw/00001.wav id10270/7w0IBEWc9Qw/00001.wav\n")
    for i, cat in enumerate(("music", "speech", "noise")):
        write_wav(root / "musan_split" / cat / "src" / f"{cat}-0001_00000.wav", 0.3, 100 + i)
    rir = np.zeros(800, np.int16)
    rir[[0, 50, 300]] = [20000, 8000, 3000]
    (root / "simulated_rirs" / "smallroom" / "Room001").mkdir(parents=True)
    wavfile.write(root / "simulated_rirs" / "smallroom" / "Room001" / "Room001-00001.wav",
                  16000, rir)
    return root


def test_reader_lists_training_speakers_and_reads_wavs(voxceleb_root):
    files = audio.train_list(voxceleb_root)
    assert {s for s, _ in files} == {"id10001", "id10002"}  # trial speakers excluded
    assert files[0] == ("id10001", "voxceleb1/id10001/1zcIwhmdeo4/00001.wav")
    samples, rate = audio.read_wav(voxceleb_root / files[0][1])
    assert rate == 16000 and samples.dtype == np.int16 and len(samples) == 8000
    assert audio.to_float(np.array([-32768, 16384], np.int16)).tolist() == [-1.0, 0.5]
    trials = audio.read_trials(voxceleb_root / "voxceleb1_test_O")
    assert trials[0] == (1, "id10270/1zcIwhmdeo4/00001.wav", "id10270/7w0IBEWc9Qw/00001.wav")
    (voxceleb_root / "voxceleb1_train").write_text("id10002 voxceleb1/id10002/x/00001.wav\n")
    assert audio.train_list(voxceleb_root) == [("id10002", "voxceleb1/id10002/x/00001.wav")]


def test_segments_frames_and_augmentation(voxceleb_root):
    x = audio.load_training_audio(voxceleb_root, [f for _, f in audio.train_list(voxceleb_root)],
                                  12000)  # longer than some files: wrap-padded
    assert x.shape == (4, 12000) and x.dtype == torch.int16
    frames = audio.eval_frames(np.arange(10000), frame_length=3000, num_frames=6)
    assert frames.shape == (6, 3000) and frames[0, 0] == 0 and frames[-1, -1] == 9999
    g = torch.Generator().manual_seed(0)
    signal = torch.arange(12000.0).repeat(64, 1)
    pairs = audio.sample_frame_pairs(signal, 4000, g)
    assert pairs.shape == (64, 2, 4000)
    assert (pairs[:, 0, -1] < pairs[:, 1, 0]).all()  # frame 1 ends before frame 2 starts
    assert (pairs[:, 1, -1] <= 11999).all()
    musan = {c: audio.load_bank(voxceleb_root / "musan_split", f"{c}/*/*.wav", 4000, 10)
             for c in audio.MUSAN_SNR}
    rirs = audio.load_bank(voxceleb_root / "simulated_rirs", "*/*/*.wav", 1000, 10, wrap=False)
    assert rirs.shape == (1, 1000) and rirs[0, 900:].abs().sum() == 0
    out = audio.WaveAugment(musan, rirs)(torch.randn(8, 4000), g)
    assert out.shape == (8, 4000) and torch.isfinite(out).all()
    a, b = np.random.default_rng(0).normal(size=(2, 300))
    k = np.random.default_rng(1).normal(size=(1, 40))
    conv = audio.fft_convolve(torch.tensor(a[None]), torch.tensor(k))
    np.testing.assert_allclose(conv[0].numpy(), np.convolve(a, k[0])[:300], atol=1e-10)


def tiny_full_spec(root, **kw):
    cfg = C.PRESETS["full"]
    spec = C.make_spec(cfg, "snt-xent-aam", 5.0, 0.1, 0, "cpu")
    spec.update(data_dir=str(root), epochs=1, batch_size=2, base_dim=8, encoder_dim=16,
                frame_length=1600, train_samples=4000, eval_frames=2, eval_every=1, **kw)
    return spec


def test_full_code_path_runs_one_step_on_fabricated_voxceleb(voxceleb_root):
    result = C.ssl_run(tiny_full_spec(voxceleb_root))
    assert not result["diverged"]
    assert 0 <= result["eer"] <= 100 and result["trials"] == [2, 2]
    assert len(result["history"]) == 1


def test_full_code_path_needs_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="not freely"):
        C.ssl_run(tiny_full_spec(tmp_path / "missing"))


def test_thin_resnet34_shapes_and_official_size():
    enc = speaker.ThinResNet34()  # official defaults: base 16, 512-d, (3, 4, 6, 3) SE blocks
    assert sum(isinstance(m, speaker.SEBlock) for m in enc.modules()) == 16
    assert enc.fc.in_features == 40 // 8 * 16 * 8 and enc.fc.out_features == 512
    model = speaker.SSLModel(speaker.ThinResNet34(encoder_dim=16, base_dim=8))
    x = torch.randn(3, 3200)
    assert model(x).shape == (3, 16) and model.project(x).shape == (3, 8)


# --- the toy task and the chapter --------------------------------------------------------------

def test_toy_run_is_paired_and_reports_metrics():
    cfg = C.PRESETS["smoke"]
    spec = C.make_spec(cfg, "snt-xent-am", 5.0, 0.2, 0, "cpu")
    spec.update(train_ids=8, test_ids=6, utterances=4, nontarget_trials=100, batch_size=8,
                epochs=1)
    first, second = C.ssl_run(spec), C.ssl_run(spec)
    assert first["eer"] == second["eer"]  # deterministic given the seed
    assert set(first) >= {"eer", "min_dcf", "gap", "det_fnr", "hist_target", "history", "eer0",
                          "min_dcf0", "p_pos_max", "pos_cos_epochs", "pos_cos_max_last"}
    # the floor is the same initialisation before training
    assert 0 <= first["eer0"] <= 100 and 0 <= first["min_dcf0"] <= 1
    assert 0 < first["p_pos_mean"] <= first["p_pos_max"] < 1
    assert len(first["pos_cos_epochs"]) == 1
    assert first["trials"] == [6 * 6, 100]


def test_toy_identities_are_unseen_and_views_differ():
    data = C.toy_speakers(4, 3, 5, 0, 0.25)
    assert data.x_train.shape == (20, 40) and data.x_test.shape == (15, 40)
    # different template seeds: no test utterance is a training utterance
    assert torch.cdist(data.x_test, data.x_train).min() > 0
    g = torch.Generator().manual_seed(0)
    v = C.toy_views(data.x_train, g, 4, 0.1, 0.2, 0.2)
    assert v.shape == (20, 2, 40) and not torch.allclose(v[:, 0], v[:, 1])


def test_divergence_is_caught_and_reported():
    objective = C.ssl_objective(lambda a, b: torch.tensor(float("nan")))
    model = speaker.SSLModel(speaker.CNN1DEncoder(4, 8))
    with pytest.raises(C.Diverged):
        objective(model, torch.randn(4, 2, 40), None)


def test_specs_pair_seeds_across_losses():
    cfg = C.PRESETS["book"]
    specs = C.specs(cfg, 0, "cpu")
    groups = {}
    for s in specs:
        groups.setdefault(C.setting_key(s), []).append(s["seed"])
    sweep_only = set(C.sweep_settings(cfg)) - set(C.comparison_settings(cfg, sweep=False))
    assert sweep_only == {("snt-xent", 10.0, 0.0), ("snt-xent-am", 10.0, cfg.sweep_margin)}
    # every claim's setting runs all seeds; the sweep-only settings (no claim) the first few
    assert all(seeds == list(range(min(cfg.sweep_seeds, cfg.seeds) if key in sweep_only
                                   else cfg.seeds)) for key, seeds in groups.items())
    assert cfg.seeds >= 5 and len(groups[("snt-xent", 10.0, 0.0)]) < cfg.seeds
    assert ("snt-xent-aam", 5.0, 0.3) in groups and ("snt-xent-am", 30.0, 0.2) in groups
    # the s sweep: SNT-Xent and AM at the same margin at every scale
    assert all(("snt-xent", s, 0.0) in groups and ("snt-xent-am", s, cfg.sweep_margin) in groups
               for s in (5.0, 10.0, 30.0))
    assert ("nt-xent", 10.0, 0.0) not in groups and ("nt-xent", 30.0, 0.0) in groups
    assert C.calibration_specs(cfg, 0, "cpu")[0]["loss"] == "nt-xent"
    # the comparison runs share their first seed with the calibration at the preset's level
    assert C.make_spec(cfg, "nt-xent", 5.0, 0.0, 0, "cpu") in C.calibration_specs(cfg, 0, "cpu")


# --- the bound on the positive-pair probability ------------------------------------------------

def simplex(n: int) -> torch.Tensor:
    """n unit vectors of a regular simplex (pairwise cosine −1/(n − 1))."""
    e = torch.eye(n, dtype=torch.float64)
    return F.normalize(e - e.mean(0), dim=1)


@pytest.mark.parametrize("scale,margin", [(5.0, 0.0), (5.0, 0.2), (10.0, 0.0), (30.0, 0.4)])
def test_positive_probability_bound_is_attained_by_the_simplex(scale, margin):
    n = 256
    z = simplex(n)
    cos = z @ z.T
    assert torch.allclose(cos[~torch.eye(n, dtype=bool)], torch.tensor(-1 / (n - 1),
                                                                        dtype=torch.float64))
    p = contrastive.positive_probability(z, z, symmetric=True, scale=scale, margin=margin,
                                         kind="am" if margin else "none")
    bound = C.positive_probability_bound(scale, n, margin)
    assert p.shape == (2 * n,) and torch.allclose(p, torch.tensor(bound, dtype=torch.float64),
                                                  rtol=1e-12, atol=0)


def test_positive_probability_bound_values_and_random_batches():
    k = 510
    assert C.positive_probability_bound(5.0, 256) == pytest.approx(
        math.exp(5) / (math.exp(5) + k * math.exp(-10 / k)), rel=1e-15)
    assert C.positive_probability_bound(5.0, 256) == pytest.approx(0.2289, abs=1e-4)
    # negatives at cosine 0 (the form) differ only by the e^{−2s/K} factor
    assert math.exp(5) / (math.exp(5) + k) == pytest.approx(0.2254, abs=1e-4)
    assert C.positive_probability_bound(10.0, 256) == pytest.approx(0.978, abs=1e-3)
    # no batch of unit vectors beats the bound on average, even with perfectly aligned views
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        for d in (4, 64, 512):
            z = torch.randn(256, d, generator=g, dtype=torch.float64)
            p = contrastive.positive_probability(z, z, symmetric=True, scale=5.0)
            assert p.mean() <= C.positive_probability_bound(5.0, 256)
    # one anchor alone can exceed it: all its negatives antipodal (then they coincide)
    z = torch.cat([torch.ones(1, 3), -torch.ones(255, 3)]).double()
    p = contrastive.positive_probability(z, z, symmetric=True, scale=5.0)
    assert p[0] == pytest.approx(math.exp(5) / (math.exp(5) + k * math.exp(-5)), rel=1e-12)
    assert p[1:256].max() < 0.01


def test_cosine_trace_takes_per_epoch_max_and_mean():
    monitor = [(0.5, 0.1), (0.9, 0.3), (0.7, 0.2), (0.8, 0.4), (0.95, 0.5)]
    trace = C.cosine_trace(monitor, 2)
    assert trace["pos_cos_epochs"] == [[0.9, pytest.approx(0.2)], [0.8, pytest.approx(0.3)],
                                       [0.95, 0.5]]
    assert trace["pos_cos_max_last"] == 0.95 and trace["pos_cos_mean_last"] == 0.5


def test_objective_monitors_positive_cosines():
    monitor = []
    loss = C.loss_module({"loss": "snt-xent", "scale": 5.0, "margin": 0.0})
    model = speaker.SSLModel(speaker.CNN1DEncoder(4, 8))
    x = torch.randn(6, 2, 40)
    C.ssl_objective(loss, monitor)(model, x, None)
    z1, z2 = model.project(x[:, 0]), model.project(x[:, 1])
    cos = F.cosine_similarity(z1, z2, dim=1)
    assert monitor[0] == (pytest.approx(cos.max().item()), pytest.approx(cos.mean().item()))


def test_direction_rule():
    assert C.direction([-1.0, -1.1, -0.9])[2] == -1
    assert C.direction([1.0, 1.2, 0.8])[2] == 1
    assert C.direction([-1.0, 1.0, 0.1])[2] == 0
    assert C.direction([-1.0])[2] == 0
    groups = {("a", 5.0, 0.0): [{"eer": 10.0}, {"eer": 11.0}],
              ("b", 5.0, 0.0): [{"eer": 9.0}, {"eer": None}]}
    assert C.paired_differences(groups, [("b", 5.0, 0.0)], ("a", 5.0, 0.0), "eer") == [-1.0]
