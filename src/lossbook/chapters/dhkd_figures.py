"""Figures of chapter 2 (dual-head knowledge distillation). Each function returns one figure."""

from __future__ import annotations

import numpy as np
import torch

from lossbook import distill, losses
from lossbook.chapters.dhkd import LABELS, SETTING_LABELS, group, mean_std
from lossbook.plotting import PALETTE, subplots

LOSS_COLORS = {"kd": PALETTE[0], "bkl": PALETTE[1], "bkln": PALETTE[2], "ce": PALETTE[7],
               "mse": PALETTE[5], "l1": PALETTE[4]}
LOSS_NAMES = {"kd": "KD (softmax, T=4)", "bkl": "BinaryKL (sigmoid, T=2)",
              "bkln": "BinaryKL-Norm (T=2)", "ce": "CE"}
METHOD_COLORS = {"ce": PALETTE[7], "kd": PALETTE[0], "bkl_only": PALETTE[5],
                 "ce_bkl_1h": PALETTE[1], "ce_bkl_2h": PALETTE[4], "ce_bkln_1h": PALETTE[3],
                 "dhkd": PALETTE[2], "dhkd_nonlinear": "#7FBF9F", "dhkd_ga": "#2F6F4F",
                 "ce_bkl_1h_official": "#8C2D04"}


def _scale_axis(ax, scales):
    """A log x axis with one tick per teacher-logit scale, labelled ×s."""
    ax.set_xscale("log")
    ax.set_xticks(list(scales))
    ax.set_xticklabels([f"×{s:g}" for s in scales])
    ax.minorticks_off()


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def shift_invariance(kd_T: float = 4.0, bkl_T: float = 2.0):
    """Fig. 1(a) of the paper: [2,3,4] and [−2,−1,0] share a softmax but not their sigmoids."""
    a, b = np.array([2.0, 3.0, 4.0]), np.array([-2.0, -1.0, 0.0])
    fig, (ax1, ax2, ax3) = subplots(1, 3, width=3.0)
    x = np.arange(3)
    for ax, fn, title in ((ax1, lambda z: np.exp(z) / np.exp(z).sum(), "softmax: identical"),
                          (ax2, lambda z: 1 / (1 + np.exp(-z)), "per-class sigmoid: differ")):
        ax.bar(x - 0.2, fn(a), 0.4, color=PALETTE[0], label="logits [2, 3, 4]")
        ax.bar(x + 0.2, fn(b), 0.4, color=PALETTE[1], label="logits [−2, −1, 0]")
        ax.set(xticks=x, xticklabels=["class 1", "class 2", "class 3"], ylim=(0, 1.05),
               title=title, ylabel="probability")
    ax1.legend(loc="upper left")
    shift = np.linspace(-8, 8, 201)
    t = _t(a)[None].repeat(len(shift), 1)
    s = t + _t(shift)[:, None]
    for name, T in (("kd", kd_T), ("bkl", bkl_T), ("bkln", bkl_T)):
        values = [float(losses.distill_loss(name, s[i:i + 1], t[i:i + 1], T))
                  for i in range(len(shift))]
        ax3.plot(shift, values, color=LOSS_COLORS[name], label=LOSS_NAMES[name])
    ax3.set(xlabel="common shift c of the student logits (s = t + c)",
            ylabel="distillation loss", title="what each loss sees of a shift",
            ylim=(-0.4, 20))
    ax3.legend()
    return fig


def bkln_regression(T: float = 2.0, temperatures=(1.0, 2.0, 4.0)):
    """BinaryKL-Norm per logit = T² log cosh(Δ/2T): MSE (Δ²/8) near 0, L1 ((T/2)|Δ|) far out."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.6)
    delta = np.linspace(-20, 20, 401)
    d = _t(delta)[:, None]
    loss = losses.binary_kl_norm_loss(d, torch.zeros_like(d), T, reduction="none").numpy()
    ax1.plot(delta, loss, color=LOSS_COLORS["bkln"], lw=2.2, label=f"BinaryKL-Norm, T={T:g}",
             zorder=3)
    ax1.plot(delta, delta**2 / 8, color=LOSS_COLORS["mse"], label="MSE: Δ²/8")
    ax1.plot(delta, T / 2 * np.abs(delta) - T**2 * np.log(2), color=LOSS_COLORS["l1"],
             label="L1: (T/2)|Δ| − T² log 2")
    styles = dict(zip(temperatures, [":", "-", "--"]))
    for temp in temperatures:
        ax2.plot(delta, temp / 2 * np.tanh(delta / (2 * temp)), color=LOSS_COLORS["bkln"],
                 ls=styles[temp], label=f"BinaryKL-Norm, T={temp:g}")
    ax2.plot(delta, delta / 4, color=LOSS_COLORS["mse"], label="MSE")
    ax1.set(xlabel="logit difference Δ = s − t", ylabel="loss per logit", ylim=(-1, 20),
            title="a log-cosh regression on the logits")
    ax2.set(xlabel="logit difference Δ = s − t", ylabel="∂loss/∂s", ylim=(-3, 3),
            title="gradient: Δ/4 near 0, saturating at ±T/2")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return fig


def logit_gradients(kd_T: float = 4.0, bkl_T: float = 2.0):
    """Per-logit gradients of CE, KD and BinaryKL; and on the true-class logit as it grows."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.7)
    # left: the student holds the teacher's logits shifted by −4 (Fig. 1(a)); label = class 3
    t0, s0, y0 = _t([[2.0, 3.0, 4.0]]), _t([[-2.0, -1.0, 0.0]]), torch.tensor([2])
    x = np.arange(t0.shape[1])
    grads = {}
    for name in ("ce", "kd", "bkl"):
        z = s0.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(z, y0) if name == "ce" else \
            losses.distill_loss(name, z, t0, kd_T if name == "kd" else bkl_T)
        grads[name] = torch.autograd.grad(loss, z)[0][0].numpy()
    # right: an over-confident student's true-class logit against a teacher with dark knowledge
    t = _t([[9.0, 3.0, 1.0, -2.0, -4.0]])
    s = _t([[14.0, -1.0, -1.0, -1.0, -1.0]])
    y = torch.tensor([0])
    for i, name in enumerate(grads):
        ax1.bar(x + (i - 1) * 0.27, -grads[name], 0.27, color=LOSS_COLORS[name],
                label=LOSS_NAMES[name])
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set(xticks=x, xticklabels=["class 1", "class 2", "class 3 (label)"],
            ylabel="−∂loss/∂s_k (direction of descent)",
            title="student [−2,−1,0], teacher [2,3,4]: KD is blind")
    ax1.legend(fontsize=7)
    zy = np.linspace(-5, 20, 251)
    for name in ("ce", "kd", "bkl", "bkln"):
        z = s.repeat(len(zy), 1)
        z[:, 0] = _t(zy)
        z.requires_grad_(True)
        tt = t.repeat(len(zy), 1)
        loss = (torch.nn.functional.cross_entropy(z, y.repeat(len(zy)), reduction="sum")
                if name == "ce" else losses.distill_loss(
                    name, z, tt, kd_T if name == "kd" else bkl_T) * len(zy))
        grad = torch.autograd.grad(loss, z)[0][:, 0].numpy()
        ax2.plot(zy, -grad, color=LOSS_COLORS[name], label=LOSS_NAMES[name])
    ax2.axvline(float(t[0, 0]), color="k", lw=0.6, ls=":")
    ax2.axhline(0, color="k", lw=0.6)
    ax2.text(float(t[0, 0]) + 0.3, 0.8, "teacher's $t_y$", fontsize=7)
    ax2.set(xlabel="student's true-class logit $s_y$ (others fixed)",
            ylabel="−∂loss/∂$s_y$", title="teacher [9,3,1,−2,−4], student [$s_y$,−1,−1,−1,−1]",
            ylim=(-2.2, 1.2))
    ax2.legend(fontsize=7)
    return fig


def collapse_conflict(num_classes: int = 10, teacher_scale: float = 6.0, kd_T: float = 4.0,
                      bkl_T: float = 2.0, sample_dark: float = 1.0):
    """Exact cosines of ∇CE and ∇L at a neural-collapse point, on the head and on the features."""
    ratios = np.linspace(0.25, 3.0, 45)
    fig, axes = subplots(1, 2, width=3.6, sharey=True)
    for name in ("kd", "bkl", "bkln"):
        T = kd_T if name == "kd" else bkl_T
        cos = [distill.etf_gradient_cosines(num_classes, r * teacher_scale, teacher_scale,
                                            loss=name, T=T, sample_dark=sample_dark)
               for r in ratios]
        exact = [distill.etf_gradient_cosines(num_classes, r * teacher_scale, teacher_scale,
                                              loss=name, T=T, sample_dark=0.0) for r in ratios]
        for ax, key in zip(axes, ("cos_head", "cos_features")):
            ax.plot(ratios, [c[key] for c in cos], color=LOSS_COLORS[name],
                    label=LOSS_NAMES[name])
            ax.plot(ratios, [c[key] for c in exact], color=LOSS_COLORS[name], ls=":", lw=0.9)
    for ax, title in zip(axes, ("linear head W (summed over examples)",
                                "features h_i (each example its own)")):
        ax.axhline(0, color="k", lw=0.6)
        ax.axvline(1, color="k", lw=0.6, ls=":")
        ax.set(xlabel="student / teacher true-class logit scale κ/τ", title=title,
               ylim=(-1.05, 1.05))
    axes[0].set_ylabel("cos(∇CE, ∇L)")
    axes[0].legend(fontsize=7, loc="center left", bbox_to_anchor=(0.0, 0.35))
    axes[1].text(1.05, 0.85, f"solid: teacher dark knowledge σ={sample_dark:g}\n"
                             "dotted: none (σ=0)", fontsize=7)
    return fig


def accuracy_ablation(specs, results, settings, pair, teachers: dict):
    """Test accuracy of every method per setting: seeds (dots) and mean ± std (bar)."""
    acc = group(specs, results)
    order = [m for m in LABELS if any((s, pair, m) in acc for s in settings)]
    fig, axes = subplots(1, len(settings), width=3.4, height=0.3 * len(order) + 0.9,
                         sharey=True)
    axes = np.atleast_1d(axes)
    for ax, setting in zip(axes, settings):
        for i, method in enumerate(order):
            if (setting, pair, method) not in acc:
                continue
            values = acc[(setting, pair, method)]
            mean, std = mean_std(values)
            color = METHOD_COLORS.get(method, PALETTE[0])
            ax.errorbar(mean, i, xerr=std, fmt="o", color=color, capsize=3, ms=6)
            ax.scatter(values, [i + 0.2] * len(values), s=9, color=color, alpha=0.6)
        if (setting, pair, "ce") in acc:
            ax.axvline(mean_std(acc[(setting, pair, "ce")])[0], color=METHOD_COLORS["ce"],
                       lw=0.7, ls="--")
        teacher = teachers.get(setting)
        ax.set(xlabel="test accuracy (CE head)", title=f"{SETTING_LABELS[setting]}"
               + (f"\nteacher {teacher:.3f}" if teacher is not None else ""))
    axes[0].set_yticks(range(len(order)))
    axes[0].set_yticklabels([LABELS[m] for m in order], fontsize=7)
    axes[0].invert_yaxis()
    return fig


def loss_vs_head(specs, results, settings, pair):
    """The 2×2 ablation: loss (BinaryKL, BinaryKL-Norm) × heads (1, 2), as gains over CE."""
    acc = group(specs, results)
    cells = [("ce_bkl_1h", "BinaryKL", "1 head"), ("ce_bkl_2h", "BinaryKL", "2 heads"),
             ("ce_bkln_1h", "BKL-Norm", "1 head"), ("dhkd", "BKL-Norm", "2 heads")]
    fig, axes = subplots(1, len(settings), width=3.0, height=2.8, sharey=False)
    axes = np.atleast_1d(axes)
    for ax, setting in zip(axes, settings):
        if (setting, pair, "ce") not in acc:
            continue
        ce = np.array(acc[(setting, pair, "ce")])
        for j, (method, _loss, heads) in enumerate(cells):
            if (setting, pair, method) not in acc:
                continue
            gains = np.array(acc[(setting, pair, method)]) - ce
            x = (j // 2) * 1.0 + (j % 2) * 0.38
            color = PALETTE[1] if heads == "1 head" else PALETTE[2]
            ax.bar(x, gains.mean(), 0.34, color=color, alpha=0.85,
                   label=heads if ax is axes[0] and j < 2 else None)
            ax.errorbar(x, gains.mean(), yerr=gains.std(ddof=1) if len(gains) > 1 else 0,
                        color="k", capsize=2, lw=0.8)
            ax.scatter([x] * len(gains), gains, s=7, color="k", zorder=3)
        if (setting, pair, "kd") in acc:
            kd_gain = np.mean(np.array(acc[(setting, pair, "kd")]) - ce)
            ax.axhline(kd_gain, color=METHOD_COLORS["kd"], ls="--", lw=0.9,
                       label="KD" if ax is axes[0] else None)
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xticks=[0.19, 1.19], xticklabels=["CE + BinaryKL", "CE + BKL-Norm"],
               title=SETTING_LABELS[setting], ylabel="accuracy gain over CE (paired)")
    axes[0].legend(fontsize=7)
    return fig


def _curves(specs, results, setting, pair, method, key):
    runs = [r for s, r in zip(specs, results) if s["data"]["setting"] == setting
            and s["pair"] == pair and s["method"] == method]
    if not runs:
        return None, None
    steps = np.array([h["step"] for h in runs[0]["history"]])
    values = np.array([[h[key] for h in r["history"]] for r in runs])
    return steps, values


def gradient_conflict(specs, results, settings, pair, method: str = "ce_bkl_1h"):
    """cos(∇CE, ∇BinaryKL) on the head and on the backbone along training (one-head student)."""
    fig, axes = subplots(1, len(settings), width=3.2, height=2.8, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, setting in zip(axes, settings):
        for key, color, label in (("cos_head", PALETTE[1], "linear head"),
                                  ("cos_backbone", PALETTE[0], "backbone")):
            steps, values = _curves(specs, results, setting, pair, method, key)
            if steps is None:
                continue
            ax.plot(steps, values.mean(0), color=color, label=label, marker="o", ms=2.5)
            ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2)
        ax2 = ax.twinx()
        steps, acc = _curves(specs, results, setting, pair, method, "train_acc")
        if steps is not None:
            ax2.plot(steps, acc.mean(0), color=PALETTE[7], lw=0.9, ls="--")
            ax.plot([], [], color=PALETTE[7], lw=0.9, ls="--", label="train accuracy (right)")
        ax2.set_ylim(0, 1.02)
        ax2.tick_params(labelsize=7)
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xlabel="step", title=SETTING_LABELS[setting], ylim=(-1, 1))
    axes[0].set_ylabel(f"cos(∇CE, ∇BinaryKL), {LABELS[method]}")
    axes[0].legend(fontsize=7, loc="lower left")
    return fig


def collapse_dynamics(specs, results, settings, pair,
                      methods=("ce", "kd", "ce_bkl_1h", "dhkd")):
    """NC1 (trace form: within/between-class variability) and the CE head's logit norm."""
    fig, axes = subplots(2, len(settings), width=3.2, height=2.5, sharex="col")
    axes = np.array(axes).reshape(2, len(settings))
    for j, setting in enumerate(settings):
        for method in methods:
            for i, key in enumerate(("nc1", "logit_norm")):
                steps, values = _curves(specs, results, setting, pair, method, key)
                if steps is None:
                    continue
                axes[i, j].plot(steps, values.mean(0), color=METHOD_COLORS[method],
                                label=LABELS[method])
        axes[0, j].set(yscale="log", title=SETTING_LABELS[setting])
        axes[1, j].set(xlabel="step")
    axes[0, 0].set_ylabel("NC1 (trace form) tr(Σ_W)/tr(Σ_B)")
    axes[1, 0].set_ylabel("mean ‖logits‖ (CE head)")
    axes[0, 0].legend(fontsize=7)
    return fig


def learning_curves(specs, results, setting, pair, methods):
    """Test accuracy along training for each method (mean over seeds), and CE's training and
    validation accuracy: the plateau that the accuracy claims need."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.7)
    for method in methods:
        steps, values = _curves(specs, results, setting, pair, method, "test_acc")
        if steps is None:
            continue
        ax1.plot(steps, values.mean(0), color=METHOD_COLORS.get(method, PALETTE[0]),
                 label=LABELS[method], lw=1.2)
    for key, ls in (("train_acc", "-"), ("val_acc", "--"), ("test_acc", ":")):
        steps, values = _curves(specs, results, setting, pair, "ce", key)
        if steps is None:
            continue
        ax2.plot(steps, values.mean(0), color=METHOD_COLORS["ce"], ls=ls,
                 label=key.replace("_acc", ""))
        ax2.fill_between(steps, values.min(0), values.max(0), color=METHOD_COLORS["ce"],
                         alpha=0.15)
    ax1.set(xlabel="step", ylabel="test accuracy (CE head)", title="every method (seed mean)")
    ax2.set(xlabel="step", ylabel="accuracy", title="CE student: plateau check", ylim=(0, 1.02))
    ax1.legend(fontsize=6)
    ax2.legend(fontsize=7)
    return fig


def official_numerics(main_specs, main_results, sweep_specs, sweep_results, setting, pair,
                      scales):
    """The official float32 BinaryKL against the log-sigmoid form (one-head CE+BinaryKL):
    test accuracy along training at the chapter's teacher, final accuracy and the step at
    which the loss first became non-finite against the teacher-logit scale."""
    fig, axes = subplots(1, 3, width=3.0)
    forms = (("ce_bkl_1h", "log-sigmoid (ours)", PALETTE[1], "o"),
             ("ce_bkl_1h_official", "official clamp-and-log", METHOD_COLORS["ce_bkl_1h_official"],
              "s"))
    for method, label, color, _ in forms:
        steps, values = _curves(main_specs, main_results, setting, pair, method, "test_acc")
        if steps is not None:
            for i, v in enumerate(values):
                axes[0].plot(steps, v, color=color, lw=0.9, alpha=0.8,
                             label=label if i == 0 else None)
    runs = [(s, r) for s, r in zip(main_specs, main_results)
            if s["data"]["setting"] == setting and s["pair"] == pair]
    runs += [(s, r) for s, r in zip(sweep_specs, sweep_results)]
    total = max(s["steps"] for s, _ in runs) if runs else 1
    for j, (method, label, color, marker) in enumerate(forms):
        for scale in scales:
            chosen = [r for s, r in runs if s["method"] == method
                      and s.get("teacher_scale", 1.0) == scale]
            if not chosen:
                continue
            x = scale * (1.06 if j else 0.94)
            acc = [r["test_acc"] for r in chosen]
            axes[1].scatter([x] * len(acc), acc, color=color, marker=marker, s=14,
                            label=label if scale == scales[0] else None)
            onset = [r["nan_step"] if r["nan_step"] is not None else np.nan for r in chosen]
            axes[2].scatter([x] * len(onset), onset, color=color, marker=marker, s=14,
                            label=label if scale == scales[0] else None)
            never = sum(o is None for o in (r["nan_step"] for r in chosen))
            if never:
                axes[2].scatter([x], [total * 1.15], color=color, marker="^", s=16)
    axes[2].axhline(total * 1.15, color="k", lw=0.5, ls=":")
    axes[2].text(scales[0] * 0.9, total * 0.55, "▲ never non-finite", fontsize=7)
    axes[0].set(xlabel="step", ylabel="test accuracy", title="teacher logits × 1", ylim=(0, 1))
    axes[1].set(xlabel="teacher-logit scale", ylabel="final test accuracy",
                title="accuracy vs teacher scale", ylim=(0, 1))
    axes[2].set(yscale="log", xlabel="teacher-logit scale",
                ylabel="first non-finite loss (step)", title="onset of inf/NaN",
                ylim=(1, total * 2))
    for ax in axes[1:]:
        _scale_axis(ax, scales)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    return fig


def ufm_conflict(ufm_results, nc1_collapsed: float):
    """The unconstrained-features model: NC1 along CE training (left), and the cosines of the
    CE and BinaryKL gradients on its head and on its free features against the teacher-logit
    scale, at the collapsed point (right; line: mean over seeds, band: min–max)."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.7)
    for r in ufm_results:
        steps = [h["step"] for h in r["history"]]
        ax1.plot(steps, [max(h["nc1"], 1e-12) for h in r["history"]], color=PALETTE[7],
                 lw=0.9)
    ax1.axhline(nc1_collapsed, color="k", ls=":", lw=0.8)
    ax1.text(steps[-1], nc1_collapsed * 1.6, "collapse threshold", fontsize=7, ha="right")
    ax1.set(yscale="log", xlabel="step (full-batch Adam)",
            ylabel="NC1 tr(Σ_W)/tr(Σ_B)", title="CE training of the free features")
    scales = [c["scale"] for c in ufm_results[0]["cosines"]]
    for key, color, label in (("bkl_cos_head", PALETTE[1], "BinaryKL: head W"),
                              ("bkl_cos_features", PALETTE[0], "BinaryKL: features H"),
                              ("kd_cos_head", PALETTE[2], "KD: head W"),
                              ("kd_cos_features", PALETTE[4], "KD: features H")):
        values = np.array([[c[key] for c in r["cosines"]] for r in ufm_results])
        ls = "-" if key.startswith("bkl") else "--"
        ax2.plot(scales, values.mean(0), color=color, ls=ls, marker="o", ms=3, label=label)
        ax2.fill_between(scales, values.min(0), values.max(0), color=color, alpha=0.2)
    ax2.axhline(0, color="k", lw=0.6)
    ax2.axvline(1, color="k", lw=0.6, ls=":")
    ax2.set(xlabel="teacher-logit scale", ylabel="cos(∇CE, ∇L)",
            title="at the collapsed point", ylim=(-1.05, 1.05))
    _scale_axis(ax2, scales)
    ax2.legend(fontsize=7)
    return fig
