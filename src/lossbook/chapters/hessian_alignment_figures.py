"""Figures of chapter 3 (Hessian alignment). Each function draws one figure and returns it."""

from __future__ import annotations

import statistics

import numpy as np

from lossbook.chapters.hessian_alignment import METHOD_LABELS, mean_std
from lossbook.plotting import PALETTE, subplots

METHOD_COLORS = {"erm": PALETTE[7], "irm": PALETTE[4], "vrex": PALETTE[2], "fishr": PALETTE[5],
                 "coral": PALETTE[3], "hgp": PALETTE[0], "hutchinson": PALETTE[1],
                 "gray": "#999999"}
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def identity(rows: list[dict]):
    """HGP's identity: relative error against explicit H·g, and the cost of avoiding H."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.6, height=3.0)
    for k, dtype in enumerate(("float32", "float64")):
        sel = [r for r in rows if r["dtype"] == dtype]
        ax1.loglog([r["params"] for r in sel], [max(r["err_hvp"], 1e-18) for r in sel], "o",
                   color=PALETTE[k], label=f"{dtype}: vs double-backward Hv")
        full = [r for r in sel if "err_full" in r]
        ax1.loglog([r["params"] for r in full], [max(r["err_full"], 1e-18) for r in full], "x",
                   color=PALETTE[k], ms=7, label=f"{dtype}: vs explicit H, then H·g")
        ax1.axhline(EPS[dtype], color=PALETTE[k], ls=":", lw=1)
        ax1.annotate(f"{dtype} machine ε", (max(r["params"] for r in rows), EPS[dtype] / 12),
                     fontsize=7, color=PALETTE[k], ha="right")
    ax1.set(xlabel="head parameters P", ylabel="relative error of ‖g‖·∇‖g‖",
            ylim=(1e-18, 1e-4), title="H·g = ‖g‖∇‖g‖ holds to machine precision")
    ax1.legend(fontsize=6, loc="center right")
    sel = sorted((r for r in rows if r["dtype"] == "float64"), key=lambda r: r["params"])
    ax2.loglog([r["params"] for r in sel], [r["t_hgp"] * 1e3 for r in sel], "o-",
               color=PALETTE[0], label="HGP: 2 backward passes")
    full = [r for r in sel if "t_full" in r]
    ax2.loglog([r["params"] for r in full], [r["t_full"] * 1e3 for r in full], "s-",
               color=PALETTE[1], label="explicit Hessian (P backward passes)")
    ax2.set(xlabel="head parameters P", ylabel="time (ms)", title="cost of H·g")
    ax2.legend(fontsize=7)
    return fig


def closed_form(check: dict):
    """Closed-form head Hessian (Kronecker structure) vs autograd."""
    fig, axes = subplots(1, 3, width=2.7, height=2.7)
    closed, auto = check["example"]["closed"], check["example"]["auto"]
    vmax = np.abs(closed).max()
    im = axes[0].imshow(closed, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    fig.colorbar(im, ax=axes[0], shrink=0.7)
    axes[0].set(title="closed form, 3 classes, d = 6", xticks=[], yticks=[],
                xlabel="W (class-major), then b")
    diff = np.abs(closed - auto)
    im = axes[1].imshow(np.log10(diff + 1e-20), cmap="viridis", vmin=-20, vmax=-14)
    fig.colorbar(im, ax=axes[1], shrink=0.7, label="log$_{10}$ |difference|")
    axes[1].set(title="|closed form − autograd|", xticks=[], yticks=[])
    rows = check["rows"]
    for k, dtype in enumerate(("float32", "float64")):
        sel = [r for r in rows if r["dtype"] == dtype]
        axes[2].semilogy(range(len(sel)), [max(r["err_hessian"], 1e-18) for r in sel], "o",
                         color=PALETTE[k], label=f"{dtype} Hessian")
        axes[2].semilogy(range(len(sel)), [max(r["err_grad"], 1e-18) for r in sel], "x",
                         color=PALETTE[k], label=f"{dtype} gradient")
        axes[2].axhline(EPS[dtype], color=PALETTE[k], ls=":", lw=1)
    sel = [r for r in rows if r["dtype"] == "float64"]
    axes[2].set_xticks(range(len(sel)), [f"C={r['classes']}\nd={r['d']}" for r in sel],
                       fontsize=6)
    axes[2].set(ylabel="relative error", ylim=(1e-18, 1e-4), title="all heads tested")
    axes[2].legend(fontsize=6)
    return fig


def hutchinson(checks: list[dict], marks: dict[str, int]):
    """Hutchinson's diagonal estimate: relative error vs probes, against the exact prediction."""
    fig, axes = subplots(1, len(checks), width=3.4, height=3.0, squeeze=False)
    for ax, check in zip(axes[0], checks):
        s = np.array(check["probes"])
        err = np.array(check["errors"])
        lo, hi = np.percentile(err, [10, 90], axis=1)
        ax.fill_between(s, lo, hi, color=PALETTE[0], alpha=0.2, lw=0)
        ax.loglog(s, err.mean(1), "o", color=PALETTE[0], label="measured (mean, 10–90 %)")
        ax.loglog(s, check["predicted"], "-", color=PALETTE[1],
                  label="exact: √(Σ_{i≠j} H_ij² / S) / ‖diag H‖")
        for name, value in marks.items():
            ax.axvline(value, color="0.5", ls=":", lw=1)
            ax.annotate(name, (value * 1.08, ax.get_ylim()[1] * 0.5), fontsize=7, rotation=90,
                        va="top", color="0.35")
        ax.set(xlabel="probes S", title=check["title"])
    axes[0, 0].set_ylabel("relative error of diag estimate")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    return fig


def environments(envs, train_e, test_e, n_show: int = 3):
    """Example inputs (the two colour channels) and what colour and shape predict."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.7, height=3.0)
    x, y = envs.train[0]
    shown = [int(i) for i in np.concatenate([np.nonzero(y.cpu().numpy() == c)[0][:n_show]
                                             for c in (0, 1)])]
    for row, i in enumerate(shown):
        signal = x[i].cpu().numpy()
        offset = -2.5 * row
        ax1.plot(signal[0] + offset, color="#C0392B", lw=1.2)
        ax1.plot(signal[1] + offset, color="#27AE60", lw=1.2)
        ax1.annotate(f"y={int(y[i])}", (41, offset), fontsize=7, va="center")
    ax1.set(yticks=[], xlabel="position", title="inputs: red channel / green channel")
    names = [f"train e={e:g}" for e in train_e] + [f"test e={test_e:g}"]
    colour = [1 - e for e in train_e] + [1 - test_e]
    xs = np.arange(len(names))
    ax2.bar(xs - 0.18, colour, 0.36, color=PALETTE[1], label="colour alone: 1 − e")
    ax2.bar(xs + 0.18, [0.75] * len(names), 0.36, color=PALETTE[0],
            label="shape alone: ≤ 0.75 (25 % label flips)")
    ax2.set_xticks(xs, names, fontsize=8)
    ax2.set(ylim=(0, 1.05), ylabel="accuracy of the best predictor",
            title="colour is the easier, not the stable, cue")
    ax2.legend(fontsize=7, loc="upper right")
    return fig


def accuracy_bars(summary: dict, methods, regime_names: dict):
    """Train / test / gray accuracy per method (mean ± std over restarts), one panel per rule."""
    regimes = list(regime_names)
    fig, axes = subplots(1, len(regimes), width=3.6, height=3.2, squeeze=False, sharey=True)
    metrics = [("train", "train", PALETTE[7]), ("test", "test (e = 0.9)", PALETTE[1]),
               ("gray", "grayscale test", PALETTE[0])]
    xs = np.arange(len(methods))
    for ax, regime in zip(axes[0], regimes):
        for k, (metric, name, color) in enumerate(metrics):
            stats = [summary[m][regime][metric] for m in methods]
            ax.bar(xs + (k - 1) * 0.27, [s[0] for s in stats], 0.27, yerr=[s[1] for s in stats],
                   color=color, label=name, capsize=2, error_kw={"lw": 0.8})
        ax.axhline(0.75, color="0.3", ls="--", lw=0.8)
        ax.axhline(0.5, color="0.3", ls=":", lw=0.8)
        ax.set_xticks(xs, [label(m).replace(" (oracle)", "\n(oracle)") for m in methods],
                      fontsize=7, rotation=35, ha="right")
        ax.set(title=regime_names[regime], ylim=(0, 1))
    axes[0, 0].set_ylabel("accuracy (mean ± std over restarts)")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=8)
    return fig


def training_curves(histories: dict, methods, anneal: int):
    """Test accuracy, the two relative head-Hessian distances and the Hessian's size over
    training (mean over restarts), 2 × 2 panels."""
    fig, axes = subplots(2, 2, width=3.3, height=2.6)
    axes = list(axes.flat)
    keys = [("test", "test accuracy (e = 0.9)"),
            ("hrel_train", "‖H_e − H̄‖_F / ‖H̄‖_F (training envs)"),
            ("hrel_test", "‖H_test − H̄‖₂ / ‖H̄‖₂"),
            ("hscale", "‖H̄‖_F (size of the head Hessian)")]
    for m in methods:
        runs = histories[m]
        steps = [h["step"] for h in runs[0]]
        for ax, (key, _) in zip(axes, keys):
            curve = np.mean([[h[key] for h in run] for run in runs], axis=0)
            ax.plot(steps, curve, color=METHOD_COLORS[m], label=label(m), lw=1.3)
    for ax, (key, title) in zip(axes, keys):
        ax.axvline(anneal, color="0.5", ls=":", lw=1)
        ax.set(xlabel="step", title=title)
        if key != "test":
            ax.set_yscale("log")
    axes[0].legend(fontsize=6)
    return fig


def hutchinson_parts(histories: dict, methods, anneal: int, probes: int):
    """The two parts of the expected Hutchinson penalty over training (mean over restarts):
    diagonal mismatch (what the penalty means to align) and the probe noise (1/S) times the
    off-diagonal energy, which only a smaller Hessian reduces."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.4, height=2.8, sharey=True)
    for m in methods:
        runs = histories[m]
        steps = [h["step"] for h in runs[0]]
        for ax, key in ((ax1, "hutch_signal"), (ax2, "hutch_noise")):
            curve = np.mean([[h[key] for h in run] for run in runs], axis=0)
            ax.plot(steps, curve, color=METHOD_COLORS[m], label=label(m), lw=1.3)
    ax1.set(title="signal: Σ_e ‖diag H_e − diag H̄‖²", xlabel="step", yscale="log",
            ylabel="part of the expected penalty")
    ax2.set(title=f"noise: off-diagonal energy / S (S = {probes})", xlabel="step")
    for ax in (ax1, ax2):
        ax.axvline(anneal, color="0.5", ls=":", lw=1)
    ax2.legend(fontsize=6)
    return fig


def fixed_feature_transfer(points: dict, rho: list[float]):
    """Frozen features of every final model: relative spectral Hessian distance between target
    and source at the source-optimal head, against the transfer gap (markers: restarts)."""
    fig, ax = subplots(1, 1, width=4.6, height=3.2)
    markers = "osD^vP*Xh"
    for m, runs in points.items():
        for r, t in enumerate(runs):
            ax.scatter(t["hrel"], t["gap"], color=METHOD_COLORS[m], marker=markers[r % 9],
                       s=22, label=label(m) if r == 0 else None, alpha=0.85)
    ax.set(xlabel="‖H_T − H_S‖₂ / ‖H_S‖₂ at the source head θ_S",
           ylabel="transfer gap L_T(θ_S) − L_T(θ_T)",
           title="per-restart Spearman ρ: " + ", ".join(f"{v:.1f}" for v in rho))
    ax.legend(fontsize=7)
    return fig


def diversity(table: dict, methods, domain_names):
    """Leave-one-domain-out test accuracy per held-out domain (mean ± std over restarts)."""
    fig, ax = subplots(1, 1, width=6.4, height=3.0)
    xs = np.arange(len(domain_names) + 1)
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        stats = [mean_std(table[m][d]) for d in domain_names]
        means = [s[0] for s in stats] + [statistics.fmean(s[0] for s in stats)]
        errs = [s[1] for s in stats] + [0.0]
        ax.bar(xs + (k - (len(methods) - 1) / 2) * width, means, width, yerr=errs, capsize=2,
               color=METHOD_COLORS[m], label=label(m), error_kw={"lw": 0.8})
    ax.set_xticks(xs, [*domain_names, "average"])
    ax.set(ylabel="test accuracy on the held-out domain", ylim=(0, 1),
           title="diversity shift: leave one MNIST-1D domain out")
    ax.legend(fontsize=7, ncol=len(methods))
    return fig
