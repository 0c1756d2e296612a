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
# # Understanding Hessian alignment for domain generalization
#
# *Reproducing {cite:t}`hemati2023hessian` (ICCV 2023).*
#
# A classifier trained on several *environments* (domains) should keep working on a new one.
# Many regularizers for this — IRM {cite}`arjovsky2019irm`, V-REx {cite}`krueger2021vrex`,
# Fishr {cite}`rame2022fishr`, CORAL {cite}`sun2016coral`, Fish and IGA — make something about
# the environments agree. Hemati, Zhang, Estiri and Chen look at the **classifier head**: they
# show that the spectral norm of the difference between source and target head Hessians bounds
# the *transfer measure* of {cite:t}`zhang2021transferability`, argue that the regularizers above
# each align part of the head's Hessian and gradient, and propose two cheap ways of aligning
# both across training environments — **HGP** (Hessian–gradient products) and **Hutchinson**
# (a stochastic estimate of the Hessian diagonal). Their experiments cover correlation shift
# (Colored MNIST), label shift, diversity shift (DomainBed {cite}`gulrajani2021domainbed`) and
# transferability.
#
# **What we had.** Only the paper's abstract and introduction — none of its tables — and its
# official code (`huawei-noah/Federated-Learning`, folder `HessianAlignment`, Apache-2.0), from
# which every method here is reimplemented. The Colored-MNIST numbers we compare with are the
# *same-protocol* baselines published with Fishr (the HGP scripts are copies of that script
# with the same hyperparameters).
#
# | Statement | Status here | How |
# |---|---|---|
# | $Hg = \lVert g\rVert\,\nabla\lVert g\rVert$, so HGP needs no Hessian | verified | section 1, to machine precision |
# | Head Hessian $=\mathbb{E}[A\otimes\tilde\varphi\tilde\varphi^\top]$, label-free; gradient $=\mathbb{E}[(p-e_y)\otimes\tilde\varphi]$ | verified | section 1, against autograd |
# | Hutchinson's estimate is unbiased with error $\propto 1/\sqrt{S}$ | verified | section 1, against the exact variance |
# | $\lVert H_S - H_T\rVert_2$ bounds the transfer measure | not verified | abstract only; section 1 gives a Taylor-expansion reading |
# | HGP/Hutchinson ≫ ERM under correlation shift, ≈ V-REx/Fishr | tested | section 3, Colored MNIST-1D |
# | Hessian alignment lowers the Hessian distance, which tracks OOD accuracy | tested | section 3 |
# | Label shift; small gains under diversity shift | tested at the `extended` preset | sections 4–5 |
# | The paper's own numbers | unknown to us | – |

# %% tags=["parameters"]
preset = "book"
seed = 0
device = "auto"
overrides = {}

# %%
import time

import numpy as np
from IPython.display import Markdown, display

import lossbook
from lossbook.chapters import hessian_alignment as C
from lossbook.chapters import hessian_alignment_figures as figures
from lossbook.claims import markdown_table

ch = lossbook.start("03_hessian_alignment", preset=preset, seed=seed, device=device,
                    overrides=overrides)
cfg = ch.cfg
print(f"preset={ch.preset} seed={ch.seed} device={ch.device} workers={ch.workers}")

# %% [markdown]
# ## 1. The theory in brief, checked exactly
#
# Split a network into features $\varphi(x)\in\mathbb{R}^d$ and a linear head
# $\theta_h = (W, b)$, and write $\tilde\varphi = [\varphi; 1]$. For environment $e$, let $L_e$
# be its mean cross-entropy, $g_e = \nabla_{\theta_h} L_e$ and $H_e = \nabla^2_{\theta_h} L_e$.
# For the softmax head (and its one-logit logistic version, used on Colored MNIST) both have
# closed forms:
#
# $$
# \begin{aligned}
# g_e &= \mathbb{E}_e\big[(p - e_y)\otimes\tilde\varphi\big],\\
# H_e &= \mathbb{E}_e\big[(\operatorname{diag}p - pp^\top)\otimes\tilde\varphi\tilde\varphi^\top\big]
# \quad\big(\text{logistic: } \sigma(z)(1-\sigma(z))\,\tilde\varphi\tilde\varphi^\top\big).
# \end{aligned}
# $$
#
# These make the paper's "what gets aligned" argument concrete. Matching **gradients** across
# environments matches the correlation between residuals and features — what IRM's penalty, Fish
# and IGA push towards. Matching **Hessians** matches confidence-weighted second moments of the
# features, and the Hessian does not involve the labels at all: with near-constant confidence it
# is feature-covariance matching (CORAL), and near the optimum it is the Fisher information,
# whose diagonal Fishr matches through gradient variances. The paper's bound says that if a head
# is near-optimal on the source, a target's excess risk is controlled by
# $\lVert H_S - H_T\rVert_2$ (we have the statement from the abstract only). A second-order
# expansion shows why: for a head $\theta^* + \delta$, the target-minus-source change of loss is
#
# $$
# \begin{aligned}
# &(g_T - g_S)^\top\delta + \tfrac12\,\delta^\top(H_T - H_S)\,\delta + o(\lVert\delta\rVert^2)\\
# &\qquad\le \lVert g_T - g_S\rVert\,\lVert\delta\rVert
#   + \tfrac12\lVert H_T - H_S\rVert_2\,\lVert\delta\rVert^2 + o(\lVert\delta\rVert^2),
# \end{aligned}
# $$
#
# so aligning both gradients and Hessians is what keeps losses transferable. The test environment is unavailable in training, so both methods align
# the *training* environments to their mean.
#
# **HGP** never forms a Hessian. Since $\nabla\lVert g\rVert = Hg/\lVert g\rVert$,
#
# $$ H_e g_e = \lVert g_e\rVert\,\nabla_{\theta_h}\lVert g_e\rVert, $$
#
# two backward passes instead of one per head parameter. **Hutchinson** estimates the Hessian
# diagonal with random sign vectors $z_s$ {cite}`hutchinson1989trace`: $\widehat{\operatorname{diag}H} = \frac1S\sum_s
# z_s\odot Hz_s$, each $Hz_s$ one Hessian-vector product. Three exact, training-free checks
# follow (random tanh features, random heads, double precision unless stated).

# %% mystnb={"figure": {"caption": "HGP's identity $H g = \\lVert g\\rVert\\,\\nabla\\lVert g\\rVert$: its relative error against the explicit Hessian–gradient product (left) and the cost of avoiding the Hessian (right).", "name": "fig-03-identity"}, "image": {"alt": "Two panels: relative error of the identity, and computation time with and without forming the Hessian."}}
identity_rows = C.identity_check(cfg.identity_dims, cfg.identity_classes,
                                 cfg.identity_max_params, seed=seed)
fig = figures.identity(identity_rows)

# %% [markdown]
# The identity holds to machine precision in both float32 and float64 (dotted lines: machine ε),
# whether compared with an explicit double-backward Hessian-vector product or with the Hessian
# formed row by row (the official `eval_hessian`) and multiplied by $g$. The right panel is the
# point of HGP: its cost does not grow with the number of head parameters, while forming the
# Hessian needs one backward pass per parameter.

# %% mystnb={"figure": {"caption": "The closed-form head Hessian (Kronecker structure) against autograd: the closed form for 3 classes and $d=6$, its absolute difference from autograd, and the relative errors of Hessian and gradient for all heads tested.", "name": "fig-03-closed-form"}, "image": {"alt": "Two heat maps, the closed-form Hessian and its log difference from autograd, and a plot of relative errors near machine precision."}}
closed = C.closed_form_check(seed=seed)
fig = figures.closed_form(closed)

# %% [markdown]
# The closed form (left: a 3-class head on 6 features — 3 × 3 blocks of feature second moments,
# weighted by the softmax curvature) equals the autograd Hessian to ~10⁻¹⁶ (middle), and so do the
# gradients, for logistic and softmax heads of several sizes (right). We use it to log the head
# Hessians of every environment during training at negligible cost.

# %%
hutch_checks = []
for classes, d, title in ((4, 16, "4-class head, 68 parameters"),
                          (1, cfg.hidden, f"binary head, {cfg.hidden + 1} parameters "
                                          "(as in section 3)")):
    check = C.hutchinson_check(cfg.hutch_probes, cfg.hutch_trials, classes=classes, d=d,
                               seed=seed)
    check["title"] = title
    hutch_checks.append(check)
slopes = [C.loglog_slope(c["probes"], np.mean(c["errors"], 1)) for c in hutch_checks]
ratios = [np.mean(c["errors"], 1) / np.array(c["predicted"]) for c in hutch_checks]
display(Markdown(markdown_table(
    ["problem", "fitted slope", "measured / exact prediction (S ≥ 10)", "error at S = 150"],
    [[c["title"], f"{s:.3f}",
      f"{r[np.array(c['probes']) >= 10].min():.2f} – {r[np.array(c['probes']) >= 10].max():.2f}",
      f"{np.interp(150, c['probes'], np.mean(c['errors'], 1)):.3f}"]
     for c, s, r in zip(hutch_checks, slopes, ratios)])))

# %% mystnb={"figure": {"caption": "Hutchinson's estimate of the Hessian diagonal: relative error against the number of probes, with the exact $1/\\sqrt{S}$ prediction; the official CMNIST (150) and DomainBed (300) probe counts are marked.", "name": "fig-03-hutchinson"}, "image": {"alt": "Log-log plots of relative error against the number of probes, with a predicted line and marked probe counts."}}
fig = figures.hutchinson(hutch_checks, {"official CMNIST (150)": 150, "DomainBed (300)": 300})

# %% [markdown]
# Hutchinson's estimate is unbiased; for Rademacher probes its mean squared error is exactly
# $\frac1S\sum_i\sum_{j\neq i}H_{ij}^2$, so the relative error falls as $1/\sqrt{S}$ (orange line, no
# fitted constant). The measured error follows it. At the official 150 probes the estimate is
# still 11–20 % off for these two heads (last column; more for the binary head, whose features
# are strongly correlated), and the alignment penalty $\lVert\hat D_e - \hat D\rVert^2$ inherits that noise.
#
# Verdict rules for these checks, fixed in advance: the identity and the closed forms hold if the
# largest float64 relative error is below $10^{-12}$; the $1/\sqrt{S}$ law holds if the fitted
# log–log slope is within ±0.1 of $-\tfrac12$ and the measured mean error is within 0.8–1.1 × the exact prediction at
# every S ≥ 10 (the mean of a norm is slightly below its root mean square).

# %%
f64 = [r for r in identity_rows if r["dtype"] == "float64"]
max_identity = max(max(r["err_hvp"], r.get("err_full", 0.0)) for r in f64)
max_closed = max(max(r["err_hessian"], r["err_grad"]) for r in closed["rows"]
                 if r["dtype"] == "float64")
ch.claim("hgp_identity", "HGP's H·g = ‖g‖∇‖g‖ is exact (no Hessian needed)",
         paper="identity behind HGP (official `HGP.update`)",
         ours=f"max float64 relative error {max_identity:.1e} over {len(f64)} heads",
         holds=max_identity < 1e-12, kind="identity", rule="relative error < 1e-12")
ch.claim("head_closed_form", "Head Hessian and gradient have the Kronecker closed form",
         paper="attributes aligned by HGP/Hutchinson (analysis section)",
         ours=f"max float64 relative error {max_closed:.1e}", holds=max_closed < 1e-12,
         kind="identity", rule="relative error < 1e-12")
hutch_ok = all(abs(s + 0.5) <= 0.1 for s in slopes) and all(
    0.8 <= r[np.array(c["probes"]) >= 10].min() and r[np.array(c["probes"]) >= 10].max() <= 1.1
    for c, r in zip(hutch_checks, ratios))
ch.claim("hutchinson_rate", "Hutchinson's diagonal error falls as 1/√S",
         paper="Hutchinson's estimator, S = 150 / 300 probes in the official code",
         ours="slopes " + ", ".join(f"{s:.2f}" for s in slopes) + "; measured/exact "
              + ", ".join(f"{r[np.array(c['probes']) >= 10].min():.2f}–"
                          f"{r[np.array(c['probes']) >= 10].max():.2f}"
                          for c, r in zip(hutch_checks, ratios)),
         holds=hutch_ok, kind="identity", rule="slope −½ ± 0.1; measured/exact in 0.8–1.1")

# %% [markdown]
# ## 2. The methods, as the official code defines them
#
# All penalties act on the head (HGP, Hutchinson, Fishr) or the logits/features (IRM, V-REx,
# CORAL) and are unit-tested against slow explicit computations. The Colored-MNIST scripts
# (`cmnist_HGP.py`, `cmnist_Hutchinson.py`, and their `_imbalanced` twins) add to the mean
# training NLL an L2 term and w(t)·penalty, with w(t) = 1 for the first 190 steps and the
# penalty weight (91,257) afterwards, dividing the whole loss by w(t) when w(t) > 1:
#
# | method | penalty (two training environments, script form) | source |
# |---|---|---|
# | ERM | none | – |
# | IRM | $\operatorname{mean}_e \lVert\nabla_{w \mid w=1} L_e(w\cdot z)\rVert^2$ (IRMv1) | CMNIST scripts |
# | V-REx | $(L_0 - L_1)^2$ | CMNIST scripts |
# | Fishr | $\sum_e \lVert \operatorname{Var}_e[\nabla_{\theta_h}\ell] - \text{mean}\rVert^2$ (per-example head gradients) | CMNIST scripts |
# | HGP | $\sum_e \lVert H_e g_e - \bar H\bar g\rVert^2 + \lVert g_e - \bar g\rVert^2$ | `cmnist_HGP.py` |
# | Hutchinson | $\sum_e \lVert \hat D_e - \hat D(\bar L)\rVert^2 + \lVert g_e - \bar g\rVert^2$, $S = 150$ | `cmnist_Hutchinson.py` |
# | CORAL | mean over pairs of mean-squared differences of feature means and covariances | DomainBed |
#
# Here $\bar H\bar g$ and $\hat D(\bar L)$ belong to the *mean* loss $\bar L = \operatorname{mean}_e L_e$, not to the mean of the
# per-environment terms, exactly as in the code. The DomainBed versions (section 5) weight the
# two parts by α and β (HGP 10⁻⁴ and 5·10⁻³, Hutchinson 10⁻³ and 5·10⁻³), detach the mean terms,
# average over environments and use 300 probes:
#
# ```{literalinclude} ../src/lossbook/invariance.py
# :pyobject: alignment_penalty
# ```
#
# ```{literalinclude} ../src/lossbook/invariance.py
# :pyobject: hessian_gradient_product
# ```

# %% [markdown]
# ## 3. Correlation shift: Colored MNIST on MNIST-1D signals
#
# Colored MNIST {cite}`arjovsky2019irm` makes a spurious cue more predictive than the real one.
# The label is y = 1[digit < 5], flipped with probability 0.25 (so shape predicts at most 75 %);
# the colour is y XOR Bernoulli(e); the input is the digit in the colour's channel, the other
# channel zeroed. In the two training environments e = 0.2 and 0.1 (colour predicts 80 % and
# 90 %); in the test environment e = 0.9, so colour *misleads*. A grayscale test environment
# (both channels) and a colour-blind model trained on summed channels (the grayscale oracle)
# bound what the shape alone achieves.
#
# Our analogue replaces MNIST digits by MNIST-1D signals {cite}`greydanus2020mnist1d` from a
# generator setting in which the shape is a reliable feature (low noise, shear, scale and
# translation; an MLP separates digits < 5 from the rest with 99.9 % accuracy without label
# noise), 2 × 40 = 80 inputs, 2,400 signals per training environment of which 20 % are held out
# for model selection, and 1,200 test signals (20 % of them held out for the oracle). Everything
# else follows the official scripts: MLP body (here 80 → 64 → 64) with Xavier initialisation,
# one-logit head, full-batch Adam (lr 4.9·10⁻⁴), L2 weight 1.1·10⁻³, 501 steps, penalty
# annealing at step 190, 150 Hutchinson probes; restarts redraw labels, colours and the
# environment split. Fishr's per-example head gradients, which the scripts get from BackPACK,
# are computed in closed form (unit-tested against per-example autograd).

# %% mystnb={"figure": {"caption": "The coloured environments: example inputs (red and green channels) and, per environment, the accuracy of the best predictor that uses colour alone or shape alone.", "name": "fig-03-environments"}, "image": {"alt": "Example inputs shown as red and green channels, and a bar chart of colour-only and shape-only accuracy per environment."}}
envs = C.environments(C.cmnist_specs(cfg, seed, ch.device)[0])
fig = figures.environments(envs, cfg.train_e, cfg.test_e)

# %% [markdown]
# **Tuning, fixed before the runs.** The scripts' penalty weight was tuned (for IRM, by the IRM
# authors) on real Colored MNIST, and our pilots showed it does not transfer one-to-one to the
# analogue. We therefore train every penalty method at weights {10², 10³, 91,257} (the
# official value) and pick one per method by three rules, reported side by side:
#
# 1. **training-domain validation** (DomainBed's default): the weight with the best mean
#    accuracy on the held-out 20 % of the *training* environments — the only rule that never
#    looks at the test environment, and the one **all verdicts use**;
# 2. **official**: the scripts' weight 91,257, untuned — the same protocol as the published
#    baseline numbers;
# 3. **test-domain oracle** (DomainBed's "oracle"): the weight with the best mean accuracy on the
#    held-out 20 % of the test environment — an upper bound on what tuning could buy, never used
#    for a verdict.
#
# Accuracies are those of the final model (step 501), mean ± standard deviation over the
# restarts (5 at `book`, 10 at `full`). Known caveat, stated before seeing our numbers: on Colored MNIST,
# training-domain validation favours whichever configuration uses colour most, because colour
# *is* more predictive in the training environments (DomainBed reports ~10 % test accuracy for
# every method under this rule); with our grid that means the smallest weight.
#
# **Verdict rules**, by the book's claim protocol (`lossbook.claims`): each claim is a
# restart-paired effect (every method trains on the same restart seeds), *held* when its 95 %
# Student-t interval over the restarts lies beyond the threshold below, *not held* when it lies
# on the other side, *inconclusive* otherwise; for HGP and Hutchinson alike. Under
# training-domain validation:
#
# - *≫ ERM*: test accuracy − ERM's > 15 points (the research note's reproduction rule);
# - *comparable to V-REx/Fishr*: test accuracy − that of the better of V-REx and Fishr (by
#   mean) > −5 points;
# - *alignment lowers the Hessian distance*: final $\lVert H_0 - H_1\rVert_F$ between the two training
#   environments − ERM's < 0;
# - *the distance tracks OOD accuracy*: within each restart, across all its final models (every
#   method and weight; the oracle excluded), the Spearman correlation between $\lVert H_0 - H_1\rVert_F$ and
#   test accuracy; its interval over restarts < −0.5. We also show the train-to-test spectral distance $\lVert \bar H_{\text{train}} - H_{\text{test}}\rVert_2$
#   — the quantity in the paper's bound, computable because head Hessians need no labels.

# %%
groups = C.all_specs(cfg, seed, ch.device)  # this section's runs and those of sections 4–5
all_results = C.sweep_all(ch.sweep, groups, desc="all runs of the chapter")
specs, results = groups["correlation"], all_results["correlation"]
collected = C.collect(specs, results)
finals, histories = collected["finals"], collected["histories"]
chosen = C.selections(finals)
summary = C.summarize(finals, chosen)
methods = [m for m in cfg.methods if m in finals] + ["gray"]
rules = {"train-domain": "training-domain validation", "official": "official weight, untuned",
         "oracle": "test-domain oracle (not a fair rule)"}


def fmt(stat, scale=100):
    return f"{scale * stat[0]:.1f} ± {scale * stat[1]:.1f}"


rows = []
for m in methods:
    s = summary[m]
    rows.append([figures.label(m), f"{chosen[m]['train-domain']:g}",
                 fmt(s["train-domain"]["train"]), fmt(s["train-domain"]["val"]),
                 fmt(s["train-domain"]["test"]), fmt(s["train-domain"]["gray"]),
                 fmt(s["official"]["test"]),
                 f"{fmt(s['oracle']['test'])} (w={chosen[m]['oracle']:g})"])
display(Markdown(markdown_table(
    ["method", "selected weight", "train", "held-out train", "test", "gray",
     "test, official weight", "test, oracle"], rows)))

# %% mystnb={"figure": {"caption": "Train, test and gray accuracy per method (mean ± std over restarts), one panel per model-selection rule.", "name": "fig-03-accuracy"}, "image": {"alt": "Grouped bar charts of train, test and gray accuracy for each method, one panel per selection rule."}}
fig = figures.accuracy_bars(summary, methods, rules)

# %% [markdown]
# Every penalty improves on ERM on the colour-reversed test environment, but far less than on
# real Colored MNIST: at the official weight the best methods reach about 35 %, against
# 65–70 % published for real CMNIST, and Hutchinson trails the other penalties. The grayscale
# columns show the limiting factor: every model, penalised or not, classifies gray signals at
# 57–59 %, while the colour-blind oracle reaches 70 %. In this analogue ERM learns much less
# shape when colour is available than it does on real MNIST (58 % against 71 % grayscale
# accuracy), and a penalty applied after step 190 can only trade the colour for whatever shape
# feature is already there — the penalised models are *less colour-driven*, not more
# shape-driven. (MNIST-1D shape needs a nonlinear, translation-tolerant detector, which a small
# MLP builds slowly; colour is an energy-per-channel cue it finds in a few steps.)

# %% mystnb={"figure": {"caption": "Held-out training-environment accuracy (left) and test accuracy (right) against the penalty weight, per method.", "name": "fig-03-weight-sweep"}, "image": {"alt": "Two line plots of accuracy against penalty weight on a log axis, one line per method."}}
fig = figures.weight_sweep(finals, [m for m in cfg.methods if m != "erm"])

# %% [markdown]
# The sweep shows the selection problem in one picture: on held-out *training* data every
# penalty loses accuracy as its weight grows — it is removing the colour shortcut that the
# training environments reward — while on the test environment it gains. Training-domain
# validation therefore picks the smallest weight for every method.

# %% mystnb={"figure": {"caption": "Along training: test accuracy, the two head-Hessian distances between environments, and the Hessian's size, per method at its official weight.", "name": "fig-03-training-curves"}, "image": {"alt": "Four panels of training curves per method: test accuracy, two Hessian distances and Hessian norm."}}
curve_methods = [m for m in cfg.methods if m in finals]
fig = figures.training_curves(histories, {m: chosen[m]["official"] for m in curve_methods},
                              curve_methods, cfg.anneal_iters)

# %% [markdown]
# Training curves at the official weight (mean over restarts; dotted line: the annealing step).
# Before step 190 every method behaves like ERM and learns the colour (test accuracy falls to
# ~11 %). When the weight jumps, V-REx reaches its plateau within ~50 steps, IRM, Fishr and HGP
# climb more gradually, and Hutchinson — its penalty measured through noisy diagonal estimates
# — is slowest and still rising at step 501. The Hessian panels do not move with test
# accuracy. Hutchinson drives both distances down fastest, but mostly by shrinking the head
# Hessian itself (right panel: $\lVert\bar H\rVert$ ends ~3× below ERM's; a logistic head's Hessian is small
# where the model is confident), while V-REx and IRM *raise* $\lVert H_0 - H_1\rVert$ after annealing and gain
# the most.

# %% mystnb={"figure": {"caption": "Final head-Hessian distances between the training environments against test accuracy, every run (colours: methods).", "name": "fig-03-distance-ood"}, "image": {"alt": "Two scatter plots of test accuracy against Hessian distance, coloured by method."}}
points = {m: [r for w in finals[m] for r in finals[m][w]] for m in cfg.methods if m in finals}
everything = [r for runs in points.values() for r in runs]
rho = {key: C.spearman([r[key] for r in everything], [r["test"] for r in everything])
       for key in ("hdist_train", "hdist_test")}
fig = figures.distance_vs_ood(points, rho)

# %% [markdown]
# Across all final models neither distance predicts test accuracy: the smallest distances
# belong to Hutchinson, which transfers worst. Matching the head Hessians of the two *training*
# environments is a consequence of invariance, not a certificate of it: both training
# environments consist mostly of colour-consistent examples, so a colour-using head can see
# nearly the same curvature in both. The paper's bound concerns the source–target distance for
# a head near the source optimum *on fixed features*; across methods the features themselves
# differ, and the absolute distance also scales with the Hessian's size, which confident
# models shrink. (The correlations are computed on 48 models from one small benchmark.)

# %%
td = {m: summary[m]["train-domain"] for m in methods}
ours = [m for m in ("hgp", "hutchinson") if m in td]


def per_restart(fin, method, key="test", rule="train-domain", chosen_=None):
    """The per-restart `key` of `method` at the weight chosen by `rule` (restart order)."""
    return [r[key] for r in fin[method][(chosen_ or chosen)[method][rule]]]


baselines = {m: per_restart(finals, m) for m in ("vrex", "fishr") if m in finals}
best_baseline = max(baselines, key=lambda m: np.mean(baselines[m]))
ch.claim_effect("corr_shift_vs_erm",
                "HGP and Hutchinson ≫ ERM on the shifted test environment (correlation shift)",
                paper="HGP/Hutchinson far above ERM on Colored MNIST (table values unseen; "
                      "same-protocol ERM 14.0 %)",
                ours="test acc. − ERM (training-domain validation)",
                a={figures.label(m): per_restart(finals, m) for m in ours},
                b={figures.label(m): per_restart(finals, "erm") for m in ours}, threshold=0.15,
                note="analogue on MNIST-1D")
ch.claim_effect("corr_shift_vs_baselines", "HGP and Hutchinson are comparable to V-REx / Fishr",
                paper="comparable or better (same-protocol V-REx 67.2 %, Fishr 69.5 %)",
                ours=f"test acc. − {figures.label(best_baseline)} (the better baseline)",
                a={figures.label(m): per_restart(finals, m) for m in ours},
                b={figures.label(m): baselines[best_baseline] for m in ours}, threshold=-0.05)
ch.claim_effect("hessian_distance_lower",
                "Hessian alignment lowers ‖H₀ − H₁‖ between environments",
                paper="alignment reduces the head-Hessian distance (official script logs it)",
                ours="final ‖H₀ − H₁‖_F − ERM's",
                a={figures.label(m): per_restart(finals, m, "hdist_train") for m in ours},
                b={figures.label(m): per_restart(finals, "erm", "hdist_train") for m in ours},
                direction="less", digits=4)
# points[m] runs over weights, restarts within: every restarts-th record is one restart's model
restart_rho = [C.spearman(*zip(*[(r["hdist_train"], r["test"]) for runs in points.values()
                                 for r in runs[i::cfg.restarts]]))
               for i in range(cfg.restarts)]
ch.claim_effect("distance_tracks_ood", "The Hessian distance tracks OOD accuracy",
                paper="smaller head-Hessian distance ⇒ better transfer (bound)",
                ours=f"Spearman ρ(‖H₀ − H₁‖_F, test acc.) per restart (pooled over all "
                     f"{len(everything)} models: {rho['hdist_train']:.2f}; "
                     f"ρ(‖H̄_train − H_test‖₂, test acc.) = {rho['hdist_test']:.2f})",
                a=restart_rho, threshold=-0.5, direction="less", digits=2)

# %% [markdown]
# ## 4. Label shift: the imbalanced variant
#
# The official `*_imbalanced.py` scripts move the label distribution as well: environment 0
# receives 97 % of the digits below 5 and 3 % of the others, environment 1 the rest — so each
# training environment is dominated by one class, on top of the colour correlation. Same
# protocol, same weights, same selection rules and the same verdict rule as the first claim.

# %%
if cfg.label_shift:
    ls_finals = C.collect(groups["label"], all_results["label"])["finals"]
    ls_chosen = C.selections(ls_finals)
    ls_summary = C.summarize(ls_finals, ls_chosen)
    display(Markdown(markdown_table(
        ["method", "train", "test (training-domain val.)", "gray", "test, official weight",
         "test, oracle"],
        [[figures.label(m), fmt(ls_summary[m]["train-domain"]["train"]),
          fmt(ls_summary[m]["train-domain"]["test"]), fmt(ls_summary[m]["train-domain"]["gray"]),
          fmt(ls_summary[m]["official"]["test"]), fmt(ls_summary[m]["oracle"]["test"])]
         for m in methods])))
    ch.claim_effect("label_shift_vs_erm", "HGP and Hutchinson ≫ ERM under label shift",
                    paper="promising performance under label shift (values unseen)",
                    ours="test acc. − ERM (training-domain validation)",
                    a={figures.label(m): per_restart(ls_finals, m, chosen_=ls_chosen)
                       for m in ours},
                    b={figures.label(m): per_restart(ls_finals, "erm", chosen_=ls_chosen)
                       for m in ours}, threshold=0.15)
else:
    display(Markdown("*Not run at this preset* (it doubles the run time); "
                     "`lossbook run 03_hessian_alignment --preset extended` runs it."))
    ch.claim("label_shift_vs_erm", "HGP and Hutchinson ≫ ERM under label shift",
             paper="promising performance under label shift (values unseen)",
             ours="runs at the extended preset", holds=None)

# %% mystnb={"figure": {"caption": "With label shift added: train, test and gray accuracy per method (mean ± std over restarts), one panel per selection rule.", "name": "fig-03-label-shift"}, "image": {"alt": "Grouped bar charts of accuracy per method under label shift, one panel per selection rule."}}
if cfg.label_shift:
    fig = figures.accuracy_bars(ls_summary, methods, rules)

# %% [markdown]
# ## 5. Diversity shift: leave one MNIST-1D domain out
#
# DomainBed-style diversity shift: five MNIST-1D domains that differ in *how* digits look — the
# default generator, strong correlated noise, strong shear, no translation, and time-reversed
# signals (the 1-D analogue of rotated digits) — each with its own generator seed. Each domain in
# turn is the test domain; the model (a 3-layer 1-D CNN) trains on the other four under the
# DomainBed protocol: one minibatch of 64 per domain and step, Adam (lr 10⁻³), the registry's
# default hyperparameters (plus random draws at `full`), checkpoints and hyperparameters chosen
# by held-out training-domain accuracy. Methods: ERM, CORAL, Fishr, HGP, Hutchinson. Verdict
# rule (a null claim of the protocol): the gain is *small* if the restart-paired gain over ERM
# of HGP and of Hutchinson, averaged over the held-out domains, has its 95 % t-interval within
# ±2 points (equivalence margin); *not held* if the interval lies wholly outside.

# %%
if cfg.diversity:
    dv_table = C.diversity_table(groups["diversity"], all_results["diversity"])
    dv_methods = [m for m in cfg.diversity_methods if m in dv_table]
    domains_ = list(cfg.domain_names)
    averages = {m: float(np.mean([np.mean(dv_table[m][d]) for d in domains_]))
                for m in dv_methods}
    display(Markdown(markdown_table(
        ["method", *domains_, "average"],
        [[figures.label(m), *[fmt(C.mean_std(dv_table[m][d])) for d in domains_],
          f"{100 * averages[m]:.1f}"] for m in dv_methods])))
    gains = {figures.label(m): np.mean([np.subtract(dv_table[m][d], dv_table["erm"][d])
                                        for d in domains_], axis=0)
             for m in ("hgp", "hutchinson") if m in averages}
    ch.claim_effect("diversity_small_gain", "Under diversity shift the gain over ERM is small",
                    paper="small gains on DomainBed (values unseen)",
                    ours="test acc. − ERM, averaged over held-out domains", a=gains,
                    threshold=0.02, direction="equivalent")
else:
    display(Markdown("*Not run at this preset*; `--preset extended` runs it."))
    ch.claim("diversity_small_gain", "Under diversity shift the gain over ERM is small",
             paper="small gains on DomainBed (values unseen)",
             ours="runs at the extended preset", holds=None)

# %% mystnb={"figure": {"caption": "Leave-one-domain-out test accuracy per held-out domain (mean ± std over restarts), per method.", "name": "fig-03-diversity"}, "image": {"alt": "Grouped bar chart of test accuracy per held-out domain and method."}}
if cfg.diversity:
    fig = figures.diversity(dv_table, dv_methods, domains_)

# %% [markdown]
# ## 6. Paper versus ours
#
# The published numbers on real Colored MNIST under exactly the scripts' protocol (10 restarts;
# the Fishr repository's README — the HGP scripts copy that script and its hyperparameters)
# beside ours on the MNIST-1D analogue at the official weight (same protocol, smaller data and
# model) and under training-domain validation. The paper's own HGP and Hutchinson numbers were
# not available to us.
#
# Our ERM row matches the published one closely in train and test accuracy (the analogue has the
# same colour structure), but its grayscale accuracy is 13 points lower — the shape feature is
# weaker — and on real CMNIST the penalties recover most of the distance between ERM and the
# grayscale oracle, in our analogue about a third of it.

# %%
published = {"erm": ("86.4 ± 0.2", "14.0 ± 0.7", "71.0 ± 0.7"),
             "irm": ("71.0 ± 0.5", "65.6 ± 1.8", "66.1 ± 0.2"),
             "vrex": ("71.7 ± 1.5", "67.2 ± 1.5", "68.6 ± 2.2"),
             "fishr": ("71.0 ± 0.9", "69.5 ± 1.0", "70.2 ± 1.1")}
rows = []
for m in methods:
    paper = published.get(m, ("–", "–", "–") if m != "gray" else ("–", "–", "–"))
    s_off, s_td = summary[m]["official"], summary[m]["train-domain"]
    rows.append([figures.label(m), " / ".join(paper),
                 " / ".join(fmt(s_off[k]) for k in ("train", "test", "gray")),
                 " / ".join(fmt(s_td[k]) for k in ("train", "test", "gray"))])
display(Markdown(markdown_table(
    ["method", "paper protocol, real CMNIST: train / test / gray (%)",
     "ours, official weight", "ours, training-domain validation"], rows)))

# %% [markdown]
# ## 7. Verdicts
#
# Every verdict is computed from the numbers above by the rule stated before them.

# %%
ch.claims_table()

# %% [markdown]
# **Reading the verdicts.**
#
# - *Theory.* The identity behind HGP, the closed-form head Hessian and Hutchinson's $1/\sqrt{S}$ law
#   hold exactly: HGP really is two backward passes, and the head Hessian really is a
#   label-free, confidence-weighted feature second moment.
# - *Correlation shift.* In our Colored MNIST-1D every penalty beats ERM, but by 4–11 points
#   under the only test-blind selection rule and by 9–19 points at the official weight (at three
#   restarts, before this chapter moved to five) — short of the 15 points the reproduction rule
#   asks of both HGP and Hutchinson. HGP is close to V-REx and Fishr; Hutchinson, with 150 noisy
#   probes, is the weakest penalty. The table above says which of these differences the
#   restart intervals resolve. Two limitations temper these verdicts: training-domain
#   validation picks the weakest penalty for *every* method (colour is genuinely more
#   predictive in the training environments — the DomainBed finding for Colored MNIST, not a
#   property of HGP), and the analogue's shape feature is weaker than MNIST's, which caps every
#   method well below the published 65–70 %.
# - *Hessian distance.* HGP and Hutchinson end with smaller mean $\lVert H_0 - H_1\rVert$ than ERM
#   (Hutchinson largely by shrinking the Hessian), but across methods the distance does not
#   track OOD accuracy — neither between training environments nor, in the bound's form,
#   between training and test.
# - *Scale.* An 80-input MLP on 2 × 1,920 training signals, five restarts and a three-point
#   weight grid: differences of a few points are within noise. The `extended` preset adds the
#   label-shift and diversity-shift experiments; the `full` preset runs the official setting on
#   real Colored MNIST (MNIST downloaded and checksummed by our own loader, 392-390-390-1 MLP,
#   10 restarts, both shifts) and is ready for a GPU.
#
# Run time of this chapter (training runs are cached on disk, so a re-run reuses them):

# %%
run_cpu = sum(r.get("cpu_s", 0.0) for runs in all_results.values() for r in runs)
print(f"wall time of this run: {time.time() - ch.started:.0f} s (preset {ch.preset}, "
      f"{ch.workers} worker process(es), cached runs reused: see the progress bar above)\n"
      f"CPU time of its {sum(map(len, all_results.values()))} training runs: {run_cpu:.0f} s "
      f"= {run_cpu / ch.workers:.0f} s of wall time on {ch.workers} otherwise idle cores")

# %% [markdown]
# ## Provenance
# Parameters of this run (see `lossbook list -v` for every preset):

# %%
ch.finish()
