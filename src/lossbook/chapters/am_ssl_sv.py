"""Chapter 4 — additive margins for contrastive self-supervised speaker verification
(Lepage & Dehak, Interspeech 2023): presets and runs.

One kind of run, `ssl_run`: train an encoder + projector without labels on two views per
utterance with one contrastive loss (NT-Xent, SNT-Xent, SNT-Xent-AM/AAM at margin m and scale s),
then score verification trials between identities never seen in training with the cosine of the
*encoder* embeddings, and report EER, minDCF, the target/non-target score gap, score histograms
and a DET curve. It is a pure function of a JSON-able spec (cache, worker pool).

- `task="toy"` (`smoke`, `book`): "speakers" are random smooth MNIST-1D-style templates, an
  "utterance" is one draw of the mnist1d generator (its padding, scaling, translation, correlated
  noise and shear play the session/channel role), views are two random augmentations of the same
  utterance.
- `task="voxceleb"` (`full`): VoxCeleb1 dev / VoxCeleb1-O, placed by the user under `data_dir`
  (see `lossbook.audio`), Thin ResNet-34 on 40 log-mels, two 2-s frames per utterance, MUSAN + RIR.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lossbook import contrastive, data, speaker, train, verification
from lossbook.presets import at_least, nonempty, one_of, positive

LOSSES = ("nt-xent", "snt-xent", "snt-xent-am", "snt-xent-aam")


@dataclass(frozen=True)
class Config:
    # comparisons (paper Tables 1 and 2)
    scales: tuple[float, ...] = (5.0, 30.0)
    am_margins: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    aam_margins: tuple[float, ...] = (0.05, 0.1, 0.2)
    aam_large_margins: tuple[float, ...] = (0.3,)  # the paper's "exploding gradients" value
    follow_up_am_margins: tuple[float, ...] = (0.1, 0.2)  # margins also run at the second scale
    follow_up_aam_margins: tuple[float, ...] = ()
    # the s sweep: SNT-Xent and SNT-Xent-AM at sweep_margin at these extra scales
    sweep_scales: tuple[float, ...] = ()
    sweep_margin: float = 0.2
    sweep_seeds: int = 5  # seeds (at most `seeds`) of the sweep-only settings: they judge no claim
    nt_xent_scales: tuple[float, ...] = ()  # NT-Xent only at these scales (empty: every scale)
    seeds: int = 5
    # toy task: identities, utterances, difficulty
    task: str = "toy"
    train_ids: int = 200
    test_ids: int = 100
    utterances: int = 20  # per identity
    template_seed: int = 4
    nuisance: float = 0.125  # × the mnist1d generator's default nuisance (calibrated, see notebook)
    calibration_levels: tuple[float, ...] = (0.25, 0.125)
    nontarget_trials: int = 40000
    # views (augmentations of one utterance)
    aug_shift: int = 4
    aug_noise: float = 0.1
    aug_scale: float = 0.2
    aug_slope: float = 0.2
    # model and training
    encoder: str = "cnn1d"
    channels: int = 32
    embedding_dim: int = 64
    projector: bool = True
    epochs: int = 12
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    lr_decay: float = 0.95  # with schedule="step": × lr_decay every lr_decay_epochs (official)
    lr_decay_epochs: int = 10
    eval_every: int = 4
    # VoxCeleb (`full`)
    data_dir: str = ""
    base_dim: int = 16
    encoder_dim: int = 512
    frame_length: int = 32000
    train_samples: int = 96000  # samples kept per training utterance (≥ 2 frames)
    eval_frames: int = 6
    musan_files: int = 3000
    rir_files: int = 3000
    augment: bool = True
    max_train_utterances: int = 0  # 0: all


CONSTRAINTS = {  # checked by lossbook.presets.resolve (with finite, ≥ 0 numbers everywhere)
    "task": one_of("toy", "voxceleb"), "encoder": one_of("cnn1d", "resnet34"),
    "scales": (nonempty, positive), "optimizer": one_of("sgd", "adam", "adamw"),
    "schedule": one_of("constant", "cosine", "multistep", "step"),
    "train_ids": at_least(2), "test_ids": at_least(2), "utterances": at_least(2),
    "channels": positive, "embedding_dim": positive, "lr_decay": positive,
    "lr_decay_epochs": positive, "frame_length": positive, "eval_frames": positive,
    "base_dim": positive, "encoder_dim": positive, "nontarget_trials": positive,
    "sweep_scales": positive, "nt_xent_scales": positive,
}


PRESETS = {
    "smoke": Config(scales=(5.0,), am_margins=(0.2,), aam_margins=(0.1,), aam_large_margins=(),
                    follow_up_am_margins=(), follow_up_aam_margins=(), seeds=1, train_ids=40,
                    test_ids=20, utterances=10, calibration_levels=(0.125,),
                    nontarget_trials=2000, epochs=1, batch_size=64, eval_every=1),
    # Only the settings the claims need, five seeds each: NT-Xent and SNT-Xent at s = 5 and 30
    # (the two symmetric claims, the baselines), AM 0.2 at s = 5 and 30, AAM 0.1 and the
    # "exploding" AAM 0.3 at s = 5. The s sweep's extra scale (s = 10) decides no claim and
    # runs two seeds. 24 epochs: the shortest length at which the s = 5 baseline met the plateau
    # rule in a baseline-only exploration (12 did not); what this costs is paid for by the
    # two sweep-only seeds. The paper's other margins run at `full`.
    "book": Config(am_margins=(0.2,), aam_margins=(0.1,), follow_up_am_margins=(0.2,),
                   sweep_scales=(10.0,), sweep_margin=0.2, sweep_seeds=2,
                   nt_xent_scales=(5.0, 30.0), epochs=24),
    # The paper's setting (Interspeech 2023, Tables 1–2; official configs/interspeech_2023):
    # VoxCeleb1 dev, Thin ResNet-34 (512-d, base 16), projector 512-2048-256, 200 epochs, batch
    # 256, Adam 1e-3 decayed × 0.95 every 10 epochs, s = 5, MUSAN + RIR, VoxCeleb1-O with
    # 6 × 2-s frames.
    "full": Config(task="voxceleb", encoder="resnet34", embedding_dim=512, epochs=200,
                   schedule="step", lr_decay=0.95, lr_decay_epochs=10,
                   batch_size=256, seeds=1, scales=(5.0, 30.0), eval_every=10,
                   calibration_levels=(), follow_up_am_margins=(0.1, 0.2)),
}


# --- the toy verification task ------------------------------------------------------------------

# mnist1d generator defaults (`get_dataset_args`) whose size `nuisance` scales
NUISANCE_ARGS = {"padding": [36, 60], "scale_coeff": 0.4, "max_translation": 48,
                 "corr_noise_scale": 0.25, "iid_noise_scale": 2e-2, "shear_scale": 0.75}


def generator_args(nuisance: float) -> dict:
    """mnist1d generator arguments at `nuisance` × the default session/channel variability: the
    random zero-padding (which also sets how much of the 40 samples the 12-point template fills
    and how much it is stretched), scaling, circular translation, noise and shear."""
    args = {k: v * nuisance for k, v in NUISANCE_ARGS.items() if k != "padding"}
    args["padding"] = [round(p * nuisance) for p in NUISANCE_ARGS["padding"]]
    args["max_translation"] = max(1, round(NUISANCE_ARGS["max_translation"] * nuisance))
    return args


@lru_cache(maxsize=4)
def toy_speakers(train_ids: int, test_ids: int, utterances: int, template_seed: int,
                 nuisance: float) -> data.Dataset:
    """Training utterances of `train_ids` identities and test utterances of `test_ids` *other*
    identities (independent random templates), `utterances` generator draws each."""
    args = {**generator_args(nuisance), "train_split": 1.0}
    tr = data.mnist1d(train_ids * utterances, seed=2 * template_seed, num_classes=train_ids,
                      template_seed=2 * template_seed, **args)
    te = data.mnist1d(test_ids * utterances, seed=2 * template_seed + 1, num_classes=test_ids,
                      template_seed=2 * template_seed + 1, **args)
    return data.Dataset(tr.x_train, tr.y_train, te.x_train, te.y_train, train_ids)


def toy_views(x: torch.Tensor, g: torch.Generator, shift: int, noise: float, scale: float,
              slope: float) -> torch.Tensor:
    """Two random views [B, 2, L] of each signal: circular shift by ±shift, amplitude
    ×(1 ± scale/2), a random linear trend (shear, ±slope/2 across the signal) and iid noise of
    std `noise` — the mnist1d generator's own transforms, applied independently to each view."""
    b, length = x.shape
    device = x.device
    views = []
    t = torch.linspace(-0.5, 0.5, length, device=device)
    positions = torch.arange(length, device=device)
    for _ in range(2):
        k = torch.randint(-shift, shift + 1, (b, 1), generator=g, device=device)
        v = x.gather(1, (positions[None, :] - k) % length)
        u = torch.rand(b, 2, generator=g, device=device) - 0.5
        v = v * (1 + scale * u[:, :1]) - slope * u[:, 1:] * t
        v = v + noise * torch.randn(b, length, generator=g, device=device)
        views.append(v)
    return torch.stack(views, 1)


# --- specs ---------------------------------------------------------------------------------------

TRAIN_KEYS = ("task", "train_ids", "test_ids", "utterances", "template_seed", "nontarget_trials",
              "aug_shift", "aug_noise", "aug_scale", "aug_slope", "encoder", "channels",
              "embedding_dim", "projector", "epochs", "batch_size", "optimizer", "lr", "schedule",
              "lr_decay", "lr_decay_epochs", "eval_every", "data_dir", "base_dim", "encoder_dim",
              "frame_length", "train_samples", "eval_frames", "musan_files", "rir_files", "augment",
              "max_train_utterances")


def make_spec(cfg: Config, loss: str, scale: float, margin: float, seed: int, device: str,
              nuisance: float | None = None) -> dict:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    spec = {k: getattr(cfg, k) for k in TRAIN_KEYS}
    spec.update(loss=loss, scale=float(scale), margin=float(margin), seed=seed, device=device,
                nuisance=cfg.nuisance if nuisance is None else float(nuisance))
    return spec


def comparison_settings(cfg: Config, sweep: bool = True) -> list[tuple[str, float, float]]:
    """(loss, scale, margin) of every comparison: Table 1, Table 2 and the large AAM margins at
    the paper's s (the first scale); the baselines and the follow-up's margins at other scales."""
    settings = []
    for i, s in enumerate(cfg.scales):
        am = cfg.am_margins if i == 0 else cfg.follow_up_am_margins
        aam = (cfg.aam_margins + cfg.aam_large_margins) if i == 0 else cfg.follow_up_aam_margins
        if not cfg.nt_xent_scales or s in cfg.nt_xent_scales:
            settings.append(("nt-xent", s, 0.0))
        settings.append(("snt-xent", s, 0.0))
        settings += [("snt-xent-am", s, m) for m in am]
        settings += [("snt-xent-aam", s, m) for m in aam]
    if sweep:
        settings += [x for x in sweep_settings(cfg) if x not in settings]
    return settings


def specs(cfg: Config, seed: int, device: str) -> list[dict]:
    """Every comparison run; seeds s = seed … seed + seeds − 1 are shared by all losses, so each
    seed pairs runs with the same initialisation, data order and augmentation draws. Settings
    that only the s sweep uses (its extra scales) run the first `sweep_seeds` of them."""
    extra = set(sweep_settings(cfg)) - set(comparison_settings(cfg, sweep=False))
    return [make_spec(cfg, loss, s, m, seed + k, device)
            for loss, s, m in comparison_settings(cfg)
            for k in range(min(cfg.sweep_seeds, cfg.seeds) if (loss, s, m) in extra
                           else cfg.seeds)]


def sweep_settings(cfg: Config) -> list[tuple[str, float, float]]:
    """The settings of the s sweep's extra scales: SNT-Xent and AM at `sweep_margin`."""
    return [x for s in cfg.sweep_scales
            for x in (("snt-xent", s, 0.0), ("snt-xent-am", s, cfg.sweep_margin))]


def calibration_specs(cfg: Config, seed: int, device: str) -> list[dict]:
    """The baseline (NT-Xent at the paper's s) at each difficulty level, first seed only."""
    return [make_spec(cfg, "nt-xent", cfg.scales[0], 0.0, seed, device, nuisance=level)
            for level in cfg.calibration_levels]


def sweep_once(chapter, *spec_lists: list[dict], desc: str = "runs") -> list[list[dict]]:
    """Run several spec lists in one `chapter.sweep` (one worker pool), each distinct spec once;
    return the results list by list."""
    import json

    def key(spec):
        return json.dumps(spec, sort_keys=True)

    unique = list({key(s): s for specs_ in spec_lists for s in specs_}.values())
    by_key = dict(zip(map(key, unique), chapter.sweep(ssl_run, unique, desc=desc)))
    return [[by_key[key(s)] for s in specs_] for specs_ in spec_lists]


# --- one run -------------------------------------------------------------------------------------

class Diverged(RuntimeError):
    """The training loss became non-finite."""


def loss_module(spec: dict) -> contrastive.MarginContrastiveLoss:
    kind = {"nt-xent": "none", "snt-xent": "none", "snt-xent-am": "am",
            "snt-xent-aam": "aam"}[spec["loss"]]
    return contrastive.MarginContrastiveLoss(symmetric=spec["loss"] != "nt-xent",
                                             scale=spec["scale"], margin=spec["margin"],
                                             kind=kind)


def ssl_objective(loss_fn, monitor: list | None = None):
    """Loss of the projector outputs of the two views x[:, 0], x[:, 1] (labels unused); each view
    is a separate forward pass, as `Custom.forward` (BatchNorm statistics per view). With a list
    `monitor`, each step appends (max, mean) of the positive pairs' cosines."""
    def objective(model, x, _y):
        z1, z2 = model.project(x[:, 0]), model.project(x[:, 1])
        loss = loss_fn(z1, z2)
        if monitor is not None:
            with torch.no_grad():
                cos = torch.nn.functional.cosine_similarity(z1, z2, dim=1)
                monitor.append((cos.max().item(), cos.mean().item()))
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite loss {loss.item()}")
        return loss
    return objective


DET_GRID = np.r_[np.logspace(-4, -1, 31)[:-1], np.linspace(0.1, 0.9, 33)]
HIST_BINS = np.linspace(-1, 1, 81)


def trial_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """EER, minDCF, score statistics, histograms and a DET curve sampled on a fixed FPR grid."""
    labels = labels.astype(bool)
    fpr, fnr = verification.det_curve(scores, labels)
    # the lowest FNR reachable at FPR ≤ g, for each grid value g
    best = np.minimum.accumulate(fnr)
    det_fnr = best[np.searchsorted(fpr, DET_GRID, side="right") - 1]
    return {**verification.summary(scores, labels),
            "mean_target": float(scores[labels].mean()),
            "mean_nontarget": float(scores[~labels].mean()),
            "std_target": float(scores[labels].std()),
            "std_nontarget": float(scores[~labels].std()),
            "hist_target": np.histogram(scores[labels], HIST_BINS)[0].tolist(),
            "hist_nontarget": np.histogram(scores[~labels], HIST_BINS)[0].tolist(),
            "det_fpr": DET_GRID.tolist(), "det_fnr": det_fnr.tolist(),
            "trials": [int(labels.sum()), int((~labels).sum())]}


def ssl_run(spec: dict) -> dict:
    """Train one self-supervised model with one loss; evaluate verification on unseen speakers."""
    expected = {"toy": "cnn1d", "voxceleb": "resnet34"}
    if spec["task"] not in expected or spec["encoder"] != expected[spec["task"]]:
        raise ValueError(f"task/encoder must be one of {expected}, got {spec['task']!r}/"
                         f"{spec['encoder']!r}")
    if spec["task"] == "voxceleb":
        return voxceleb_run(spec)
    dataset = toy_speakers(spec["train_ids"], spec["test_ids"], spec["utterances"],
                           spec["template_seed"], spec["nuisance"]).to(spec["device"])
    trials = verification.make_trials(dataset.y_test.cpu().numpy(), spec["nontarget_trials"],
                                      seed=spec["template_seed"])
    torch.manual_seed(spec["seed"])
    model = speaker.SSLModel(speaker.CNN1DEncoder(spec["channels"], spec["embedding_dim"]),
                             projector=spec["projector"]).to(spec["device"])
    loss_fn = loss_module(spec).to(spec["device"])

    def augment(x, g):
        return toy_views(x, g, spec["aug_shift"], spec["aug_noise"], spec["aug_scale"],
                         spec["aug_slope"])

    def evaluate(m):
        scores = verification.cosine_scores(speaker.embed(m, dataset.x_test), trials)
        return {"eer": verification.eer(scores, trials[:, 0]),
                "min_dcf": verification.min_dcf(scores, trials[:, 0])}

    floor = evaluate(model)  # the untrained encoder (same initialisation): the task's floor
    result = fit_and_score(spec, model, loss_fn, dataset, augment, evaluate,
                           lambda m: verification.cosine_scores(
                               speaker.embed(m, dataset.x_test), trials), trials[:, 0])
    return {**result, "eer0": floor["eer"], "min_dcf0": floor["min_dcf"]}


@torch.no_grad()
def saturation(model, loss_fn, dataset, augment, batch_size: int) -> dict:
    """Positive-pair softmax probabilities p_a of the trained model's own loss on one batch of
    training utterances (fixed views): how saturated the contrastive softmax is at the end."""
    was_training = model.training
    model.eval()
    x = augment(dataset.x_train[:batch_size], torch.Generator(
        device=dataset.x_train.device).manual_seed(12345))
    p = contrastive.positive_probability(
        model.project(x[:, 0]), model.project(x[:, 1]), symmetric=loss_fn.symmetric,
        scale=loss_fn.scale, margin=loss_fn.margin, kind=loss_fn.kind)
    model.train(was_training)
    return {"p_pos_mean": p.mean().item(), "p_pos_max": p.max().item(),
            "p_pos_high": (p > 0.5).float().mean().item()}


def cosine_trace(monitor: list, steps_per_epoch: int) -> dict:
    """Per epoch, the largest and the mean positive-pair cosine of the training batches."""
    per_epoch = [monitor[i:i + steps_per_epoch] for i in range(0, len(monitor), steps_per_epoch)]
    trace = [[max(m for m, _ in e), statistics.fmean(a for _, a in e)] for e in per_epoch if e]
    return {"pos_cos_epochs": trace,
            "pos_cos_max_last": trace[-1][0] if trace else None,
            "pos_cos_mean_last": trace[-1][1] if trace else None}


def fit_and_score(spec, model, loss_fn, dataset, augment, evaluate, score, labels) -> dict:
    started, cpu = time.time(), time.process_time()
    monitor: list = []
    steps_per_epoch = max(1, len(dataset.y_train) // spec["batch_size"])
    try:
        result = train.fit(model, dataset, ssl_objective(loss_fn, monitor), epochs=spec["epochs"],
                           batch_size=spec["batch_size"], optimizer=spec["optimizer"],
                           lr=spec["lr"], schedule=spec["schedule"], gamma=spec["lr_decay"],
                           decay_every=spec["lr_decay_epochs"], seed=spec["seed"],
                           augment=augment, evaluate=evaluate, eval_every=spec["eval_every"])
    except Diverged as err:
        return {"diverged": True, "error": str(err), "eer": None, "min_dcf": None, "gap": None,
                **cosine_trace(monitor, steps_per_epoch),
                "history": [], "time_s": round(time.time() - started, 2),
                "cpu_s": round(time.process_time() - cpu, 2)}
    scores = score(model)
    if not np.isfinite(scores).all():
        return {"diverged": True, "error": "non-finite embeddings", "eer": None,
                "min_dcf": None, "gap": None, "history": result["history"],
                "time_s": round(time.time() - started, 2),
                "cpu_s": round(time.process_time() - cpu, 2)}
    return {"diverged": False, **trial_metrics(scores, np.asarray(labels)),
            **saturation(model, loss_fn, dataset, augment, spec["batch_size"]),
            **cosine_trace(monitor, steps_per_epoch),
            "history": result["history"], "time_s": round(time.time() - started, 2),
            "cpu_s": round(time.process_time() - cpu, 2)}


# --- VoxCeleb (`full`) ---------------------------------------------------------------------------

def voxceleb_run(spec: dict) -> dict:
    """The paper's setting: VoxCeleb1 dev training (labels unused), VoxCeleb1-O trials."""
    from lossbook import audio

    root = Path(spec["data_dir"])
    if not spec["data_dir"] or not (root / "voxceleb1").is_dir():
        raise FileNotFoundError(
            "the full preset needs VoxCeleb1 placed by you under data_dir (it is not freely "
            "downloadable): data_dir/voxceleb1/idXXXXX/<video>/<utt>.wav, data_dir/"
            "voxceleb1_test_O, and for augmentation data_dir/musan_split, data_dir/simulated_rirs")
    device = spec["device"]
    files = audio.train_list(root)
    if spec["max_train_utterances"]:
        files = files[:spec["max_train_utterances"]]
    x_train = audio.load_training_audio(root, [f for _, f in files], spec["train_samples"])
    speakers = sorted({s for s, _ in files})
    y_train = torch.tensor([speakers.index(s) for s, _ in files])
    trials = audio.read_trials(root / "voxceleb1_test_O")
    utterances = sorted({u for _, a, b in trials for u in (a, b)})
    # the train loop needs test tensors: they are scored by `score` below, not by `fit`
    dataset = data.Dataset(x_train.to(device), y_train.to(device), x_train[:1].to(device),
                           y_train[:1].to(device), len(speakers))
    augmenter = None
    if spec["augment"]:
        length = spec["frame_length"]
        musan = {c: audio.load_bank(root / "musan_split", f"{c}/*/*.wav", length,
                                    spec["musan_files"]) for c in audio.MUSAN_SNR}
        rirs = audio.load_bank(root / "simulated_rirs", "*/*/*.wav", audio.SAMPLE_RATE,
                               spec["rir_files"], wrap=False)
        augmenter = audio.WaveAugment(musan, rirs)

    def augment(x, g):
        views = audio.sample_frame_pairs(audio.to_float(x), spec["frame_length"], g)
        if augmenter is not None:
            b = len(views)
            views = augmenter(views.reshape(2 * b, -1), g).reshape(b, 2, -1)
        return views

    torch.manual_seed(spec["seed"])
    encoder = speaker.ThinResNet34(spec["encoder_dim"], spec["base_dim"])
    model = speaker.SSLModel(encoder, projector=spec["projector"]).to(device)
    loss_fn = loss_module(spec).to(device)
    labels = np.array([t[0] for t in trials])
    index = {u: i for i, u in enumerate(utterances)}
    pairs = np.array([[t[0], index[t[1]], index[t[2]]] for t in trials])

    def score(m):
        embeddings = []
        for u in utterances:
            frames = audio.eval_frames(audio.read_wav(root / "voxceleb1" / u)[0],
                                       spec["frame_length"], spec["eval_frames"])
            e = speaker.embed(m, audio.to_float(frames).to(device))
            embeddings.append(e.mean(0))  # official: mean of the frame embeddings, then L2
        return verification.cosine_scores(torch.stack(embeddings), pairs)

    def evaluate(m):
        s = score(m)
        return {"eer": verification.eer(s, labels), "min_dcf": verification.min_dcf(s, labels)}

    return fit_and_score(spec, model, loss_fn, dataset, augment, evaluate, score, labels)


# --- summaries ---------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def setting_key(spec: dict) -> tuple[str, float, float]:
    return spec["loss"], spec["scale"], spec["margin"]


def group(spec_list: list[dict], results: list[dict]) -> dict:
    """{(loss, scale, margin): [result per seed]} in first-seen order."""
    out: dict = {}
    for spec, result in zip(spec_list, results):
        out.setdefault(setting_key(spec), []).append(result)
    return out


def label(loss: str, margin: float) -> str:
    name = {"nt-xent": "NT-Xent", "snt-xent": "SNT-Xent", "snt-xent-am": "SNT-Xent-AM",
            "snt-xent-aam": "SNT-Xent-AAM"}[loss]
    return f"{name} m={margin:g}" if loss.endswith("am") else name


def per_seed(groups: dict, key, metric: str) -> dict[int, float]:
    """{seed index: metric} of the runs of one setting that did not diverge."""
    return {i: r[metric] for i, r in enumerate(groups[key]) if r[metric] is not None}


def paired_differences(groups: dict, keys: list, base, metric: str) -> list[float]:
    """Per seed: the mean over `keys` of metric(key) − metric(base) (seed-paired); seeds where
    any of them diverged are left out."""
    ref = per_seed(groups, base, metric)
    values = [per_seed(groups, k, metric) for k in keys]
    seeds = [i for i in ref if all(i in v for v in values)]
    return [statistics.fmean(v[i] - ref[i] for v in values) for i in seeds]


def direction(diffs: list[float], z: float = 2.0) -> tuple[float, float, int]:
    """(mean, standard error, sign): sign −1/+1 when the mean is below/above 0 by more than
    z standard errors, 0 when the difference is not resolved (or fewer than 2 seeds)."""
    if len(diffs) < 2:
        return (diffs[0] if diffs else math.nan), math.nan, 0
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    if abs(mean) > z * se:
        return mean, se, -1 if mean < 0 else 1
    return mean, se, 0


def positive_probability_bound(scale: float, batch: int, margin: float = 0.0) -> float:
    """Bound on the positive-pair probability p_a of SNT-Xent(-AM) at scale s for N = `batch`
    utterances (K = 2(N − 1) negatives per anchor) and unit-norm embeddings.

    p_a = 1 / (1 + e^{−s(c_p − m)} Σ_k e^{s c_k}) is largest at c_p = 1. By convexity
    Σ_k e^{s c_k} ≥ K e^{s c̄_a}, c̄_a the anchor's mean negative cosine, so
    p_a ≤ e^{s(1−m)} / (e^{s(1−m)} + K e^{s c̄_a}). Since ‖Σ_j z_j‖² ≥ 0 over the 2N views and
    each positive cosine is ≤ 1, the batch average of c̄_a is ≥ −2/K; an anchor at that average
    (e.g. every anchor when the N utterances form a regular simplex, both views equal, where the
    bound is attained) has p_a ≤ e^{s(1−m)} / (e^{s(1−m)} + K e^{−2s/K}). With negatives at
    cosine 0 the bound is e^{s(1−m)} / (e^{s(1−m)} + K). A single anchor whose negatives all sit
    at −1 could reach e^{s}/(e^{s} + K e^{−s}), but then those negatives coincide and are each
    other's negatives at cosine 1.
    """
    k = 2 * (batch - 1)
    top = math.exp(scale * (1 - margin))
    return top / (top + k * math.exp(-2 * scale / k))


# --- the paper's numbers (authors' slides; VoxCeleb1-O) ------------------------------------------

# Interspeech 2023, Tables 1–2: VoxCeleb1 dev training, Thin ResNet-34, 200 epochs, s = 5
PAPER = {("nt-xent", 0.0): (9.45, 0.7094), ("snt-xent", 0.0): (9.35, 0.6647),
         ("snt-xent-am", 0.1): (9.30, 0.7610), ("snt-xent-am", 0.2): (9.01, 0.6907),
         ("snt-xent-am", 0.3): (8.93, 0.6909), ("snt-xent-am", 0.4): (8.70, 0.6873),
         ("snt-xent-am", 0.5): (8.87, 0.7182), ("snt-xent-aam", 0.05): (8.92, 0.7006),
         ("snt-xent-aam", 0.1): (8.98, 0.6742), ("snt-xent-aam", 0.2): (9.22, 0.6846),
         ("snt-xent-aam", 0.3): (None, None)}  # "exploding gradients"
# VoxCeleb2 training, s = 30 (slide 14; Odyssey-2024 setting: Fast ResNet-34, no projector)
PAPER_FOLLOW_UP = {("nt-xent", 0.0): (8.98, 0.6714), ("snt-xent", 0.0): (8.41, 0.6235),
                   ("snt-xent-am", 0.1): (7.85, 0.6168), ("snt-xent-am", 0.2): (8.13, 0.6211)}
PAPER_GAP = (0.259, 0.278)  # Fig. 4: mean target − non-target score, SNT-Xent vs AM m = 0.4
