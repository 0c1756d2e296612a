# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning imbalanced datasets with label-distribution-aware margin loss
#
# *Reproducing {cite:t}`cao2019ldam` (NeurIPS 2019).*
#
# When the training set is long-tailed but the test criterion weighs every class equally, a
# network trained with cross-entropy fits the rare classes as well as the frequent ones on the
# training set — and then generalises much worse on them. Cao, Wei, Gaidon, Arechiga and Ma
# propose two fixes:
#
# 1. **LDAM**, a *label-distribution-aware margin* loss: cross-entropy with the true-class logit
#    lowered by a class-dependent margin $\Delta_j \propto n_j^{-1/4}$, so rare classes must be
#    separated by a wider margin. The exponent comes from minimising a margin-based
#    generalisation bound.
# 2. **DRW**, *deferred re-weighting*: train with plain weights first, and switch to
#    class-balanced weights {cite}`cui2019classbalanced` only at the first learning-rate drop,
#    so that re-weighting adjusts the decision boundaries without spoiling the representation.
#
# Their claims: each idea alone improves on existing techniques and the combination, LDAM-DRW,
# does best; DRW beats re-weighting from the start; the gains are on the minority classes.
# This chapter implements both from the paper and its official code, re-derives the $n^{-1/4}$
# trade-off, and tests the claims on a long-tailed MNIST-1D {cite}`greydanus2020mnist1d` with a
# small 1-D CNN; the `full` preset runs the paper's CIFAR-10-LT / CIFAR-100-LT protocol with
# ResNet-32 {cite}`he2016resnet`. Two controls that are not in the paper separate LDAM's
# *label-aware* margin from what comes with it: the cosine classifier with no margin, and the
# same loss with one margin for every class.
#
# **What we could and could not check.** We read the official code (`kaidic/LDAM-DRW`, commit
# `2536330`: `losses.py`, `cifar_train.py`, `models/resnet_cifar.py`, `utils.py`,
# `imbalance_cifar.py`) and reimplemented every rule from it. Of the paper itself we could read
# the abstract and the introduction (the stored copies of arXiv 1906.07413 we could search
# return only the opening of the text, not its tables): the bound of §2 is stated as we recall
# it (its trade-off is re-derived and checked here), and every CIFAR-LT number quoted below is
# **recalled** from the paper's table of top-1 validation errors on imbalanced CIFAR (Table 2,
# as we recall its number) — those marked † could not be corroborated by an independent source
# either; the others appear, attributed to the paper, in public result listings we could read.

# %% tags=["parameters"]
preset = "book"
seed = 0
device = "auto"
overrides = {}

# %%
import dataclasses
import time

import numpy as np
from IPython.display import Markdown, display

import lossbook
from lossbook import data, margins
from lossbook.chapters import ldam_drw as C
from lossbook.chapters import ldam_drw_figures as figures
from lossbook.claims import code, markdown_table

ch = lossbook.start("06_ldam_drw", preset=preset, seed=seed, device=device, overrides=overrides)
cfg = ch.cfg
print(f"preset={ch.preset} seed={ch.seed} device={ch.device} workers={ch.workers}")

# %% [markdown]
# ## 1. The LDAM loss
#
# For logits $z\in\mathbb{R}^k$ and label $y$, LDAM is cross-entropy after subtracting a margin
# from the true-class logit (paper §3; our notation):
#
# $$
# \mathcal{L}_{\text{LDAM}}(z, y) = -\log\frac{e^{s(z_y-\Delta_y)}}{e^{s(z_y-\Delta_y)} +
# \sum_{j\neq y} e^{s z_j}},\qquad \Delta_j = \frac{C}{n_j^{1/4}},
# $$
#
# where $n_j$ is the number of training examples of class $j$. Following the official code,
# $C$ is set so that the largest margin (the rarest class) is $0.5$, the last layer is a
# **cosine classifier** — features and class weights are L2-normalised, so $z_j\in[-1,1]$ —
# and the cosines are multiplied by $s=30$. LDAM is thus an additive-margin softmax (CosFace
# {cite}`wang2018cosface`) with a class-dependent margin; it lives in `lossbook.margins` next to
# the additive angular margin (ArcFace {cite}`deng2019arcface`) other chapters use:
#
# ```{literalinclude} ../src/lossbook/margins.py
# :pyobject: ldam_margins
# ```
#
# ```{literalinclude} ../src/lossbook/margins.py
# :pyobject: ldam_loss
# ```
#
# The tests check the margins against the formula and the official normalisation, that the
# loss is exactly `cross_entropy` at zero margin and $s=1$, that only the true-class logit
# moves, and the official `NormedLinear` initialisation.
#
# ## 2. Why $n^{-1/4}$: the margin trade-off
#
# The paper's motivation (§3) is a margin-based generalisation bound on the *balanced* error.
# Writing $\gamma_j$ for the smallest margin of a training example of class $j$ and $C(\mathcal
# F)$ for a complexity measure of the hypothesis class, it reads, as we recall it and up to log
# terms,
#
# $$
# L_{\text{bal}}[f] \;\lesssim\; \frac1k\sum_{j=1}^k \frac{1}{\gamma_j}\sqrt{\frac{C(\mathcal
# F)}{n_j}}.
# $$
#
# For two separable classes, moving the decision boundary trades one class's margin for the
# other's with $\gamma_1+\gamma_2$ fixed. Minimising $1/(\gamma_1\sqrt{n_1}) +
# 1/(\gamma_2\sqrt{n_2})$ under that constraint gives (Lagrange: $1/(\gamma_j^2\sqrt{n_j})$ equal
# for both classes)
#
# $$
# \gamma_j^\star \propto n_j^{-1/4},
# $$
#
# so the rare class should get the *larger* margin — but only by the fourth root of the
# imbalance, not in proportion to it. LDAM transfers this to $k$ classes; under the analogous
# constraint $\sum_j\gamma_j$ fixed (our multi-class reading, not the paper's statement) the
# same Lagrange argument gives the same exponent. The left panel shows the two-class bound as
# the margin is split; the right panel the LDAM margins of the paper's CIFAR-LT settings,
# with the numerical minimiser of the multi-class bound as circles.

# %% mystnb={"figure": {"caption": "Left: the two-class margin bound against how the margin is split between the classes. Right: LDAM's margins $\\Delta_j$ against class size $n_j$ for several long tails, with the numerical minimiser of the multi-class bound (dots).", "name": "fig-06-margin-tradeoff"}, "image": {"alt": "Two panels: the bound against the margin split, and margins against class size on log axes with dots for the numerical optimum."}}
class_sets = {
    "CIFAR-10-LT, ρ=10": data.long_tail_counts(5000, 10, 10),
    "CIFAR-10-LT, ρ=100": data.long_tail_counts(5000, 10, 100),
    "CIFAR-100-LT, ρ=100": data.long_tail_counts(500, 100, 100),
}
fig = figures.margin_tradeoff(class_sets)

# %% [markdown]
# We check the closed form numerically: a bounded scalar minimisation of the two-class bound
# for imbalance ratios from 1 to 1000, and an L-BFGS minimisation of the multi-class bound for
# the three class-size profiles. The verdict rule: the closed form holds if every numerical
# optimum matches it to a relative error below $10^{-5}$.

# %%
tradeoff_rows, deviations = [], []
for ratio in (1, 2, 10, 100, 1000):
    numeric = C.two_class_optimum(100.0 * ratio, 100.0)
    formula = margins.optimal_margins([100.0 * ratio, 100.0])[0]
    deviations.append(abs(numeric / formula - 1))
    tradeoff_rows.append([f"two classes, n₁/n₂ = {ratio}", f"{numeric:.6f}", f"{formula:.6f}",
                          f"{deviations[-1]:.1e}"])
for label, counts in class_sets.items():
    numeric, formula = C.multiclass_optimum(counts), margins.optimal_margins(counts)
    deviations.append(float(np.abs(numeric / formula - 1).max()))
    tradeoff_rows.append([label, f"{numeric.min():.6f} … {numeric.max():.6f}",
                          f"{formula.min():.6f} … {formula.max():.6f}", f"{deviations[-1]:.1e}"])
display(Markdown(markdown_table(
    ["problem", "numerical optimum γ/Σγ", "n^(-1/4) formula", "max relative deviation"],
    tradeoff_rows)))
ch.claim("optimal_margins", "Margins minimising the class-margin bound scale as n_j^(−1/4)",
         paper="§3: optimal two-class margins γ_j = C/n_j^(1/4); LDAM uses Δ_j ∝ n_j^(−1/4)",
         ours=f"numerical minima match the closed form to {max(deviations):.1e} (two classes, "
              f"ratios 1–1000; multi-class under Σγ fixed for the CIFAR-LT profiles)",
         holds=max(deviations) < 1e-5, kind="identity", rule="relative deviation < 1e-5")

# %% [markdown]
# ## 3. Deferred re-weighting
#
# Class-balanced re-weighting {cite}`cui2019classbalanced` weights class $j$ by the inverse of
# its *effective number* of samples, $w_j \propto (1-\beta)/(1-\beta^{n_j})$, normalised so
# that $\sum_j w_j = k$: $\beta=0$ gives equal weights and $\beta\to1$ inverse class
# frequency. DRW uses $\beta=0$ until the switch epoch and $\beta=0.9999$ after it
# (official code: `idx = epoch // 160`, `betas = [0, 0.9999]`, 200 epochs). The switch sits at
# the first learning-rate drop of the official schedule — SGD with learning rate 0.1, a 5-epoch
# linear warm-up, and ×0.01 at epochs 160 and 180 — which we scale to our epoch budget.
#
# `lossbook.train.fit` takes one objective per call, and we did not want a special fit loop for
# one chapter. A run is therefore a sequence of `fit` calls, one per **phase** of constant
# learning rate and constant class weights. This reproduces the official per-epoch schedule;
# the differences from the official loop are that the SGD momentum buffer restarts at each
# phase boundary and that, as everywhere in this book, an epoch drops its last partial batch.
#
# ```{literalinclude} ../src/lossbook/chapters/ldam_drw.py
# :pyobject: phases
# ```

# %% mystnb={"figure": {"caption": "The official training schedule: learning rate over epochs (left) and the class weights before and after deferred re-weighting (right).", "name": "fig-06-schedule"}, "image": {"alt": "Two panels: a step learning-rate schedule, and class weights against class size before and after re-weighting."}}
specs = C.specs(cfg, seed, ch.device)
fig = figures.schedule(specs[0], data.long_tail_counts(cfg.max_per_class or 5000, 10,
                                                       max(cfg.ratios)), cfg.beta)

# %% [markdown]
# ## 4. Experiment
#
# **Data.** MNIST-1D (10 classes, 40-dimensional signals) generated offline. From its training
# split we draw, per seed, an exponentially long-tailed subset with $n_{(r)} = n_{\max}\,
# \rho^{-r/9}$ examples for the class of count rank $r = 0, \dots, 9$ — the profile of the
# paper's CIFAR-10-LT — for imbalance ratios $\rho = 10$ and $100$. **Which digit gets which
# count is a permutation drawn from the seed**: in the paper's CIFAR-LT class 0 is always the
# head and class 9 the tail, but MNIST-1D's digits differ in difficulty, and a fixed assignment
# would tie every tail result to one digit. We relabel each digit by its count rank, so all
# seeds share one per-label count vector (and one LDAM margin vector, which keeps the seed
# replicates trainable as one stacked model) while the digit behind each rank changes. The test
# set is balanced (the same number of examples of every class), so its accuracy is the balanced
# accuracy the paper reports.
#
# **Augmentation.** The paper trains CIFAR with random crops of a 4-pixel zero-padded image
# (and horizontal flips), so its network sees a fresh variant of each example in every epoch
# and does not simply memorise the long-tailed training set before the DRW switch. Our analogue
# for 1-D signals, drawn per batch from each run's own seeded generator: a random shift by up to
# 4 samples with zero padding (the crop) and Gaussian noise of standard deviation 0.1 (the
# signals are standardised; MNIST-1D has no mirror symmetry, so no flip). Both values were fixed
# before any run.
#
# **Model.** The three-convolution 1-D CNN of the library (the roster's setting; an MLP
# underfits MNIST-1D too much for accuracy gaps to mean anything). For LDAM runs, its last layer
# is the cosine classifier, as in the official code.
#
# **Methods.** Cross-entropy (CE, the paper's ERM); CE with class-balanced **re-weighting**
# from the start (CE-RW, the official `Reweight` rule); **CE-DRW**; **LDAM**; and
# **LDAM-DRW**. Two **controls**, not in the paper, isolate the label-aware part of LDAM:
# **Cos-CE**, cross-entropy on the same cosine classifier with the same scale $s=30$ and no
# margin; and **LDAM-uniform**, the LDAM loss with one margin for every class, equal to the
# **mean** of the LDAM margins $\Delta_j$ over the classes (so both losses ask for the same
# margin on average and differ only in how they distribute it), with and without DRW. A
# cosine-CE with DRW and class-balanced **re-sampling** (CE-RS, the official `Resample` rule)
# are implemented and run at the `smoke` and `full` presets; at `book` they did not fit in the
# time budget. All methods share the model, the optimiser and the schedule — the paper's,
# scaled from 200 to 60 epochs (see the preset table at the end); we report the final-epoch
# accuracy with no early stopping, mean ± standard deviation over seeds. Each (ratio, method,
# seed) is one cached run of `ldam_drw.run`; the seeds of a (ratio, method) train together as
# one stacked model (`lossbook.batched`, equal to the one-by-one runs: tested).
#
# **Verdict rules**, fixed before the runs: the book's claim protocol (`lossbook.claims`). Each
# claim is a seed-paired difference of balanced test accuracy (every method trains on the same
# seeds, long-tailed draws and class permutations), *held* when its 95 % Student-t interval
# over the seeds lies above 0, *not held* when it lies below 0, *inconclusive* otherwise; a
# claim must hold at every imbalance ratio and fails if it fails at one. The paper states no
# minimum effect, so every threshold is 0.
#
# - *Precondition of the DRW claims*: deferring the weights is meant to act before the network
#   has memorised its training set. At the switch epoch, every method's clean training accuracy
#   (mean over seeds) must be below 0.99 at every ratio; otherwise the claims that involve DRW
#   (the three below marked DRW) are reported *not tested*.
# - *LDAM-DRW is best* (DRW; "best of"): LDAM-DRW against the runner-up by mean among the
#   paper's methods (CE, CE-RW, CE-DRW, LDAM, LDAM-DRW; the controls are not candidates).
# - *LDAM alone improves on CE* and *DRW alone improves on CE* (DRW; CE-DRW vs CE).
# - *DRW helps more than re-weighting from the start* (DRW): CE-DRW − CE-RW.
# - *The gains concentrate in the tail*: per seed, LDAM-DRW's per-class accuracy gain over CE
#   averaged over the five rarest classes minus the gain averaged over the five most frequent.
# - *The label-aware margin beats the uniform margin* (the point of LDAM's $n_j^{-1/4}$ rule,
#   §3): LDAM − LDAM-uniform and LDAM-DRW − LDAM-uniform-DRW; held only if the interval lies
#   above 0 in all four (ratio, DRW or not) conditions, not held if it lies below 0 in one.
# - *The margin, not the cosine classifier, carries LDAM's gain* (a control, kind `context`):
#   LDAM − Cos-CE.
# - *LDAM widens the tail's margins* (the mechanism, not a numbered claim of the paper: kind
#   `context`): per seed, the ratio of the mean training margin of the five rarest classes to
#   that of the five most frequent, LDAM's minus CE's.

# %%
for task in cfg.tasks:  # generate (or download) each dataset once, before the workers start
    print(task, C.base_data(task, cfg.mnist1d_samples, cfg.data_dir, cfg.download))
results = ch.sweep(C.run, specs, desc="LDAM-DRW runs")
settings = [(task, ratio) for task in cfg.tasks for ratio in cfg.ratios]
methods = list(cfg.methods)
keys = ("task", "ratio", "method")
acc = C.group(specs, results, keys, "test_acc")
per_class_acc = C.group(specs, results, keys, "per_class_acc")
train_margin = C.group(specs, results, keys, "train_margin")
counts = {(t, r): C.group(specs, results, keys, "class_counts")[(t, r, methods[0])][0]
          for t, r in settings}
history = C.group(specs, results, keys, "history")
at_switch = {key: [C.train_acc_at({"history": h}, cfg.drw_epoch) for h in runs]
             for key, runs in history.items()}
tails = C.group(specs, results, keys, "class_order")[(*settings[0], methods[0])]
print("tail digit per seed:", [order[-1] for order in tails])
display(Markdown(markdown_table(
    ["method", *[figures.setting_label(t, r) for t, r in settings]],
    [[C.METHOD_LABELS[m], *["{:.3f} ± {:.3f} ({:.2f})".format(
        *C.mean_std(acc[(t, r, m)]), np.mean(at_switch[(t, r, m)])) for t, r in settings]]
     for m in methods])))

# %% mystnb={"figure": {"caption": "Balanced test accuracy per method: seed mean ± std (large marker) and every seed (dots); the dotted line is CE's mean. One panel per imbalance setting.", "name": "fig-06-balanced-accuracy"}, "image": {"alt": "Dot plots of balanced accuracy per method with error bars, one panel per imbalance setting."}}
fig = figures.balanced_accuracy(acc, settings, methods)

# %% [markdown]
# The table gives balanced test accuracy (mean ± std over seeds) and, in brackets, the mean
# clean training accuracy at the DRW switch epoch — the precondition of the DRW claims. The
# learning curves below show how it got there: with the augmentation no method has memorised
# its long-tailed training set when the weights switch.

# %% mystnb={"figure": {"caption": "Learning curves of the paper's methods: clean training accuracy (dashed) and balanced test accuracy (solid), seed means, logged every 10 epochs and at each phase boundary; the dotted line is the DRW switch (and the first learning-rate drop).", "name": "fig-06-learning-curves"}, "image": {"alt": "Accuracy against epoch for several methods, training dashed and test solid, one panel per imbalance ratio, with a vertical line at the switch epoch."}}
paper_methods = [m for m in methods if m in C.PAPER_METHODS]
fig = figures.learning_curves(history, settings, [m for m in ("ce", "ce_drw", "ldam", "ldam_drw")
                                                  if m in methods], cfg.drw_epoch)

# %% [markdown]
# Where do the gains come from? The top row shows each class's test accuracy against its
# number of training examples, the bottom row each method's seed-paired gain over CE. Because
# the digit behind each count rank is redrawn per seed, a point averages over different digits
# and class size is no longer confounded with one digit's difficulty.

# %% mystnb={"figure": {"caption": "Top: per-class test accuracy against class size. Bottom: gain over CE, paired by seed. One column per setting.", "name": "fig-06-per-class"}, "image": {"alt": "A two-row grid: per-class accuracy against class size, and gains over cross-entropy, one column per setting."}}
fig = figures.per_class(per_class_acc, counts, settings, paper_methods)

# %% [markdown]
# And what does LDAM do to the margins? For every training example we take the margin
# $z_y - \max_{j\neq y} z_j$ of the trained model and average it per class. CE models output
# logits and the cosine-classifier models cosines, so we divide each model's per-class margins
# by their mean over the five most frequent classes and compare profiles; the dotted line is
# the $n_j^{-1/4}$ profile LDAM enforces. The two controls show what the cosine classifier
# alone (Cos-CE) and a margin that ignores the label distribution (LDAM-uniform) do to the
# profile.

# %% mystnb={"figure": {"caption": "Mean training margin $z_y - \\max_{j\\ne y} z_j$ per class, divided by its mean over the more frequent half of the classes (only the profile compares: CE is in logit units, the cosine models in cosine units); below 0, a class is not fitted on average.", "name": "fig-06-learned-margins"}, "image": {"alt": "Line plots of relative training margin against class size per method, one panel per setting."}}
fig = figures.learned_margins(train_margin, counts, settings,
                              [m for m in ("ce", "cos", "ldam_uni", "ldam") if m in methods])

# %% [markdown]
# ## 5. The claims


# %%
def tag(setting) -> str:
    return figures.setting_label(*setting) if len(cfg.tasks) > 1 else f"ρ={setting[1]:g}"


def have(*ms: str) -> bool:
    return all(m in methods for m in ms)


def per_setting(method: str) -> dict:
    return {tag(s): acc[(*s, method)] for s in settings} if have(method) else {}


def halves(values, setting) -> tuple[float, float]:
    """Mean of a per-class array over the most frequent half and the rarest half."""
    order = np.argsort(counts[setting])[::-1]  # most frequent first
    half = len(order) // 2
    values = np.asarray(values)
    return float(values[order[:half]].mean()), float(values[order[-half:]].mean())


switch_max = {s: max(np.mean(at_switch[(*s, m)]) for m in methods) for s in settings}
drw_ok = all(v < 0.99 for v in switch_max.values())
switch_text = "; ".join(f"{tag(s)}: {v:.3f}" for s, v in switch_max.items())
print(f"precondition (every method's mean clean training accuracy at the switch < 0.99): "
      f"{'met' if drw_ok else 'NOT met'} — highest: {switch_text}")
drw_note = "" if drw_ok else f"precondition failed: training accuracy at the switch {switch_text}"


def if_drw(values: dict) -> dict:
    """The evidence of a claim involving DRW: empty (not tested) when the precondition fails."""
    return values if drw_ok else {}


ch.claim_best("ldam_drw_best", "LDAM-DRW is the most accurate method on balanced test data",
              paper="Table 2 (recalled): lowest error on every CIFAR-LT setting (e.g. "
                    "CIFAR-10-LT ρ=100: 22.97 vs 29.64 for ERM)",
              values=if_drw({tag(s): {C.METHOD_LABELS[m]: acc[(*s, m)] for m in paper_methods}
                             for s in settings}) if have("ldam_drw") and len(paper_methods) > 1
              else {},
              best=C.METHOD_LABELS["ldam_drw"], note=drw_note)
ch.claim_effect("ldam_alone", "LDAM alone improves on cross-entropy",
                paper="Table 2 (recalled): LDAM 26.65 vs ERM 29.64 error (CIFAR-10-LT ρ=100); "
                      "'either of these methods alone can already improve' (abstract)",
                ours="LDAM − CE", a=per_setting("ldam") if have("ce") else {},
                b=per_setting("ce"))
ch.claim_effect("drw_alone", "DRW alone improves on cross-entropy",
                paper="'either of these methods alone can already improve' (abstract; ERM-DRW "
                      "numbers not available to us)",
                ours="CE-DRW − CE", a=if_drw(per_setting("ce_drw")) if have("ce") else {},
                b=per_setting("ce"), note=drw_note)
ch.claim_effect("drw_vs_rw", "Deferred re-weighting beats re-weighting from the start",
                paper="deferring re-weighting/re-sampling beats RW/RS from the start (ablation, "
                      "recalled; e.g. CB RW 27.63† vs LDAM-DRW 22.97 on CIFAR-10-LT ρ=100)",
                ours="CE-DRW − CE-RW", a=if_drw(per_setting("ce_drw")) if have("ce_rw") else {},
                b=per_setting("ce_rw"), note=drw_note)
tail_ok = have("ldam_drw", "ce")
tail_minus_head = {
    tag(s): [np.subtract(*halves(np.subtract(g, c), s)[::-1])
             for g, c in zip(per_class_acc[(*s, "ldam_drw")], per_class_acc[(*s, "ce")])]
    for s in settings} if tail_ok else {}
mean_halves = {s: halves(np.mean(np.subtract(per_class_acc[(*s, "ldam_drw")],
                                             per_class_acc[(*s, "ce")]), 0), s)
               for s in settings} if tail_ok else {}
ch.claim_effect("tail_gains", "LDAM-DRW's gains over CE concentrate in the minority classes",
                paper="per-class error figure (step-imbalanced CIFAR-10, recalled): the "
                      "improvement is on the minority classes",
                ours="mean gain head-half / tail-half: " + "; ".join(
                    f"{tag(s)}: {h:+.3f} / {t:+.3f}" for s, (h, t) in mean_halves.items())
                + "; tail − head gain per seed", a=tail_minus_head)
label_aware = {}
for plain, uniform in (("ldam", "ldam_uni"), ("ldam_drw", "ldam_uni_drw")):
    if have(plain, uniform) and (plain == "ldam" or drw_ok):
        for s in settings:
            label_aware[f"{tag(s)}, {C.METHOD_LABELS[plain]}"] = np.subtract(
                acc[(*s, plain)], acc[(*s, uniform)]).tolist()
ch.claim_effect("label_aware", "The label-aware margin beats a uniform margin of the same mean",
                paper="§3 (recalled): the margins Δ_j ∝ n_j^(−1/4) minimise the bound, so rarer "
                      "classes should get larger margins than a uniform margin gives them",
                ours="LDAM − LDAM-uniform (and with DRW)", a=label_aware,
                note="" if drw_ok else "DRW conditions left out: " + drw_note)
ch.claim_effect("margin_not_cosine", "The margin adds to the cosine classifier: LDAM beats "
                "Cos-CE", paper="a control, not in the paper: the official code pairs LDAM with "
                "the cosine classifier", ours="LDAM − Cos-CE",
                a=per_setting("ldam") if have("cos") else {}, b=per_setting("cos"),
                kind="context")


def tail_margin_ratio(margins_) -> float:
    head, tail = halves(margins_, setting_)
    return tail / head


margin_ok = have("ldam", "ce")
ratio_diff = {}
for setting_ in settings if margin_ok else []:
    ratio_diff[tag(setting_)] = [
        tail_margin_ratio(m_ldam) - tail_margin_ratio(m_ce)
        for m_ldam, m_ce in zip(train_margin[(*setting_, "ldam")],
                                train_margin[(*setting_, "ce")])]
ch.claim_effect("tail_margins", "LDAM gives the minority classes relatively larger training "
                "margins",
                paper="the design goal of LDAM: larger margins for rarer classes (§3)",
                ours="tail/head training-margin ratio, LDAM − CE", a=ratio_diff,
                kind="context")

# %% [markdown]
# ## 6. Paper vs ours
#
# The paper's columns are its top-1 accuracies (100 − the top-1 validation error of its
# imbalanced-CIFAR table, Table 2 as we recall it; **every paper number is recalled**, † where
# no independent source corroborated it) with ResNet-32 on CIFAR-10-LT and CIFAR-100-LT; ours
# are balanced test accuracies at this preset, in %. CE-DRW and the two controls are not in
# that table ("–"). The paper's protocol and ours differ beyond the data: it trains 200 epochs,
# and the official code tracks the best test accuracy over epochs (we do not know which of the
# two the table reports); we report the final epoch.

# %%
paper_settings = list(C.PAPER_ERROR)


def paper_cell(setting, method: str) -> str:
    error = C.PAPER_ERROR[setting].get(method)
    if error is None:
        return "–"
    mark = "" if (*setting, method) in C.PAPER_CORROBORATED else "†"
    return f"{100 - error:.2f}{mark}"


def ours_cell(setting, method: str) -> str:
    if (*setting, method) not in acc:
        return "–"
    mean, std = C.mean_std(acc[(*setting, method)])
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


display(Markdown(markdown_table(
    ["method", *[f"paper: {figures.setting_label(t, r)}" for t, r in paper_settings],
     *[f"ours: {figures.setting_label(t, r)}" for t, r in settings]],
    [[C.METHOD_LABELS[m], *[paper_cell(s, m) for s in paper_settings],
      *[ours_cell(s, m) for s in settings]] for m in C.METHODS
     if m in C.PAPER_ERROR[paper_settings[0]] or (settings[0][0], settings[0][1], m) in acc])))

# %% [markdown]
# ## 7. Verdicts
#
# Every verdict below is computed from the numbers above by the rule stated in §4 (and, for the
# trade-off, in §2).

# %%
ch.claims_table()

# %% [markdown]
# **Reading the verdicts.** The $n^{-1/4}$ rule is exactly the minimiser of the margin bound the
# paper writes down; that is arithmetic, and it checks. The empirical claims are about
# ResNet-32 on CIFAR-LT; here the setting is far smaller — the two rarest classes of the
# ρ = 100 training sets have 8 and 5 examples — so a verdict says what happens at this scale,
# not that the paper is right or wrong at its own. In the recorded `book` run (the verdict
# table applies the audit of fresh seed-sets: a verdict that changed there is shown
# inconclusive):
#
# - **The precondition holds.** With the augmentation no method has memorised its training set
#   at the switch (clean training accuracy 0.90–0.95); CE-RW at ρ = 100 is far lower (about
#   0.5): with weights about 100 times larger for the rarest class at the full learning rate it
#   does not fit even its head classes.
# - **LDAM alone does not beat CE here; if anything it falls below it.** In the book run LDAM
#   is about 4–5 points below CE at both ratios (not held); in the audit's fresh seed-sets it is
#   3–4 points below at ρ = 10 and within noise at ρ = 100, so the audit marks the verdict
#   unstable and the table reports it inconclusive. This reverses this chapter's earlier record,
#   which trained without augmentation and with digit 0 always the head: there CE memorised its
#   training set and LDAM beat it by 9–12 points. The augmentation lifts CE most. The controls
#   locate the loss: cosine-classifier CE (Cos-CE) is about 5 (ρ = 10) and 8 (ρ = 100) points
#   below CE in the book run, so the cosine classifier with $s = 30$ is what costs accuracy in
#   this setting; LDAM's margin wins part of it back (LDAM − Cos-CE about +0.6 and +4.4
#   points). How the margin is spread over the classes helps in the means — LDAM beats the
#   uniform margin of the same mean in every condition of all three seed-sets, by 0.2–6
#   points — but at ρ = 100 no interval excludes 0, so the claim stays inconclusive.
# - **DRW helps.** CE-DRW beats CE at both ratios (+1.6 and +7.1 points), and in the means DRW
#   adds to the cosine losses too (LDAM-DRW over LDAM, LDAM-uniform-DRW over LDAM-uniform;
#   these two are not tested claims). Against
#   re-weighting from the start it wins by about 18 points at ρ = 100, where re-weighting from the
#   start fails to fit, but not at ρ = 10, where re-weighting from the start is as good or
#   slightly better — so "DRW beats re-weighting from the start" is inconclusive.
# - **LDAM-DRW is not the best method** here: CE-RW (ρ = 10) and CE-DRW (ρ = 100) beat it, by
#   intervals below 0 at ρ = 100 — not held. What wins at this scale is the paper's second idea
#   (deferred re-weighting) on a plain linear head, not its first.
# - **Tail gains and margins.** LDAM-DRW's small gains over CE are not concentrated in the rarer
#   half (inconclusive), and LDAM no longer gives the rare classes relatively larger training
#   margins than CE (the context claim, held in the earlier record, is not held at ρ = 100 in
#   the book run and in one audit seed-set, inconclusive in the other, so the table shows it
#   inconclusive):
#   with augmentation the rarest classes are not fitted by any method, and their mean
#   training margins are near zero or negative (the figure above).
#
# **Deviations from the paper**, all deliberate:
#
# - *Scale*: long-tailed MNIST-1D ($n_{\max} = 500$) and a 1-D CNN instead of CIFAR-LT and
#   ResNet-32 (those are the `full` preset).
# - *Augmentation*: a random shift by up to 4 samples (zero padding) and Gaussian noise of
#   standard deviation 0.1, the 1-D analogue of the paper's padded random crop; no flip.
# - *Class order*: which digit gets which count is drawn per seed (the official CIFAR-LT fixes
#   class 0 as the head); the `full` preset keeps the official order.
# - *Schedule*: the official one scaled from 200 to 60 epochs (warm-up 2, ×0.01 at 48 and 54,
#   DRW switch at 48 — the same fractions), run as successive `fit` calls: the SGD momentum
#   restarts at each phase boundary, and `fit` drops the last partial batch of an epoch (the
#   official loader keeps it).
# - *Weights*: β = 0.9999 as in the paper; on classes of at most 500 examples this is almost
#   inverse frequency (head-to-tail weight ratio ≈ 98 at ρ = 100, against ≈ 79 on CIFAR-10-LT).
# - *Evaluation*: final-epoch accuracy on a balanced subsample of the MNIST-1D test split.
# - *Data draws*: the long-tailed subset is redrawn for each seed (the official code fixes one
#   draw), so the spread over seeds includes the choice of the rare examples.
# - *Baselines and controls*: class-balanced re-sampling and cosine CE with DRW are
#   implemented (`smoke`, `full`) but not run at `book`, for time.

# %%
elapsed = time.time() - ch.started
display(Markdown(f"This execution took **{elapsed:.0f} s** of wall time at the `{ch.preset}` "
                 f"preset ({len(specs)} training runs on {ch.workers} worker(s); finished runs "
                 "are read from the run cache)."))

# %% [markdown]
# ## Preset and provenance
# The configuration of this run (`lossbook list -v` shows every preset) and its provenance:

# %%
display(Markdown(markdown_table(["parameter", "value"],
                                [[k, code(v)] for k, v in dataclasses.asdict(cfg).items()])))

# %%
ch.finish()
