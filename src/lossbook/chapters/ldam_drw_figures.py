"""Figures of chapter 6 (LDAM-DRW). Each function draws one figure and returns it."""

from __future__ import annotations

import numpy as np

from lossbook import margins
from lossbook.chapters.ldam_drw import (
    METHOD_LABELS,
    lr_factor,
    mean_std,
    multiclass_optimum,
)
from lossbook.plotting import PALETTE, color_map, subplots

METHOD_COLORS = {"ce": PALETTE[7], "ce_rw": PALETTE[5], "ce_rs": PALETTE[4],
                 "ce_drw": PALETTE[0], "ldam": PALETTE[2], "ldam_drw": PALETTE[1],
                 "cos": PALETTE[6], "cos_drw": PALETTE[6], "ldam_uni": PALETTE[3],
                 "ldam_uni_drw": PALETTE[3]}
# drawn thinner / dashed: baselines and controls, not the paper's own methods
BASELINES = ("ce_rw", "ce_rs", "cos", "cos_drw", "ldam_uni", "ldam_uni_drw")
TASK_NAMES = {"mnist1d": "MNIST-1D-LT", "cifar10": "CIFAR-10-LT", "cifar100": "CIFAR-100-LT"}


def setting_label(task: str, ratio: float) -> str:
    return f"{TASK_NAMES.get(task, task)}, ρ={ratio:g}"


def size_axis(ax, counts) -> None:
    """Log-scaled class-size axis with plain tick labels (1-2-5 steps, no minor labels)."""
    from matplotlib.ticker import NullFormatter

    lo, hi = min(counts), max(counts)
    ticks = [t * 10**e for e in range(0, 5) for t in (1, 2, 5) if lo * 0.9 <= t * 10**e <= hi * 1.1]
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def plain_log_y(ax, ticks) -> None:
    """Log-scaled y axis labelled with plain numbers at `ticks`."""
    from matplotlib.ticker import NullFormatter

    ax.set_yscale("log")
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())


def margin_tradeoff(class_sets: dict, two_class_ratios=(1, 10, 100)):
    """Left: the two-class bound against how the margin is split. Right: LDAM's Δ_j against n_j
    for several long tails, with the numerical minimiser of the multi-class bound as dots."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.7, height=3.0)
    share = np.linspace(0.03, 0.97, 400)
    colors = color_map(two_class_ratios, "plasma")
    for ratio in two_class_ratios:
        counts = [100.0 * ratio, 100.0]
        bound = margins.margin_bound(np.stack([share, 1 - share], 1), counts)
        equal = margins.margin_bound([0.5, 0.5], counts)
        ax1.plot(share, bound / equal, color=colors[ratio], label=f"$n_1/n_2$ = {ratio:g}")
        best = margins.optimal_margins(counts)[0]
        ax1.plot(best, margins.margin_bound([best, 1 - best], counts) / equal, "o",
                 color=colors[ratio], ms=5)
    ax1.axvline(0.5, color="0.6", lw=0.8, ls=":")
    ax1.set(xlabel="share of the margin given to the frequent class, $\\gamma_1/(\\gamma_1+"
                   "\\gamma_2)$", ylabel="bound / bound at equal margins", ylim=(0.6, 1.6),
            title="two classes: optimum at $\\gamma_j \\propto n_j^{-1/4}$ (dots)")
    ax1.legend(loc="upper left")
    for k, (label, counts) in enumerate(class_sets.items()):
        deltas = margins.ldam_margins(counts).numpy()
        numeric = multiclass_optimum(counts)
        numeric = numeric * (deltas.max() / numeric.max())
        ax2.plot(counts, deltas, color=PALETTE[k], label=label)
        ax2.plot(counts, numeric, "o", color=PALETTE[k], ms=3.5, mfc="none")
    ax2.set(xscale="log", xlabel="class size $n_j$",
            ylabel="LDAM margin $\\Delta_j = C\\,n_j^{-1/4}$ (max 0.5)",
            title="multi-class: formula (lines), numerical optimum (o)")
    plain_log_y(ax2, [0.15, 0.2, 0.3, 0.4, 0.5])
    ax2.legend(loc="lower left")
    return fig


def schedule(spec: dict, counts: list[int], beta: float):
    """The learning rate of the official schedule and the class weights before/after DRW."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.5, height=2.7)
    epochs = np.arange(spec["epochs"])
    ax1.step(epochs, [spec["lr"] * lr_factor(int(e), spec) for e in epochs], where="post",
             color=PALETTE[0])
    ax1.axvline(spec["drw_epoch"], color=PALETTE[1], ls="--", lw=1)
    ax1.annotate("DRW switch", (spec["drw_epoch"], spec["lr"] * 0.3), color=PALETTE[1],
                 xytext=(-4, 0), textcoords="offset points", ha="right", fontsize=8)
    ax1.set(yscale="log", xlabel="epoch", ylabel="learning rate",
            title="warm-up, then ×0.01 at each milestone")
    classes = np.arange(len(counts))
    before = margins.drw_weights(0, counts, spec["drw_epoch"], (0.0, beta)).numpy()
    after = margins.drw_weights(spec["drw_epoch"], counts, spec["drw_epoch"], (0.0, beta))
    ax2.bar(classes - 0.2, before, 0.4, color="0.7", label="before the switch (β = 0)")
    ax2.bar(classes + 0.2, after.numpy(), 0.4, color=PALETTE[1], label=f"after (β = {beta:g})")
    ax2.set(yscale="log", xlabel="class: its number of training examples $n_j$",
            ylabel="class weight (Σ = number of classes)", xticks=classes,
            ylim=(None, 30), title=f"DRW class weights, ρ = {counts[0] / counts[-1]:g}")
    ax2.set_xticklabels([str(n) for n in counts], fontsize=7)
    ax2.legend(loc="upper left", fontsize=7)
    return fig


def balanced_accuracy(acc: dict, settings, methods):
    """Balanced test accuracy per method: seed mean ± std (large marker) and every seed (dots);
    the dotted line is CE's mean."""
    fig, axes = subplots(1, len(settings), width=3.3, height=2.9, squeeze=False)
    for ax, (task, ratio) in zip(axes[0], settings):
        x = np.arange(len(methods))
        for i, m in enumerate(methods):
            v = acc[(task, ratio, m)]
            mean, std = mean_std(v)
            ax.errorbar(i, mean, yerr=std, marker="o", ms=7, capsize=4, lw=1.6,
                        color=METHOD_COLORS[m])
            ax.plot(i + 0.22 + np.linspace(-0.06, 0.06, len(v)), v, ".", ms=4,
                    color=METHOD_COLORS[m], alpha=0.7)
        if "ce" in methods:
            ax.axhline(np.mean(acc[(task, ratio, "ce")]), color=METHOD_COLORS["ce"], ls=":",
                       lw=1)
        ax.set(xticks=x, xlim=(-0.5, len(methods) - 0.3), title=setting_label(task, ratio))
        ax.set_xticklabels([METHOD_LABELS[m] for m in methods], rotation=35, ha="right")
    axes[0, 0].set_ylabel("balanced test accuracy")
    return fig


def per_class(per_class_acc: dict, counts: dict, settings, methods):
    """Top: per-class test accuracy against class size. Bottom: gain over CE (seed-paired)."""
    fig, axes = subplots(2, len(settings), width=3.4, height=2.6, squeeze=False, sharex="col")
    for j, (task, ratio) in enumerate(settings):
        n = np.asarray(counts[(task, ratio)])
        ce = np.asarray(per_class_acc[(task, ratio, "ce")])
        for m in methods:
            a = np.asarray(per_class_acc[(task, ratio, m)])  # [seeds, classes]
            style = dict(color=METHOD_COLORS[m], lw=1.0 if m in BASELINES else 1.8,
                         ls="--" if m in BASELINES else "-", marker=".", ms=4)
            axes[0, j].plot(n, a.mean(0), label=METHOD_LABELS[m], **style)
            if m != "ce":
                axes[1, j].plot(n, (a - ce).mean(0), **style)
        axes[1, j].axhline(0, color=METHOD_COLORS["ce"], lw=0.8)
        axes[0, j].set(title=setting_label(task, ratio), ylim=(-0.02, 1.02))
        axes[1, j].set(xlabel="training examples of the class (log scale)")
        size_axis(axes[1, j], n)
    axes[0, 0].set_ylabel("per-class test accuracy")
    axes[1, 0].set_ylabel("gain over CE")
    axes[0, -1].legend(fontsize=7)
    return fig


def learned_margins(train_margin: dict, counts: dict, settings, methods):
    """Mean training margin z_y − max_{j≠y} z_j per class, divided by its mean over the more
    frequent half of the classes (CE models are in logit units, cosine models in cosine units:
    only the profile compares; a negative value: the class is not fitted on average)."""
    fig, axes = subplots(1, len(settings), width=3.4, height=2.9, squeeze=False)
    for ax, (task, ratio) in zip(axes[0], settings):
        n = np.asarray(counts[(task, ratio)], dtype=float)
        head = np.argsort(n)[::-1][:len(n) // 2]
        for m in methods:
            g = np.asarray(train_margin[(task, ratio, m)])  # [seeds, classes]
            rel = (g / g[:, head].mean(1, keepdims=True)).mean(0)
            ax.plot(n, rel, color=METHOD_COLORS[m], marker=".", ms=4,
                    lw=1.0 if m in BASELINES else 1.8, ls="--" if m in BASELINES else "-",
                    label=METHOD_LABELS[m])
        ref = n ** -0.25
        ax.plot(n, ref / ref[head].mean(), color="k", ls=":", lw=1.2,
                label="$\\propto n_j^{-1/4}$")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(xlabel="training examples of the class (log scale)",
               title=setting_label(task, ratio))
        size_axis(ax, n)
    axes[0, 0].set_ylabel("training margin / head-half mean")
    axes[0, -1].legend(fontsize=7)
    return fig


def learning_curves(history: dict, settings, methods, switch_epoch: int):
    """Clean training accuracy (dashed) and balanced test accuracy (solid) over epochs, seed
    means, with the DRW switch marked. `history[(task, ratio, m)]` is a list (over seeds) of
    run histories."""
    fig, axes = subplots(1, len(settings), width=3.4, height=2.9, squeeze=False)
    for ax, (task, ratio) in zip(axes[0], settings):
        for m in methods:
            runs = history[(task, ratio, m)]
            epochs = [r["epoch"] for r in runs[0]]
            for key, ls in (("train_acc", "--"), ("test_acc", "-")):
                values = np.mean([[r[key] for r in h] for h in runs], 0)
                ax.plot(epochs, values, color=METHOD_COLORS[m], ls=ls, lw=1.4,
                        label=METHOD_LABELS[m] if key == "test_acc" else None)
        ax.axvline(switch_epoch, color="0.5", lw=0.8, ls=":")
        ax.annotate("DRW switch", (switch_epoch, 0.32), xytext=(-3, 0),
                    textcoords="offset points", ha="right", fontsize=7, color="0.4")
        ax.set(xlabel="epoch", ylim=(0.3, 1.01), title=setting_label(task, ratio))
    axes[0, 0].set_ylabel("accuracy (train dashed, test solid)")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    return fig
