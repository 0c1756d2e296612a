"""Figures of chapter 4 (additive margins for contrastive self-supervised speaker verification).
Each function draws one figure and returns it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from lossbook import contrastive, verification
from lossbook.chapters.am_ssl_sv import HIST_BINS, label
from lossbook.plotting import PALETTE, subplots


def shades(keys, cmap: str) -> dict:
    """Visible shades of one colour map (light to dark) for an ordered family of margins."""
    keys = list(keys)
    return dict(zip(keys, plt.get_cmap(cmap)(np.linspace(0.45, 0.95, max(2, len(keys)))
                                              [-len(keys):])))


def margin_transforms(am_margins, aam_margins, scale: float):
    """s·ψ(cos θ) for AM and AAM over θ ∈ [0, π], and the slope dψ/dcos θ that backprop sees."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.7)
    theta = np.linspace(1e-4, np.pi, 2000)
    c = torch.as_tensor(np.cos(theta), dtype=torch.float64)
    ax1.plot(theta, scale * c.numpy(), color="black", label="no margin")
    ax2.axhline(1.0, color="black", lw=1.2, label="no margin / AM (slope 1)")
    am_colors = shades(am_margins, "Blues")
    aam_colors = shades(aam_margins, "Oranges")
    for m in am_margins:
        ax1.plot(theta, scale * contrastive.positive_logit(c, m, "am").numpy(),
                 color=am_colors[m], ls="--", label=f"AM m={m:g}")
    for m in aam_margins:
        ax1.plot(theta, scale * contrastive.positive_logit(c, m, "aam").numpy(),
                 color=aam_colors[m], label=f"AAM m={m:g}")
        cc = c.clone().requires_grad_(True)
        slope, = torch.autograd.grad(contrastive.positive_logit(cc, m, "aam").sum(), cc)
        ax2.plot(theta, slope.numpy(), color=aam_colors[m], label=f"AAM m={m:g}")
    ax1.set(xlabel="angle θ between the two views (rad)", ylabel=f"positive logit (s={scale:g})",
            title="margin on the positive logit")
    ax2.set(xlabel="angle θ between the two views (rad)", ylabel="dψ/d cos θ", yscale="log",
            xlim=(0, 1.0), ylim=(0.5, 1e3), title="AAM slope = cos m + sin m·cot θ → ∞ as θ → 0")
    ax1.legend(fontsize=6.5, ncol=2, loc="lower left")
    ax2.legend(fontsize=7)
    return fig


def pair_counts(batch_sizes):
    """Anchors, positive pairs and negative pairs per batch for NT-Xent and SNT-Xent."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.4)
    n = np.asarray(batch_sizes)
    for symmetric, color, name in ((False, PALETTE[0], "NT-Xent"), (True, PALETTE[1], "SNT-Xent")):
        counts = [contrastive.pair_counts(int(k), symmetric) for k in n]
        ax1.loglog(n, [c["anchors"] for c in counts], color=color, label=f"{name}: anchors")
        ax1.loglog(n, [c["negatives"] for c in counts], color=color, ls="--",
                   label=f"{name}: negative pairs")
        ax2.plot(n, [c["negatives_per_anchor"] for c in counts], color=color, label=name)
    ax1.axvline(256, color="grey", lw=0.8, ls=":")
    ax2.axvline(256, color="grey", lw=0.8, ls=":")
    ax1.set(xlabel="utterances per batch N", ylabel="count per batch",
            title="anchors (= positive pairs) and negatives")
    ax2.set(xlabel="utterances per batch N", ylabel="negatives per anchor",
            title="N − 1 vs 2(N − 1); dotted: N = 256")
    ax1.legend(fontsize=7)
    ax2.legend()
    return fig


def gaussian_check(d_primes, empirical: dict):
    """Closed-form EER and minDCF of equal-variance Gaussian scores vs our estimates on samples."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.4)
    fine = np.linspace(0.01, 5, 200)
    ax1.plot(fine, [verification.gaussian_eer(d) for d in fine], color=PALETTE[0],
             label="closed form Φ(−d′/2)")
    ax2.plot(fine, [verification.gaussian_min_dcf(d) for d in fine], color=PALETTE[0],
             label="closed form (exact minimisation)")
    d = np.asarray(d_primes)
    ax1.plot(d, [empirical[x]["eer"] for x in d_primes], "o", color=PALETTE[1], ms=4,
             label="verification.eer on samples")
    ax2.plot(d, [empirical[x]["min_dcf"] for x in d_primes], "o", color=PALETTE[1], ms=4,
             label="verification.min_dcf on samples")
    ax1.set(xlabel="separation d′ = (μ_target − μ_non-target)/σ", ylabel="EER (%)",
            title="EER")
    ax2.set(xlabel="separation d′", ylabel="minDCF (p_target = 0.01)", ylim=(0, 1.05),
            title="normalised minDCF")
    ax1.legend()
    ax2.legend()
    return fig


def calibration(levels, results, chosen: float, band=(0.0, 10.0)):
    """Baseline EER and minDCF against the generator's nuisance level, trained and untrained
    (the same initialisation before training: the floor); the EER band of the rule."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.5)
    for ax, metric, name in ((ax1, "eer", "EER (%)"), (ax2, "min_dcf", "minDCF")):
        ax.plot(levels, [r[metric] for r in results], "o-", color=PALETTE[0],
                label="NT-Xent baseline, trained")
        ax.plot(levels, [r[metric + "0"] for r in results], "s--", color=PALETTE[7],
                label="same encoder, untrained")
        ax.axvline(chosen, color=PALETTE[1], ls="--", label=f"book preset: λ = {chosen:g}")
        ax.set(xscale="log", xlabel="nuisance λ (× mnist1d defaults)", ylabel=name)
        ax.set_xticks(levels, [f"{x:g}" for x in levels])
        ax.minorticks_off()
    ax1.axhspan(*band, color=PALETTE[2], alpha=0.15, label=f"rule: EER ≤ {band[1]:g} %")
    ax1.set_title("EER, first seed")
    ax2.set_title("minDCF, first seed")
    ax1.legend(fontsize=7, loc="upper left")
    return fig


def paired_deltas(groups: dict, settings_by_scale: dict):
    """Seed-paired differences from SNT-Xent at the same scale (what the verdicts use): one line
    per seed, and the seed mean ± 2 standard errors, for EER, minDCF and the score gap."""
    from lossbook.chapters.am_ssl_sv import direction, paired_differences

    scales = list(settings_by_scale)
    fig, axes = subplots(3, len(scales), width=max(3.0, 0.4 * max(
        len(v) for v in settings_by_scale.values())), height=2.1, sharex="col", squeeze=False)
    colors = {"nt-xent": PALETTE[7], "snt-xent": PALETTE[0], "snt-xent-am": PALETTE[2],
              "snt-xent-aam": PALETTE[1]}
    for col, s in enumerate(scales):
        base = ("snt-xent", s, 0.0)
        settings = [k for k in settings_by_scale[s] if k != base]
        for row, (metric, name) in enumerate((("eer", "ΔEER (points)"), ("min_dcf", "ΔminDCF"),
                                              ("gap", "Δ score gap"))):
            ax = axes[row, col]
            ax.axhline(0, color=PALETTE[0], lw=0.9)
            for i, key in enumerate(settings):
                color = colors[key[0]]
                diffs = paired_differences(groups, [key], base, metric)
                diverged = sum(r["diverged"] for r in groups[key])
                if diffs and key != base:
                    mean, se, sign = direction(diffs)
                    ax.plot([i] * len(diffs), diffs, ".", color=color, ms=4, alpha=0.6)
                    ax.errorbar(i, mean, yerr=0 if np.isnan(se) else 2 * se, fmt="o",
                                color=color, ms=5, capsize=3, mfc=color if sign else "white")
                if diverged:
                    ax.annotate(f"{diverged} diverged", (i, 0), fontsize=6, color=PALETTE[1],
                                ha="center", va="bottom", rotation=90)
            ax.set_ylabel(name)
            if row == 0:
                ax.set_title(f"s = {s:g}: difference from SNT-Xent (paired by seed)")
        axes[-1, col].set_xticks(range(len(settings)),
                                 [label(k[0], k[2]).replace("SNT-Xent-", "") for k in settings],
                                 rotation=60, ha="right", fontsize=7)
    return fig


def det_curves(groups: dict, keys: list):
    """DET curves (probit axes), FNR averaged over seeds on a common FPR grid."""
    fig, ax = subplots(1, 1, width=4.4, height=3.6)
    colors = dict(zip(keys, PALETTE))
    for key in keys:
        runs = [r for r in groups[key] if not r["diverged"]]
        if not runs:
            continue
        fpr = np.asarray(runs[0]["det_fpr"])
        fnr = np.mean([r["det_fnr"] for r in runs], axis=0)
        ok = (fnr > 0) & (fnr < 1)
        eer = np.mean([r["eer"] for r in runs])
        ax.plot(stats.norm.ppf(fpr[ok]), stats.norm.ppf(fnr[ok]), color=colors[key],
                label=f"{label(key[0], key[2])}, s={key[1]:g} (EER {eer:.2f} %)")
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5])
    ax.set_xticks(stats.norm.ppf(ticks), [f"{t:g}" for t in ticks * 100])
    ax.set_yticks(stats.norm.ppf(ticks), [f"{t:g}" for t in ticks * 100])
    lim = stats.norm.ppf([5e-4, 0.6])
    ax.plot(lim, lim, color="grey", lw=0.6, ls=":")
    ax.set(xlim=lim, ylim=lim, xlabel="false alarm rate (%)", ylabel="miss rate (%)",
           title="DET curves (mean over seeds)")
    ax.legend(fontsize=7)
    return fig


def score_histograms(groups: dict, keys: list):
    """Target / non-target cosine-score histograms (all seeds pooled) with the mean gap."""
    fig, axes = subplots(1, len(keys), width=3.3, height=2.6, sharey=True, squeeze=False)
    centres = (HIST_BINS[1:] + HIST_BINS[:-1]) / 2
    width = HIST_BINS[1] - HIST_BINS[0]
    for ax, key in zip(axes[0], keys):
        runs = [r for r in groups[key] if not r["diverged"]]
        target = np.sum([r["hist_target"] for r in runs], axis=0)
        non = np.sum([r["hist_nontarget"] for r in runs], axis=0)
        ax.bar(centres, non / non.sum() / width, width=width, color=PALETTE[0], alpha=0.5,
               label="non-target")
        ax.bar(centres, target / target.sum() / width, width=width, color=PALETTE[1], alpha=0.5,
               label="target")
        mt = np.mean([r["mean_target"] for r in runs])
        mn = np.mean([r["mean_nontarget"] for r in runs])
        ax.axvline(mt, color=PALETTE[1], lw=1)
        ax.axvline(mn, color=PALETTE[0], lw=1)
        ax.set(title=f"{label(key[0], key[2])}, s={key[1]:g}\ngap {mt - mn:.3f}",
               xlabel="cosine score")
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend()
    return fig


def training_curves(groups: dict, keys: list):
    """Training loss and test EER along training (first seed of each setting)."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.5)
    colors = dict(zip(keys, PALETTE))
    for key in keys:
        run = groups[key][0]
        name = f"{label(key[0], key[2])}, s={key[1]:g}"
        if run["diverged"]:
            name += " (diverged)"
        hist = run["history"]
        if hist:
            ax1.plot([h["epoch"] for h in hist], [h["loss"] for h in hist], "o-", ms=3,
                     color=colors[key], label=name)
            ax2.plot([h["epoch"] for h in hist], [h["eer"] for h in hist], "o-", ms=3,
                     color=colors[key])
        else:
            ax1.plot([], [], color=colors[key], label=name)
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss (last batch)")
    ax2.set(xlabel="epoch", ylabel="EER on unseen identities (%)", title="EER along training")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside right center", fontsize=7)
    return fig


def plateau(groups: dict, keys: list):
    """Seed-mean test EER and minDCF along training (epoch 0: the untrained encoder), ± one
    standard deviation over seeds, for the settings `keys`."""
    fig, (ax1, ax2) = subplots(1, 2, width=3.5)
    colors = dict(zip(keys, PALETTE))
    for key in keys:
        runs = [r for r in groups[key] if not r["diverged"] and r["history"]]
        if not runs:
            continue
        epochs = [0] + [h["epoch"] for h in runs[0]["history"]]
        name = f"{label(key[0], key[2])}, s={key[1]:g}"
        for ax, metric in ((ax1, "eer"), (ax2, "min_dcf")):
            values = np.array([[r[metric + "0"]] + [h[metric] for h in r["history"]]
                               for r in runs])
            mean, sd = values.mean(0), values.std(0, ddof=1) if len(runs) > 1 else 0 * values[0]
            ax.plot(epochs, mean, "o-", ms=3, color=colors[key], label=name)
            ax.fill_between(epochs, mean - sd, mean + sd, color=colors[key], alpha=0.15, lw=0)
    ax1.set(xlabel="epoch (0: untrained)", ylabel="EER (%)", title="EER on unseen identities")
    ax2.set(xlabel="epoch (0: untrained)", ylabel="minDCF", title="minDCF ($p$ = 0.01)")
    ax1.legend(fontsize=7, loc="upper right")
    return fig


def scale_sweep(groups: dict, scales: list, margin: float, batch: int):
    """Left: seed-paired ΔEER of SNT-Xent-AM (margin) minus SNT-Xent against the scale s.
    Right: measured mean and largest positive-pair probability p_a of both, with the bound."""
    from lossbook.chapters.am_ssl_sv import (
        direction,
        paired_differences,
        positive_probability_bound,
    )

    fig, (ax1, ax2) = subplots(1, 2, width=3.5)
    ax1.axhline(0, color=PALETTE[0], lw=0.9)
    for i, s in enumerate(scales):
        am, base = ("snt-xent-am", s, margin), ("snt-xent", s, 0.0)
        if am not in groups or base not in groups:
            continue
        diffs = paired_differences(groups, [am], base, "eer")
        mean, se, sign = direction(diffs)
        ax1.plot([i] * len(diffs), diffs, ".", color=PALETTE[2], ms=4, alpha=0.6)
        ax1.errorbar(i, mean, yerr=0 if np.isnan(se) else 2 * se, fmt="o", color=PALETTE[2],
                     ms=5, capsize=3, mfc=PALETTE[2] if sign else "white")
    ax1.set_xticks(range(len(scales)), [f"{s:g}" for s in scales])
    ax1.set(xlabel="scale $s$", ylabel="ΔEER (points)",
            title=f"AM m = {margin:g} minus SNT-Xent")
    grid = np.geomspace(min(scales) / 1.5, max(scales) * 1.5, 100)
    for m, color, name in ((0.0, PALETTE[0], "SNT-Xent"), (margin, PALETTE[2], f"AM {margin:g}")):
        ax2.plot(grid, [positive_probability_bound(s, batch, m) for s in grid], "--",
                 color=color, lw=1, label=f"bound, {name}")
        key_loss = "snt-xent" if m == 0 else "snt-xent-am"
        pts = [(s, groups[(key_loss, s, m)]) for s in scales if (key_loss, s, m) in groups]
        for stat, marker in (("p_pos_mean", "o"), ("p_pos_max", "^")):
            xs = [s for s, runs in pts]
            ys = [np.mean([r[stat] for r in runs if r.get(stat) is not None]) for _, runs in pts]
            ax2.plot(xs, ys, marker, color=color, ms=5, mfc="white" if stat == "p_pos_max"
                     else color, label=f"{name}, {'mean' if stat == 'p_pos_mean' else 'max'}")
    ax2.set(xscale="log", xlabel="scale $s$", ylabel="$p_a$ (positive-pair probability)",
            title=f"saturation, N = {batch}")
    ax2.set_xticks(scales, [f"{s:g}" for s in scales])
    ax2.minorticks_off()
    ax2.legend(fontsize=6, loc="lower right")
    return fig
