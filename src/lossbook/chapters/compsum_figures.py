"""Figures of chapter 1 (comp-sum losses). Each function draws one figure and returns it."""

from __future__ import annotations

import numpy as np

from lossbook import hconsistency as hc
from lossbook.chapters.compsum import group, mean_std
from lossbook.plotting import PALETTE, color_map, panel_grid, subplots

TAU_NAMES = {0.0: "sum-exp", 1.0: "CE", 2.0: "MAE"}


def tau_label(tau: float) -> str:
    name = TAU_NAMES.get(tau, "GCE" if 1 < tau < 2 else "")
    return f"τ={tau:g}" + (f" ({name})" if name else "")


def losses_vs_probability(taus):
    """ℓ_τ as a function of p_y, and of the margin h_y − h_other in the binary case."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.6)
    colors = color_map(taus)
    p = np.linspace(1e-3, 1, 500)
    margin = np.linspace(-6, 6, 500)
    for tau in taus:
        ax1.plot(p, hc.comp_sum_from_probs(p, tau), color=colors[tau], label=tau_label(tau))
        ax2.plot(margin, hc.comp_sum_from_probs(1 / (1 + np.exp(-margin)), tau),
                 color=colors[tau])
    ax1.set(xlabel="$p_y$ (softmax probability of the true class)", ylabel="$\\ell_\\tau$",
            ylim=(0, 6), title="loss vs true-class probability")
    ax2.set(xlabel="margin $h_y - h_{y'}$ (two classes)", ylim=(0, 6),
            title="loss vs margin")
    ax1.legend()
    return fig


def transforms(taus, ns=(2, 10, 100)):
    """T_τ(t) and Γ_τ(ε) = T_τ⁻¹(ε) for several class counts n (log–log for Γ)."""
    fig, axes = subplots(1, 2, width=3.6)
    colors = color_map(taus)
    styles = dict(zip(ns, ["-", "--", ":"]))
    t = np.linspace(0, 1, 400)
    eps = np.logspace(-6, 0, 200)
    for tau in taus:
        for n in ns:
            label = tau_label(tau) if n == ns[0] else None
            axes[0].plot(t, hc.T(t, tau, n), color=colors[tau], ls=styles[n], label=label)
            axes[1].loglog(eps, hc.Gamma(eps, tau, n), color=colors[tau], ls=styles[n])
    axes[0].set(xlabel="0-1 estimation error $t$", ylabel="$T_\\tau(t)$", yscale="log",
                ylim=(1e-4, 3), title="transform $T_\\tau$ (— n=2, -- n=10, ·· n=100)")
    axes[1].set(xlabel="surrogate estimation error $\\varepsilon$",
                ylabel="bound $\\Gamma_\\tau(\\varepsilon)$ on 0-1 error",
                title="$\\Gamma_\\tau$: √ε for τ<2; n-dependence for τ>1")
    axes[0].legend(fontsize=7)
    return fig


def calibration_check(results: dict, n: int):
    """Numerical calibration function (search over all p, q) against the recalled T_τ."""
    taus = list(results)
    fig, axes = panel_grid(len(taus), 3, width=2.6, height=2.3)
    for ax, tau in zip(axes, taus):
        t, estimate = results[tau]
        fine = np.linspace(0, 1, 200)
        ax.plot(fine, hc.T(fine, tau, n), color=PALETTE[0], label="$T_\\tau$ (paper)")
        ax.plot(t, estimate, "o", ms=3.5, color=PALETTE[1], label="numerical inf")
        ax.set(title=tau_label(tau), xlabel="t")
    axes[0].legend()
    axes[0].set_ylabel(f"smallest surrogate regret, n={n}")
    return fig


def minimizability(taus, n: int = 10):
    """Heat map of Φ^τ((n−1)e^{−2Λ}) over (τ, Λ), and C*_τ(p) for binary p."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.6)
    tau_grid = np.linspace(0, 2, 81)
    lam = np.linspace(0.1, 4, 80)
    gap = np.array([[hc.minimizability_gap_deterministic(t, n, l) for l in lam]
                    for t in tau_grid])
    image = ax1.pcolormesh(lam, tau_grid, np.log10(gap), shading="auto")
    fig.colorbar(image, ax=ax1, label="log$_{10}$ best-in-class τ-risk")
    ax1.set(xlabel="score bound Λ", ylabel="τ",
            title=f"$\\Phi^\\tau((n-1)e^{{-2\\Lambda}})$, n={n}")
    colors = color_map(taus)
    p1 = np.linspace(0, 1, 201)
    p = np.stack([p1, 1 - p1], axis=1)
    for tau in taus:
        ax2.plot(p1, hc.conditional_risk_inf(p, tau), color=colors[tau], label=tau_label(tau))
    ax2.set(xlabel="$p(y=1\\,|\\,x)$", ylabel="$C^*_\\tau(p)$", title="best conditional risk")
    ax2.legend(fontsize=7)
    return fig


def bound_scatter(points: dict, taus, classes):
    """(τ-excess, 0-1 excess) of exact population risks on log–log axes, under Γ_τ.

    Only the range where the bound is informative is drawn: beyond T_τ(1), Γ_τ = 1.
    """
    fig, axes = panel_grid(len(classes) * len(taus), 3, width=2.6, height=2.2, sharey=True)
    for k, (n, tau) in enumerate((n, tau) for n in classes for tau in taus):
        ax = axes[k]
        s, z = points[(n, tau)]
        limit = float(hc.T(1.0, tau, n))
        shown = (s > 0) & (z > 0) & (s <= limit)
        ax.loglog(s[shown], z[shown], ".", ms=2, alpha=0.3, color=PALETTE[0], rasterized=True)
        grid = np.logspace(-6, np.log10(limit), 200)
        ax.loglog(grid, hc.Gamma(grid, tau, n), color=PALETTE[1], lw=1.4)
        ax.set(xlim=(1e-6, limit * 1.2), ylim=(1e-4, 1.2))
        ax.set_title(f"n={n}, {tau_label(tau)}", fontsize=8)
        if k % 3 == 0:
            ax.set_ylabel("0-1 excess")
        if k >= len(axes) - 3:
            ax.set_xlabel("τ-excess")
        ax.tick_params(labelsize=7)
    return fig


def accuracy_vs_tau(specs, results, tasks, task_names):
    """Test accuracy (mean ± std over seeds) against τ, one line per task."""
    fig, ax = subplots(1, 1, width=5.5, height=3.2)
    for k, task in enumerate(tasks):
        groups = group([s for s in specs if s["task"] == task],
                       [r for s, r in zip(specs, results) if s["task"] == task],
                       ("tau",), "test_acc")
        taus = [key[0] for key in groups]
        stats = [mean_std(v) for v in groups.values()]
        ax.errorbar(taus, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                    capsize=3, color=PALETTE[k], label=task_names.get(task, task))
    ax.set(xlabel="τ  (0 sum-exp · 1 CE · (1,2) GCE · 2 MAE)", ylabel="test accuracy",
           title="comp-sum losses: test accuracy vs τ (mean ± std over seeds)")
    ax.legend()
    return fig


def learning_curves(specs, results, tasks, task_names):
    """Test accuracy over epochs, one panel per task, one line per τ (seed mean)."""
    fig, axes = subplots(1, len(tasks), width=3.0, height=2.6, squeeze=False)
    taus = sorted({s["tau"] for s in specs})
    colors = color_map(taus)
    for ax, task in zip(axes[0], tasks):
        for tau in taus:
            runs = [r["history"] for s, r in zip(specs, results)
                    if s["task"] == task and s["tau"] == tau]
            if not runs:
                continue
            epochs = [h["epoch"] for h in runs[0]]
            acc = np.mean([[h["test_acc"] for h in run] for run in runs], axis=0)
            ax.plot(epochs, acc, color=colors[tau], label=tau_label(tau), marker=".")
        ax.set(title=task_names.get(task, task), xlabel="epoch")
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, -1].legend(fontsize=6)
    return fig


METHOD_STYLE = {"standard": ("s", "standard training"), "pgd_at": ("D", "PGD-AT"),
                "trades": ("o", "TRADES (β)"), "adv_comp_sum": ("^", "ADV-COMP-SUM (ν)")}


def pareto(points: dict, eps: float, attack: str):
    """Clean vs robust accuracy per method and trade-off weight (mean ± std over seeds)."""
    fig, ax = subplots(1, 1, width=5.5, height=3.6)
    for k, method in enumerate(METHOD_STYLE):
        rows = [(w, v) for (m, w), v in points.items() if m == method]
        if not rows:
            continue
        marker, label = METHOD_STYLE[method]
        rows.sort()
        clean = [v["clean"][0] for _, v in rows]
        robust = [v["robust"][0] for _, v in rows]
        ax.errorbar(clean, robust, xerr=[v["clean"][1] for _, v in rows],
                    yerr=[v["robust"][1] for _, v in rows], marker=marker, capsize=2,
                    ls="-" if len(rows) > 1 else "none", color=PALETTE[k], label=label)
        if method in ("trades", "adv_comp_sum"):
            for (w, _), x, y in zip(rows, clean, robust):
                ax.annotate(f"{w:g}", (x, y), textcoords="offset points", xytext=(4, 3),
                            fontsize=7, color=PALETTE[k])
    ax.set(xlabel="clean test accuracy", ylabel=f"{attack} accuracy (ε={eps:g})",
           title="robustness–accuracy trade-off (up and right is better)")
    ax.legend()
    return fig


def class_count(specs, results, taus):
    """Test (solid) and training (dashed) accuracy against the number of classes n of one
    mixture generator, one colour per τ (mean ± std over seeds)."""
    fig, ax = subplots(1, 1, width=5.5, height=3.4)
    colors = color_map(list(taus))
    for tau in taus:
        for metric, style in (("test_acc", "-"), ("train_acc", "--")):
            groups = group([s for s in specs if s["tau"] == tau],
                           [r for s, r in zip(specs, results) if s["tau"] == tau],
                           ("gmm_classes",), metric)
            ns = [key[0] for key in groups]
            stats = [mean_std(v) for v in groups.values()]
            ax.errorbar(ns, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                        capsize=3, ls=style, color=colors[tau],
                        label=f"{tau_label(tau)}{'' if metric == 'test_acc' else ', train'}")
    ax.set(xscale="log", xlabel="number of classes n (one mixture generator)",
           ylabel="accuracy", title="accuracy vs number of classes (dashed: training set)")
    ax.set_xticks(sorted({s["gmm_classes"] for s in specs}))
    ax.set_xticklabels([str(n) for n in sorted({s["gmm_classes"] for s in specs})])
    ax.legend(fontsize=7, ncol=2)
    return fig
