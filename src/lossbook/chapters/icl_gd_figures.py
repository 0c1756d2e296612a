"""Figures of chapter 5 (transformers learn in-context by gradient descent). One function per
figure, each returning the figure."""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Rectangle

from lossbook.plotting import PALETTE, subplots

LSA_COLOR, GD_COLOR, GDPP_COLOR, GD1_COLOR = PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[4]


def token_labels(dim: int) -> list[str]:
    return [f"$x_{{{i + 1}}}$" for i in range(dim)] + ["$y$"]


def series(runs, key):
    """(steps, matrix seeds × evaluations) of a logged metric."""
    steps = np.array([h["step"] for h in runs[0][1]["history"]])
    return steps, np.array([[h[key] for h in result["history"]] for _, result in runs])


def line_search(curves: dict, closed_form_eta: float):
    """GD's test loss as a function of its step size η, for one and two steps."""
    fig, ax = subplots(1, 1, width=4.6, height=2.9)
    colors = {1: GD_COLOR, 2: GD1_COLOR}
    for steps, (etas, losses, best) in curves.items():
        ax.plot(etas, losses, color=colors.get(steps, PALETTE[3]),
                label=f"{steps} step{'s' if steps > 1 else ''} of GD")
        ax.plot(best[0], best[1], "o", color=colors.get(steps, PALETTE[3]), ms=5)
    ax.axvline(closed_form_eta, color="gray", ls=":", lw=1, label="closed-form η* (1 step)")
    ax.set(xlabel="step size η", ylabel="loss ½(y − ŷ)² (line-search tasks)", yscale="log",
           title="line search for the GD step size (dots: minimum)")
    ax.legend()
    return fig


def training(runs, gd_loss: float, title: str):
    """The paper's main comparison: LSA test loss against the 1-step-GD loss, and the
    alignment of predictions and sensitivities over training (one line per seed)."""
    fig, axes = subplots(1, 3, width=3.3, height=2.8)
    steps, loss = series(runs, "test_loss")
    for i, curve in enumerate(loss):
        axes[0].plot(steps, curve, color=LSA_COLOR, alpha=0.8, lw=1.2,
                     label="trained LSA" if i == 0 else None)
    axes[0].axhline(gd_loss, color=GD_COLOR, ls="--", label="1 step of GD (line search)")
    axes[0].set(xlabel="training step", ylabel="test loss", title=title)
    axes[0].legend()
    inset = axes[0].inset_axes([0.42, 0.3, 0.53, 0.35])
    late = steps >= steps[-1] / 5
    for curve in loss:
        inset.plot(steps[late], 100 * (curve[late] / gd_loss - 1), color=LSA_COLOR, lw=1)
    inset.axhline(0, color=GD_COLOR, ls="--", lw=1)
    inset.set_title("LSA above GD (%)", fontsize=7)
    inset.tick_params(labelsize=6)
    _, cos = series(runs, "cos_gd")
    for curve in cos:
        axes[1].plot(steps, curve, color=LSA_COLOR, alpha=0.8, lw=1.2)
    axes[1].set(xlabel="training step", ylabel="cosine", ylim=(-0.05, 1.05),
                title="cos(∂ŷ_LSA/∂x_q, ∂ŷ_GD/∂x_q)")
    inset = axes[1].inset_axes([0.45, 0.12, 0.5, 0.45])
    for curve in cos:
        inset.plot(steps, 1 - curve, color=LSA_COLOR, lw=1)
    inset.set(yscale="log", title="1 − cosine", xticks=[])
    inset.title.set_fontsize(7)
    inset.tick_params(labelsize=6)
    _, pred = series(runs, "pred_dist_rel_gd")
    _, sens = series(runs, "sens_dist_gd")
    for i, (p, s) in enumerate(zip(pred, sens)):
        axes[2].plot(steps, p, color=LSA_COLOR, lw=1.2, label="predictions" if i == 0 else None)
        axes[2].plot(steps, s / s[0], color=GD_COLOR, lw=1.2, ls="--",
                     label="sensitivities" if i == 0 else None)
    axes[2].set(xlabel="training step", ylabel="distance / distance at init", yscale="log",
                title="L2 distance LSA ↔ GD")
    axes[2].legend()
    return fig


def weights(panels: list[tuple[str, dict]], dim: int, mask_unused: bool = True):
    """Heat maps of W_KᵀW_Q and P W_V (normalised so that W_KᵀW_Q's input diagonal is 1) next to
    the construction. Hatched: entries that cannot reach a one-layer prediction."""
    fig, axes = subplots(2, len(panels), width=2.6, height=2.5)
    labels = token_labels(dim)
    for row, key in enumerate(("KQ", "PV")):
        vmax = max(np.abs(np.array(m[key])).max() for _, m in panels)
        for col, (title, mats) in enumerate(panels):
            ax = axes[row, col]
            image = ax.imshow(np.array(mats[key]), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks(range(dim + 1), labels, fontsize=6)
            ax.set_yticks(range(dim + 1), labels, fontsize=6)
            ax.grid(False)
            name = "$W_K^T W_Q$" if key == "KQ" else "$P W_V$"
            ax.set_title(f"{title}: {name}", fontsize=8)
            if mask_unused and mats.get("trained"):
                unused = (Rectangle((dim - 0.5, -0.5), 1, dim + 1) if key == "KQ"
                          else Rectangle((-0.5, -0.5), dim + 1, dim))
                unused.set(fill=False, hatch="///", edgecolor="gray", lw=0, alpha=0.6)
                ax.add_patch(unused)
        fig.colorbar(image, ax=axes[row, :].tolist(), shrink=0.85)
    return fig


def ood(runs, train_range_label: str):
    """The paper's out-of-distribution test: loss when inputs come from a scaled range α·U, for the
    trained one-layer LSA (one line per seed) and one step of GD, and their ratio."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.8, height=2.9)
    scale = np.array(runs[0][1]["ood"]["scale"])
    ax1.plot(scale, runs[0][1]["ood"]["gd"], color=GD_COLOR, ls="--", lw=2.5,
             label="1 step of GD (η*)")
    for i, (_, result) in enumerate(runs):
        ax1.plot(scale, result["ood"]["lsa"], color=LSA_COLOR, marker="o", ms=2.5, lw=1,
                 label="trained LSA" if i == 0 else None)
        ax2.plot(scale, np.array(result["ood"]["lsa"]) / np.array(result["ood"]["gd"]),
                 color=LSA_COLOR, marker="o", ms=2.5, lw=1)
    for ax in (ax1, ax2):
        ax.axvline(1.0, color="gray", lw=0.8, ls=":")
    ax2.axhline(1.0, color=GD_COLOR, ls="--", lw=1)
    ax2.axhspan(0.9, 1.1, color="gray", alpha=0.12, lw=0)
    ax1.set(xlabel=f"input scale α (x ~ α·{train_range_label})", ylabel="test loss",
            yscale="log", title="larger or smaller inputs than in training")
    ax2.set(xlabel="input scale α", ylabel="loss(LSA) / loss(GD)", ylim=(0.8, 1.2),
            title="ratio (grey: the ±10 % verdict band)")
    ax1.legend()
    return fig


def deep(runs, ref_loss: dict, one_step_loss: float, layers: int):
    """A trained multi-layer LSA against GD and GD++ with as many steps as it has layers."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.8, height=2.9)
    steps, loss = series(runs, "test_loss")
    for i, curve in enumerate(loss):
        ax1.plot(steps, curve, color=LSA_COLOR, lw=1.2,
                 label=f"trained {layers}-layer LSA" if i == 0 else None)
    ax1.axhline(one_step_loss, color=GD1_COLOR, ls="-.", lw=1, label="1 step of GD")
    ax1.axhline(ref_loss["gd"], color=GD_COLOR, ls="--", label=f"{layers} steps of GD")
    ax1.axhline(ref_loss["gdpp"], color=GDPP_COLOR, ls=":", lw=2,
                label=f"{layers} steps of GD++")
    ax1.set(xlabel="training step", ylabel="test loss",
            ylim=(0.8 * ref_loss["gdpp"], 1.3 * one_step_loss),
            title=f"{layers} layers vs {layers} steps")
    ax1.legend(fontsize=7)
    for key, color, name in (("gd", GD_COLOR, "GD"), ("gdpp", GDPP_COLOR, "GD++")):
        _, cos = series(runs, f"cos_{key}")
        for i, curve in enumerate(cos):
            ax2.plot(steps, curve, color=color, lw=1.2, label=f"vs {name}" if i == 0 else None)
    ax2.set(xlabel="training step", ylabel="cosine of sensitivities", ylim=(-0.05, 1.05),
            title="whose sensitivities does it share?")
    ax2.legend()
    return fig


def plateau(groups: dict, checks: dict):
    """The last part of each training curve, relative to its final window's mean, with the two
    windows of the plateau check shaded (one panel per group, one line per seed)."""
    fig, axes = subplots(1, len(groups), width=3.3, height=2.6, squeeze=False)
    for ax, (name, runs) in zip(axes[0], groups.items()):
        steps, loss = series(runs, "test_loss")
        start, middle, end = checks[name][0]["window"]
        shown = steps > start - (end - start) / 2
        for i, curve in enumerate(loss):
            ref = curve[steps > middle].mean()
            ax.plot(steps[shown], 100 * (curve[shown] / ref - 1), color=LSA_COLOR, lw=1,
                    alpha=0.8, label="seeds" if i == 0 else None)
        ax.axvspan(start, middle, color=GD_COLOR, alpha=0.12, label="window before")
        ax.axvspan(middle, end, color=GDPP_COLOR, alpha=0.15, label="last 10 %")
        for bound in (-1, 1):
            ax.axhline(bound, color="gray", ls=":", lw=1)
        ax.set(xlabel="training step", ylabel="test loss vs last window (%)", title=name)
    axes[0][0].legend(fontsize=7)
    return fig
