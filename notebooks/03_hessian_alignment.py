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
# **What we had.** The paper's abstract and introduction (a stored copy of arXiv 2308.11778v1);
# its tables, theorem statement and appendix were not found in any source we could reach. Every
# number or formula attributed to the paper beyond the abstract is therefore marked
# *recalled* below, and a claim about a recalled formula can be at most *inconclusive*. The
# methods are reimplemented from the official code (`huawei-noah/Federated-Learning`, folder
# `HessianAlignment`, Apache-2.0): its Colored-MNIST scripts `cmnist_HGP.py` and
# `cmnist_Hutchinson.py` fix the protocol every verdict below uses, including the penalty
# weight 91,257. The same-protocol baselines (ERM, IRM, V-REx, Fishr on real Colored MNIST)
# come from the Fishr repository's README, whose script the HGP scripts copy.
#
# | Statement | Source | How we test it |
# |---|---|---|
# | $Hg = \lVert g\rVert\,\nabla\lVert g\rVert$, so HGP needs no Hessian | official `HGP.update` | section 1, exactly |
# | Head Hessian $=\mathbb{E}[A\otimes\tilde\varphi\tilde\varphi^\top]$ | analysis (recalled) | section 1, vs autograd |
# | Hutchinson: unbiased, error $\propto 1/\sqrt{S}$ | {cite:t}`hutchinson1989trace` | section 1 |
# | $\lVert H_S - H_T\rVert_2$ bounds the transfer measure | abstract; theorem recalled | section 3 |
# | HGP/Hutchinson ≫ ERM, ≈ V-REx/Fishr (correlation shift) | abstract; table recalled | section 3 |
# | Label shift; diversity shift | abstract; tables recalled | sections 4–5 |

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
# **What the noise does to the penalty.** Write $\hat D = \frac1S\sum_s z_s\odot Hz_s$. Its
# entry $i$ is $H_{ii} + \frac1S\sum_s\sum_{j\ne i} z_{si}z_{sj}H_{ij}$; for Rademacher probes
# $\mathbb{E}[z_iz_j] = 0$ and $\mathbb{E}[z_iz_jz_iz_k] = \delta_{jk}$ ($j, k \ne i$), so
# $\hat D$ is unbiased with $\operatorname{Var}\hat D_i = \frac1S\sum_{j\ne i}H_{ij}^2$. The
# penalty compares $\hat D_e$ with $\hat D(\bar L)$, drawn with *independent* probes, and for
# independent $X, Y$, $\mathbb{E}\lVert X - Y\rVert^2 = \lVert\mathbb{E}X - \mathbb{E}Y\rVert^2 +
# \operatorname{tr}\operatorname{Var}X + \operatorname{tr}\operatorname{Var}Y$. Summed over the
# $E$ environments,
#
# $$
# \begin{aligned}
# \mathbb{E}\sum_e\lVert\hat D_e - \hat D(\bar L)\rVert^2
#   &= \underbrace{\sum_e\lVert\operatorname{diag}H_e - \operatorname{diag}\bar H\rVert^2}_{\text{signal}}\\
#   &\quad + \underbrace{\frac1S\Big(\sum_e\operatorname{off}(H_e)
#     + E\,\operatorname{off}(\bar H)\Big)}_{\text{noise}},\\
# \operatorname{off}(H) &= \textstyle\sum_{i\ne j}H_{ij}^2 .
# \end{aligned}
# $$
#
# The noise term does not vanish when the environments agree: it penalises the *off-diagonal
# energy of the head Hessians themselves*, with weight $w/S$ (≈ 600 at the official weight
# 91,257 and $S = 150$). For a logistic head $H = \mathbb{E}[\sigma(1-\sigma)\,
# \tilde\varphi\tilde\varphi^\top]$, so it is lowered by confident predictions
# ($\sigma(1-\sigma)\to 0$) or by small features: the network can *shrink* its head Hessian
# instead of aligning it. In expectation, Hutchinson's penalty is diagonal alignment plus a
# curvature-shrinking regulariser; section 3 measures both parts along training. The check below
# compares the Monte Carlo mean of the penalty over fresh probes with this formula.
#
# Verdict rules for these checks, fixed in advance: the identity and the closed forms hold if the
# largest float64 relative error is below $10^{-12}$; the $1/\sqrt{S}$ law holds if the fitted
# log–log slope is within ±0.1 of $-\tfrac12$ and the measured mean error is within 0.8–1.1 × the exact prediction at
# every S ≥ 10 (the mean of a norm is slightly below its root mean square); the expectation
# formula holds if the Monte Carlo mean lies within 3 standard errors of it.

# %%
bias = C.hutchinson_bias_check(cfg.probes, cfg.bias_trials, d=cfg.hidden, seed=seed)
display(Markdown(markdown_table(
    ["S", "draws", "Monte Carlo mean", "exact", "signal", "noise"],
    [[bias["probes"], bias["trials"], f"{bias['mc_mean']:.5f} ± {bias['mc_se']:.5f}",
      f"{bias['exact']:.5f}", f"{bias['signal']:.5f}", f"{bias['noise']:.5f}"]])))

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
         paper="attributes aligned by HGP/Hutchinson (analysis section; recalled)",
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
bias_z = abs(bias["mc_mean"] - bias["exact"]) / bias["mc_se"]
ch.claim("hutchinson_penalty_bias",
         "E[Hutchinson penalty] = diagonal mismatch + (1/S)·off-diagonal energy",
         paper="derived here from the official penalty",
         ours=f"Monte Carlo {bias['mc_mean']:.5f} vs exact {bias['exact']:.5f} "
              f"({bias_z:.1f} s.e.); noise share {bias['noise'] / bias['exact']:.0%}",
         holds=bias_z <= 3, kind="identity", rule="within 3 standard errors")

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
# IRM runs at the `full` preset only (no claim concerns it; dropped at `book` for time).
# Hutchinson's penalty is computed from the closed-form head Hessians: $\hat D$ is the row sums
# of $H\odot M$ with $M = \frac1S Z^\top Z$ for the probe matrix $Z$ — the same number as the
# 150 Hessian-vector products with the same probes (unit-tested to ~10⁻¹⁶ in value and
# gradient), and about four times cheaper here.
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
# Our analogue replaces MNIST digits by MNIST-1D signals {cite}`greydanus2020mnist1d` from an
# easy generator setting — low noise, shear and scale, and translation limited to ±1 sample —
# 2 × 40 = 80 inputs, 4,800 signals per training environment of which 20 % are held out for
# model selection, and 2,400 test signals (20 % of them held out for the oracle). Everything
# else follows the official scripts: MLP body (here 80 → 64 → 64) with Xavier initialisation,
# one-logit head, full-batch Adam (lr 4.9·10⁻⁴), L2 weight 1.1·10⁻³, 501 steps, penalty weight
# 1 until step 190 and **91,257** afterwards (the loss then divided by it), 150 Hutchinson
# probes; restarts redraw labels, colours and the environment split. Fishr's per-example head
# gradients, which the scripts get from BackPACK, are computed in closed form (unit-tested
# against per-example autograd). The data size is a compromise with the book's time budget
# (about 8,000 signals per environment were the target; 4,800 keep the precondition below).
#
# **Precondition, stated before the runs.** A penalty switched on at step 190 can only trade
# the colour for a shape feature the network has already begun to learn. The shift claims are
# therefore tested only if ERM learns the shape: its accuracy on the grayscale test environment
# must be within **10 points** of the grayscale oracle's (mean over restarts). Otherwise they are
# *not tested*.
#
# **Protocol and verdict rules**, by the book's claim protocol (`lossbook.claims`): each claim is
# a restart-paired effect over the restarts (every method trains on the same restart seeds),
# *held* when its 95 % Student-t interval lies beyond the threshold, *not held* when it lies on
# the other side, *inconclusive* otherwise; for HGP and Hutchinson alike. The verdicts use the
# **paper's protocol**: the final model (step 501) at the official weight. A second row applies
# DomainBed's **training-domain validation** to the checkpoints logged every 10 steps (the one
# with the best held-out training-environment accuracy) — a context claim, since the scripts
# do not select. The **test-domain oracle** (best checkpoint on the held-out 20 % of the test
# environment) is shown but never judged.
#
# - *≫ ERM*: test accuracy − ERM's > 15 points (the research note's reproduction rule);
# - *comparable to V-REx/Fishr*: test accuracy − that of the better of V-REx and Fishr (by
#   mean) > −5 points;
# - *alignment lowers the Hessian distance*: the final **relative** distance between the
#   training environments' head Hessians, $\operatorname{mean}_e\lVert H_e - \bar H\rVert_F/\lVert\bar H\rVert_F$,
#   minus ERM's < 0 — relative, because the absolute distance also falls when the Hessian
#   merely shrinks (section 1);
# - *the distance tracks OOD accuracy, within a run*: for each HGP and Hutchinson run, the
#   Spearman correlation over its checkpoints from step 190 on between the relative train-to-test
#   distance $\lVert H_{\text{test}} - \bar H\rVert_2/\lVert\bar H\rVert_2$ (computable because
#   head Hessians need no labels) and test accuracy, averaged over the two methods per restart;
#   interval < −0.5;
# - *the bound, features fixed*: the paper's bound concerns heads on fixed features. On each
#   final model's frozen features we fit a source head $\theta_S$ (training environments pooled)
#   and a target head $\theta_T$ (test environment; labels used for this analysis only), both
#   logistic regressions with the scripts' L2 weight, and record the transfer gap
#   $L_T(\theta_S) - L_T(\theta_T)$ and, at $\theta_S$, the relative distance
#   $\lVert H_T - H_S\rVert_2/\lVert H_S\rVert_2$. Within each restart, across the five methods'
#   feature maps, the Spearman correlation between the two should be positive: interval > 0.
#   The theorem's exact form (its constants and the gradient term) is recalled, not read, so
#   this tests only the direction the abstract states.

# %% mystnb={"figure": {"caption": "The coloured environments: example inputs (red and green channels) and, per environment, the accuracy of the best predictor that uses colour alone or shape alone.", "name": "fig-03-environments"}, "image": {"alt": "Example inputs shown as red and green channels, and a bar chart of colour-only and shape-only accuracy per environment."}}
envs = C.environments(C.cmnist_specs(cfg, seed, ch.device)[0])
fig = figures.environments(envs, cfg.train_e, cfg.test_e)

# %%
groups = C.all_specs(cfg, seed, ch.device)  # this section's runs and those of sections 4–5
all_results = C.sweep_all(ch.sweep, groups, desc="all runs of the chapter")
collected = C.collect(groups["correlation"], all_results["correlation"])
records = C.rule_records(collected)
summary = C.summarize(records)
methods = [m for m in cfg.methods if m in records] + ["gray"]
histories = {m: collected["histories"][m][C.official_weight(collected["histories"][m])]
             for m in records}
transfers = {m: collected["transfers"][m][C.official_weight(collected["transfers"][m])]
             for m in cfg.methods if m in records}


def fmt(stat, scale=100):
    return f"{scale * stat[0]:.1f} ± {scale * stat[1]:.1f}"


display(Markdown(markdown_table(
    ["method", "train", "held-out train", "test", "gray", "test, train-domain val.",
     "test, oracle"],
    [[figures.label(m), fmt(summary[m]["official"]["train"]),
      fmt(summary[m]["official"]["val"]), fmt(summary[m]["official"]["test"]),
      fmt(summary[m]["official"]["gray"]), fmt(summary[m]["train-domain"]["test"]),
      fmt(summary[m]["oracle"]["test"])] for m in methods])))

# %% [markdown]
# Accuracies in % (mean ± standard deviation over the restarts); the first four columns are the
# final models at the official weight, the last two the checkpoints chosen by the two selection
# rules. First the precondition:

# %%
gray_gap = [o["gray"] - e["gray"] for o, e in zip(records["gray"]["official"],
                                                   records["erm"]["official"])]
precondition = float(np.mean(gray_gap)) <= cfg.max_gray_gap
print(f"grayscale accuracy, oracle − ERM: {100 * np.mean(gray_gap):.1f} points "
      f"(per restart: {', '.join(f'{100 * v:.1f}' for v in gray_gap)}); "
      f"precondition (≤ {100 * cfg.max_gray_gap:.0f} points) "
      f"{'holds' if precondition else 'FAILS: the shift claims are not tested'}")

# %% [markdown]
# ERM learns the shape in this analogue (it classifies gray signals within a few points of the
# oracle), and every penalty, switched on at step 190 with the official weight, trades colour
# for shape: ERM ends at about 12 % on the colour-reversed test environment, the penalties at
# 30–50 %, V-REx highest and Hutchinson lowest. They stay below real Colored MNIST's 65–70 %.
# Training-domain validation undoes all of it: colour *is* more predictive in the training
# environments, so the rule picks each run's colour-driven checkpoint from before step 190 and
# every method lands near 10 % — the DomainBed finding for Colored MNIST, not a property of any
# one penalty. The oracle rule mostly picks the penalised runs' last checkpoints; for ERM, and
# for Hutchinson in some restarts, it picks the first one, logged before the colour is learned.

# %% mystnb={"figure": {"caption": "Train, test and gray accuracy per method (mean ± std over restarts): final models at the official weight (the paper's protocol), and the checkpoints chosen by training-domain validation and by the test-domain oracle.", "name": "fig-03-accuracy"}, "image": {"alt": "Grouped bar charts of train, test and gray accuracy for each method, one panel per selection rule."}}
fig = figures.accuracy_bars(summary, methods, C.RULES)

# %% [markdown]
# **A contrast: the previous design of this chapter.** Until this revision the analogue used
# MNIST-1D signals translated by up to ±8 samples and 2,400 signals per environment. There ERM
# classified gray signals at 57.7 % against the oracle's 69.1 % — 11.4 points apart, so the
# precondition above would have failed — and every penalty, at the same official weight, ended
# at 26–38 % test accuracy (published record of that version, five restarts). The penalties
# removed the colour shortcut but had almost no shape feature to fall back on: the lesson is
# that an invariance penalty switched on after a warm-up cannot create a feature that ERM did
# not already start to learn. With translation limited to ±1 sample the shape is learned early
# and the comparison above is meaningful.

# %% mystnb={"figure": {"caption": "Along training at the official weight (mean over restarts; dotted: the step where the weight jumps): test accuracy, the relative head-Hessian distance between the training environments and from them to the test environment, and the size of the head Hessian.", "name": "fig-03-training-curves"}, "image": {"alt": "Four panels of training curves per method: test accuracy, two relative Hessian distances and the Hessian norm."}}
fig = figures.training_curves(histories, [m for m in cfg.methods if m in histories],
                              cfg.anneal_iters)

# %% [markdown]
# Before step 190 every method behaves like ERM and learns the colour; test accuracy falls to
# about 10 %. When the weight jumps, V-REx reaches its plateau within ~70 steps, while Fishr,
# HGP and most of all Hutchinson are **still climbing at step 501**, where the scripts' protocol
# stops — their verdicts below are those of the protocol, not of a plateau. As test accuracy
# climbs, both relative Hessian distances fall, while ERM's keep growing: the within-run
# association the bound suggests. The last panel shows why the distances must be relative: the
# size of the head Hessian differs fivefold between methods, and Hutchinson's shrinks steadily
# from the first steps on.

# %% mystnb={"figure": {"caption": "The two parts of the expected Hutchinson penalty along training, per method (section 1's formula evaluated on the closed-form head Hessians): diagonal mismatch between environments, and probe noise, the off-diagonal energy of the Hessians divided by S.", "name": "fig-03-hutchinson-parts"}, "image": {"alt": "Two log-scale panels of training curves per method: the signal and the noise parts of the expected Hutchinson penalty."}}
fig = figures.hutchinson_parts(histories, [m for m in cfg.methods if m in histories],
                               cfg.anneal_iters, cfg.probes)

# %%
share = {m: np.mean([h[-1]["hutch_noise"] / (h[-1]["hutch_signal"] + h[-1]["hutch_noise"])
                     for h in histories[m]]) for m in cfg.methods if m in histories}
scale = {m: summary[m]["official"]["hscale"][0] for m in share}
display(Markdown(markdown_table(
    ["method", "noise share of the expected Hutchinson penalty (final)", "‖H̄‖_F (final)"],
    [[figures.label(m), f"{100 * share[m]:.1f} %", f"{scale[m]:.4f}"] for m in share])))

# %% [markdown]
# Hutchinson's penalty, as the scripts compute it, is mostly noise: at every method's final
# model the off-diagonal term is the larger part of its expectation. Minimising it, the
# Hutchinson runs shrink their head Hessians below those of the other penalties — the shrinkage
# section 1 predicts — which is why absolute Hessian distances flatter Hutchinson and are not
# used for the verdicts.

# %% mystnb={"figure": {"caption": "The bound's setting with features fixed: for every final model (colours: methods; markers: restarts), the relative spectral distance between target and source head Hessians at the source-optimal head against the transfer gap.", "name": "fig-03-fixed-features"}, "image": {"alt": "Scatter plot of transfer gap against relative Hessian distance, coloured by method."}}
fixed_rho = [C.spearman([transfers[m][r]["hrel"] for m in transfers],
                        [transfers[m][r]["gap"] for m in transfers])
             for r in range(cfg.restarts)]
fig = figures.fixed_feature_transfer(transfers, fixed_rho)

# %%
ours = [m for m in ("hgp", "hutchinson") if m in records]


def per_restart(method, key="test", rule="official", recs=None):
    """The per-restart `key` of `method` under selection `rule` (restart order)."""
    return [r[key] for r in (recs or records)[method][rule]]


def shift_claims(rule, kind, suffix=""):
    """The two correlation-shift claims under one selection rule."""
    base = {m: per_restart(m, rule=rule) for m in ("vrex", "fishr") if m in records}
    best = max(base, key=lambda m: np.mean(base[m]))
    paper_erm = ("far above ERM (abstract); recalled CMNIST table: ≈ 69–70 % test vs ERM "
                 "14.0 % (Fishr README, same protocol)")
    paper_base = ("comparable (abstract: 'promising'); recalled: on par with Fishr 69.5 %, "
                  "V-REx 67.2 % (Fishr README)")
    if not precondition:
        for cid, text, paper in (("corr_shift_vs_erm", "HGP and Hutchinson ≫ ERM", paper_erm),
                                 ("corr_shift_vs_baselines",
                                  "HGP and Hutchinson comparable to V-REx / Fishr", paper_base)):
            ch.claim(cid + suffix, text + " (correlation shift)", paper=paper,
                     ours="precondition failed: ERM does not learn the shape", holds=None,
                     kind=kind)
        return
    ch.claim_effect("corr_shift_vs_erm" + suffix,
                    "HGP and Hutchinson ≫ ERM on the shifted test environment", paper=paper_erm,
                    ours=f"test acc. − ERM ({C.RULES[rule]})",
                    a={figures.label(m): per_restart(m, rule=rule) for m in ours},
                    b={figures.label(m): per_restart("erm", rule=rule) for m in ours},
                    threshold=0.15, kind=kind, note="analogue on MNIST-1D")
    ch.claim_effect("corr_shift_vs_baselines" + suffix,
                    "HGP and Hutchinson are comparable to V-REx / Fishr", paper=paper_base,
                    ours=f"test acc. − {figures.label(best)} (the better baseline; "
                         f"{C.RULES[rule]})",
                    a={figures.label(m): per_restart(m, rule=rule) for m in ours},
                    b={figures.label(m): base[best] for m in ours}, threshold=-0.05, kind=kind)


shift_claims("official", "paper")
shift_claims("train-domain", "context", "_tdv")
ch.claim_effect("hessian_distance_lower",
                "Hessian alignment lowers the relative Hessian distance between environments",
                paper="aligning Hessians is the method's aim (abstract); the official script "
                      "logs ‖H₀ − H₁‖_F",
                ours="final mean_e ‖H_e − H̄‖_F / ‖H̄‖_F − ERM's",
                a={figures.label(m): per_restart(m, "hrel_train") for m in ours},
                b={figures.label(m): per_restart("erm", "hrel_train") for m in ours},
                direction="less", digits=4)
within = [np.mean([C.within_run_spearman(histories[m][r], cfg.anneal_iters) for m in ours])
          for r in range(cfg.restarts)]
ch.claim_effect("distance_tracks_ood", "Within a run, the Hessian distance tracks OOD accuracy",
                paper="smaller head-Hessian distance ⇒ better transfer (abstract's bound)",
                ours="Spearman ρ(‖H_test − H̄‖₂/‖H̄‖₂, test acc.) over checkpoints from step "
                     f"{cfg.anneal_iters}, mean of HGP and Hutchinson per restart",
                a=within, threshold=-0.5, direction="less", digits=2)
ch.claim_effect("hessian_bound_fixed_features",
                "With features fixed, a larger Hessian distance goes with a larger transfer gap",
                paper="‖H_S − H_T‖₂ upper-bounds the transfer measure (abstract; the theorem's "
                      "form is recalled)",
                ours="per-restart Spearman ρ over the methods' frozen features of "
                     "(‖H_T − H_S‖₂/‖H_S‖₂ at θ_S, L_T(θ_S) − L_T(θ_T))",
                a=fixed_rho, threshold=0.0, direction="greater", digits=2)

# %% [markdown]
# ## 4. Label shift: the imbalanced variant
#
# The official `*_imbalanced.py` scripts move the label distribution as well: environment 0
# receives 97 % of the digits below 5 and 3 % of the others, environment 1 the rest — so each
# training environment is dominated by one class, on top of the colour correlation. Same
# protocol (final model at the official weight), the same precondition and the same verdict rule
# as the first claim.

# %%
paper_ls = "promising performance under label shift (abstract); table recalled"
if cfg.label_shift:
    ls_records = C.rule_records(C.collect(groups["label"], all_results["label"]))
    ls_summary = C.summarize(ls_records)
    display(Markdown(markdown_table(
        ["method", "train", "test", "gray", "test, train-domain val.", "test, oracle"],
        [[figures.label(m), fmt(ls_summary[m]["official"]["train"]),
          fmt(ls_summary[m]["official"]["test"]), fmt(ls_summary[m]["official"]["gray"]),
          fmt(ls_summary[m]["train-domain"]["test"]), fmt(ls_summary[m]["oracle"]["test"])]
         for m in methods])))
    ls_gap = np.mean([o["gray"] - e["gray"] for o, e in zip(ls_records["gray"]["official"],
                                                             ls_records["erm"]["official"])])
    if ls_gap <= cfg.max_gray_gap:
        ch.claim_effect("label_shift_vs_erm", "HGP and Hutchinson ≫ ERM under label shift",
                        paper=paper_ls, ours="test acc. − ERM (official protocol)",
                        a={figures.label(m): per_restart(m, recs=ls_records) for m in ours},
                        b={figures.label(m): per_restart("erm", recs=ls_records) for m in ours},
                        threshold=0.15)
    else:
        ch.claim("label_shift_vs_erm", "HGP and Hutchinson ≫ ERM under label shift",
                 paper=paper_ls, ours=f"precondition failed (gray gap {100 * ls_gap:.1f} "
                                      "points)", holds=None)
else:
    display(Markdown("*Not run at this preset* (it doubles the run time); "
                     "`lossbook run 03_hessian_alignment --preset extended` runs it."))
    ch.claim("label_shift_vs_erm", "HGP and Hutchinson ≫ ERM under label shift",
             paper=paper_ls, ours="runs at the extended preset", holds=None)

# %% mystnb={"figure": {"caption": "With label shift added: train, test and gray accuracy per method (mean ± std over restarts), one panel per selection rule.", "name": "fig-03-label-shift"}, "image": {"alt": "Grouped bar charts of accuracy per method under label shift, one panel per selection rule."}}
if cfg.label_shift:
    fig = figures.accuracy_bars(ls_summary, methods, C.RULES)

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
                    paper="small gains on DomainBed (abstract: 'promising'); table recalled",
                    ours="test acc. − ERM, averaged over held-out domains", a=gains,
                    threshold=0.02, direction="equivalent")
else:
    display(Markdown("*Not run at this preset*; `--preset extended` runs it."))
    ch.claim("diversity_small_gain", "Under diversity shift the gain over ERM is small",
             paper="small gains on DomainBed (abstract: 'promising'); table recalled",
             ours="runs at the extended preset", holds=None)

# %% mystnb={"figure": {"caption": "Leave-one-domain-out test accuracy per held-out domain (mean ± std over restarts), per method.", "name": "fig-03-diversity"}, "image": {"alt": "Grouped bar chart of test accuracy per held-out domain and method."}}
if cfg.diversity:
    fig = figures.diversity(dv_table, dv_methods, domains_)

# %% [markdown]
# ## 6. Paper versus ours
#
# The paper's own Colored-MNIST table could not be read (see the introduction); what we recall
# of it is that HGP and Hutchinson reach about 69–70 % test accuracy, on par with Fishr —
# *recalled, not verified*. The published same-protocol numbers below are those of the Fishr
# repository's README (real Colored MNIST, the scripts' protocol, 10 restarts), which, as we
# recall, the paper's table reuses for its baselines. Ours: the MNIST-1D analogue, the same
# protocol (final model at the official weight), five restarts.

# %%
published = {"erm": "86.4 / 14.0 / 71.0", "irm": "71.0 / 65.6 / 66.1",
             "vrex": "71.7 / 67.2 / 68.6", "fishr": "71.0 / 69.5 / 70.2",
             "hgp": "≈ 69–70 % test (recalled)", "hutchinson": "≈ 69–70 % test (recalled)"}
display(Markdown(markdown_table(
    ["method", "published: train / test / gray", "ours: train / test / gray"],
    [[figures.label(m), published.get(m, "–"),
      " / ".join(f"{100 * summary[m]['official'][k][0]:.1f}" for k in ("train", "test", "gray"))]
     for m in methods])))

# %% [markdown]
# ## 7. Verdicts
#
# Every verdict is computed from the numbers above by the rule stated before them.

# %%
ch.claims_table()

# %% [markdown]
# **Reading the verdicts.**
#
# - *Theory.* The identity behind HGP, the closed-form head Hessian and Hutchinson's $1/\sqrt{S}$
#   law hold exactly, and so does the expectation of Hutchinson's penalty: diagonal mismatch
#   plus $\frac1S$ times the off-diagonal energy of the head Hessians. At 150 probes the second
#   part is almost all of it (about 99 % at every trained model here), so in practice the
#   penalty mostly asks for a *smaller* head Hessian — and the Hutchinson runs shrink theirs to
#   a third of ERM's.
# - *Correlation shift, paper's protocol.* With a shape feature ERM actually learns, HGP beats
#   ERM by about 29 points, an interval wholly above the 15-point rule; Hutchinson by about 21,
#   an interval that touches 15 — hence *inconclusive* for the pair in the book's seed-set (both
#   fresh seed-sets of the audit found both intervals above 15 points: the claim leans towards
#   held but is not settled at five restarts). Neither matches the best baseline: V-REx ends 8
#   (HGP) and 16 (Hutchinson) points higher here, below the −5-point margin; in the audit's
#   seed-sets the gap was 3–11 points and the intervals straddled the margin once, so the table
#   reports *inconclusive*. HGP, Fishr and Hutchinson are still improving at step 501, so a
#   longer schedule might narrow the gap; the paper's protocol, which we follow, stops there.
# - *Training-domain validation* (context rows) selects colour-driven checkpoints for every
#   method; the "comparable" row then holds only trivially, because every method is at ERM's
#   level.
# - *Hessian distances.* Measured relative to the Hessian's size, alignment lowers the
#   distance between the training environments' head Hessians (HGP and Hutchinson below ERM),
#   within each run the train-to-test distance falls as test accuracy rises (ρ ≈ −1), and with
#   features fixed the feature maps with larger relative Hessian distance have larger transfer
#   gaps (ρ ≈ 0.8 per restart) — the direction the abstract's bound states. The previous version
#   of this chapter compared *absolute* distances across methods pooled together and found no
#   relation; the relative, within-run and fixed-feature forms are the ones the bound speaks to.
# - *Scale and cost.* An 80-input MLP, 2 × 3,840 training signals, five restarts, one weight.
#   The restarts train one by one: the training loop is this chapter's own (one full batch per
#   environment, a per-step penalty schedule, per-run Hutchinson probes), and stacking seeds
#   would need a batched twin of every penalty with its own equality test — instead the cost
#   was cut by computing Hutchinson's penalty in closed form (equal, tested), dropping IRM and
#   the weight grid at `book`. The `extended` preset adds label and diversity shift; `full`
#   runs real Colored MNIST (392-390-390-1 MLP, 10 restarts, IRM included) on a GPU.
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
