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
# # Transformers learn in-context by gradient descent
#
# *Reproducing {cite:t}`vonoswald2023icl` (ICML 2023).*
#
# Give a Transformer a handful of input–output pairs and a new input, and it predicts the
# new output without any weight update: *in-context learning*. Von Oswald et al. propose a
# mechanism for it. They write down weights with which a single **linear self-attention** (LSA)
# layer performs exactly **one step of gradient descent** on the least-squares loss of the
# pairs in its context, and then show that LSA layers *trained* on random linear-regression
# tasks find this solution: same loss, same predictions, same sensitivities to the input, and
# weights that match the construction. Deeper stacks do better than plain gradient descent
# with as many steps, by learning a curvature correction they call GD++.
#
# The whole study is synthetic, so this chapter runs it at the paper's own scale: the task,
# model, initialisation, optimiser, batch size and number of steps of the official JAX code
# {cite}`vonoswald2023code` (its notebook `constructed_token_setup.ipynb`), ported to torch.
#
# **What we checked against.** The paper (arXiv v2, the ICML version) and its official code. The
# paper reports its results as figures and gives few numbers in its text; we quote its words
# and those numbers with their section, figure and appendix numbers. Its equations (Eqs. 1–8,
# Proposition 1 with the construction in App. A.1, GD++ in App. A.10) are re-derived below.
# Where the paper's text and its code disagree (the input range, the optimiser settings), we
# follow the code that produced its figures and say so.

# %% tags=["parameters"]
preset = "book"
seed = 0
device = "auto"
overrides = {}

# %%
import time

import numpy as np
import torch
from IPython.display import Markdown, display

import lossbook
from lossbook import icl
from lossbook.chapters import icl_gd as C
from lossbook.chapters import icl_gd_figures as figures
from lossbook.claims import markdown_table

ch = lossbook.start("05_icl_gd", preset=preset, seed=seed, device=device, overrides=overrides)
cfg = ch.cfg
print(f"preset={ch.preset} seed={ch.seed} device={ch.device} workers={ch.workers}")

# %% [markdown]
# ## 1. In-context linear regression as a sequence of tokens
#
# A task is a random linear map: $w\sim\mathcal{N}(0, I_d)$, inputs
# $x_1,\dots,x_N,x_q\sim\mathcal{U}(-1,1)^d$ and targets $y_j = w^\top x_j$, with $d = N = 10$.
# Each context pair becomes one token $e_j = (x_j, y_j)\in\mathbb{R}^{d+1}$, and the query
# becomes $e_q = (x_q, 0)$: its output slot starts at zero. The model must predict
# $y_q = w^\top x_q$ from the sequence $(e_1,\dots,e_N,e_q)$ — a fresh $w$ every time, so
# nothing about a particular task can be stored in the weights.
#
# **The model.** A linear self-attention layer with weights $W_Q, W_K, W_V \in
# \mathbb{R}^{k\times(d+1)}$ and projection $P\in\mathbb{R}^{(d+1)\times k}$ updates every
# token $e_t$ (context and query) by
#
# $$
# e_t \;\leftarrow\; e_t + P W_V \sum_{j=1}^{N} e_j\,\big(e_j^\top W_K^\top W_Q\, e_t\big),
# $$
#
# attention without the softmax, without $1/\sqrt{k}$, keys and values from the $N$ context
# tokens only. There is no MLP, no LayerNorm and no bias. The prediction is read from the
# query's output slot **with a minus sign**, $\hat y = -[e_q]_{d+1}$, and the training loss is
# $\tfrac12\,\mathbb{E}(y_q-\hat y)^2$. Following the official code, the key size is
# $k = 11$ and weights start tiny: truncated normal with variance $0.002/\text{fan-in}$. In code
# (the last layer of `predict` re-associates the same product for the query token only):
#
# ```{literalinclude} ../src/lossbook/icl.py
# :pyobject: LSA.layer
# ```
#
# **Proposition 1: one layer can be one step of gradient descent.** Gradient descent on the
# context's least-squares loss $L(w) = \frac{1}{2N}\sum_j (w^\top x_j - y_j)^2$ from $w_0 = 0$
# moves to $w_1 = \frac{\eta}{N}\sum_j y_j x_j$ and predicts $\hat y = w_1^\top x_q$. Take
#
# $$
# W_K = W_Q = \begin{pmatrix} I_d & 0\\ 0 & 0\end{pmatrix},\qquad
# W_V = \begin{pmatrix} I_d & 0\\ 0 & -1\end{pmatrix},\qquad
# P = \begin{pmatrix} 0 & 0\\ 0 & \eta/N\end{pmatrix}.
# $$
#
# Then $W_K^\top W_Q$ keeps the inputs, $e_j^\top W_K^\top W_Q e_q = x_j^\top x_q$, and $PW_V$
# writes $-\frac{\eta}{N}y_j$ into the output slot: the query's slot becomes
# $0 - \frac{\eta}{N}\sum_j y_j\,x_j^\top x_q = -w_1^\top x_q$, i.e. $\hat y = w_1^\top x_q$
# exactly. The same layer applied to the context tokens turns every $y_j$ into the residual
# $y_j - w_1^\top x_j$, so $K$ such layers are $K$ steps of gradient descent. With a non-zero
# block $-\frac{\gamma}{N}I_d$ in $P$, the layer also moves the inputs,
# $x_t \leftarrow x_t - \frac{\gamma}{N}\sum_j x_j x_j^\top x_t$: this is **GD++**, gradient
# descent with a curvature correction. Our implementation of the construction:
#
# ```{literalinclude} ../src/lossbook/icl.py
# :pyobject: gd_construction
# ```
#
# The check below runs the constructed LSA and an independent implementation of gradient
# descent (in weight space, or on the tokens for GD++) on the same 2,048 tasks: they agree to
# rounding error, in single and double precision, for one to three steps, for GD++, and from a
# random starting point $w_0$ (Proposition 1 in full: $w_0$ enters $W_V$'s last row and the
# query starts at $-w_0^\top x_q$).

# %%
check = C.construction_check(cfg, seed)
display(Markdown(markdown_table(
    ["precision", "steps", "γ (GD++)", "start w0", "max \\|ŷ_LSA − ŷ_GD\\|", "max \\|ŷ_GD\\|"],
    [[r["dtype"], r["steps"], f"{r['gamma']:g}", r["w0"], f"{r['max_abs_diff']:.1e}",
      f"{r['scale']:.1f}"] for r in check])))
max_err = {dt: max(r["max_abs_diff"] / r["scale"] for r in check if r["dtype"] == dt)
           for dt in ("float32", "float64")}

# %% [markdown]
# ## 2. The gradient-descent baseline and its step size
#
# The comparison is only fair if gradient descent gets its best step size. The prediction of
# one step, $\hat y = \eta\,a$ with $a = \frac1N\sum_j y_j x_j^\top x_q$, is linear in $\eta$,
# so the loss is a parabola in $\eta$ and the line search is exact:
# $\eta^* = \overline{a\,y_q}/\overline{a^2}$ over 32,768 tasks that are not the test tasks
# (the paper line-searches $\eta$ on $10^4$ training tasks, Sec. 3; the official notebook scans a
# grid of step 0.1 on its test tasks). For several steps, and for
# GD++'s pair $(\eta, \gamma)$, we minimise the loss on the same tasks numerically.
#
# For uniform inputs the one-step optimum also has a closed form, which we derived ourselves
# as a check on the line search: with $\sigma^2 = \operatorname{Var}x = 1/3$ and the uniform
# kurtosis $9/5$,
#
# $$
# \eta^* = \frac{N}{\sigma^2\,(d + N - \tfrac15)},\qquad
# L(\eta^*) = \frac{d\,\sigma^2}{2}\cdot\frac{d - \tfrac15}{d + N - \tfrac15},
# $$
#
# $\eta^* = 1.515$ and $L(\eta^*) = 0.825$ here. A single LSA layer that reaches this loss is
# as good as the best one-step gradient descent. It should not be able to do better: for
# Gaussian inputs, one step of (preconditioned) gradient descent is provably the best a single
# linear self-attention layer can do {cite}`mahankali2024onestep,ahn2023preconditioned`, and we
# expect the same for our uniform inputs by symmetry (not proved here).

# %%
curves = C.gd_loss_curves(cfg, seed)
eta_closed, loss_closed = icl.optimal_eta(cfg.dim, cfg.context, cfg.input_range)
(eta_ls, loss_ls) = curves[1][2]
display(Markdown(markdown_table(
    ["", "η*", "loss at η*"],
    [["closed form (1 step)", f"{eta_closed:.4f}", f"{loss_closed:.4f}"],
     [f"exact line search on {cfg.line_search_tasks:,} tasks (1 step)", f"{eta_ls:.4f}",
      f"{loss_ls:.4f}"],
     ["bounded search on the same tasks (2 steps)", f"{curves[2][2][0]:.4f}",
      f"{curves[2][2][1]:.4f}"]])))

# %% mystnb={"figure": {"caption": "Gradient descent's test loss against its step size $\\eta$, for one and two steps, with the closed-form optimum marked.", "name": "fig-05-line-search"}, "image": {"alt": "Line plot of test loss against step size for one-step and two-step gradient descent."}}
fig = figures.line_search(curves, eta_closed)

# %% [markdown]
# ## 3. Training a single LSA layer
#
# We train the LSA layer as the official notebook does: Adam (learning rate $10^{-3}$,
# $\beta = (0.9, 0.98)$, $\epsilon = 10^{-9}$) after clipping the gradient's global norm at
# $10^{-3}$, batches of 2,048 **freshly drawn** tasks per step ("we never see the exact same
# training task twice", Sec. 3), 5,000 steps. The paper's App. A.12 lists Adam "with default
# parameters" and clipping at global norm 10 instead; we follow the notebook, which produced
# Fig. 2. Every 100 steps we score the model on 10,000 fixed test tasks (the paper's
# $T_\text{val} = 10^4$, Sec. 3) against one step of gradient descent with the
# line-searched $\eta^*$ on the same tasks, with the paper's two alignment measures: the
# **cosine between the sensitivities** $\partial\hat y/\partial x_q$ of the two models (for
# gradient descent this is the learned weight vector $w_1$; for the LSA it is whatever linear
# model it effectively applies to the query) and the **L2 distance between their predictions**.
# We train five seeds (as the paper's Fig. 2: "mean/std. or the single runs of 5 seeds") at the
# input range of the paper's text, $\mathcal{U}(-1,1)$, and one at the official notebook's range
# (below; at the `book` preset this check trains for 1,500 steps, to fit the CPU budget). Runs
# are cached and spread over worker processes.
#
# ```{admonition} Verdict rules, fixed before the book runs
# :class: note
# The thresholds were chosen after one 1,000-step pilot run (to see the noise floor of Adam at
# a constant learning rate), before any run reported here. Claims about trained models are
# *not tested* at a preset that trains for fewer than 1,000 steps (`smoke`).
#
# **Precondition: training has plateaued** (rule added with the paper reading, before its
# result was computed). For every seed, the mean test loss over the last 10 % of the training
# steps (at least three evaluations) may differ by at most 1 % from its mean over the window
# just before — half the tightest tolerance below (2 %), so further training could not move a
# verdict — and the final loss must be below 90 % of the initial one (a seed stuck before the
# paper's phase transition, App. A.11, is flat too). A group of runs that fails it leaves its
# claims *not tested*. *Correction, stated openly:* the first version of this rule asked for
# half the initial loss, which no model can reach — one step of GD itself ends at 49.5 % of
# it (0.825 of 1.667) — and every one-layer run failed it by that hair; we changed 50 % to 90 %
# after seeing this. The flatness part, which decides the two-layer claims, is unchanged.
#
# Every claim about
# trained models follows the book's protocol (`lossbook.claims`): the per-seed quantity below,
# its 95 % Student-t interval over the seeds, *held* when the interval lies wholly on the
# claimed side of the tolerance (inside it, for "the same"), *not held* when it lies wholly on
# the other side, *inconclusive* otherwise:
# - *same loss*: test loss / one-step GD's on the same tasks − 1 within ±2 %;
# - *same predictions*: mean $|\hat y_\text{LSA} - \hat y_\text{GD}|$ below 10 % of its value
#   at initialisation (= mean $|\hat y_\text{GD}|$, where the paper's curve starts);
# - *same sensitivities*: mean cosine above 0.99;
# - *weights match the construction up to scale*: cosine above 0.99 between the trained and
#   the constructed $W_K^\top W_Q$ (its first $d$ columns) and between the last rows of $PW_V$
#   — the only parts that reach a one-layer prediction — and the step size the layer
#   implements within ±5 % of $\eta^*$;
# - *same out-of-distribution behaviour* (a derived check, see section 5): on inputs from
#   $\alpha\cdot\mathcal{U}(-1,1)$, $\alpha\in[0.5, 2]$, the largest |LSA / GD − 1| over the
#   scales below 10 %, tested where GD's loss changes by more than 10× over the scales;
# - *deeper is better than plain GD* (two layers): test loss / two steps of GD's below 0.98;
#   *and matches GD++*: loss / two-step GD++'s − 1 within ±5 %, and sensitivity cosine with
#   GD++ minus that with GD above 0.
#
# The same-loss and sensitivity checks at the official code's input range (one seed) and
# Proposition 1's construction are implementation checks (kind `identity`), decided by the
# same tolerances without an interval. The out-of-distribution check keeps its interval but is
# kind `identity` too: it follows from the weights (section 5), so it is not counted in the
# reproduction score.
# ```

# %% mystnb={"figure": {"caption": "The main comparison: the trained one-layer LSA's test loss against the loss of one step of GD, and the alignment of its predictions and sensitivities with GD's over training (one line per seed).", "name": "fig-05-training"}, "image": {"alt": "Three panels of training curves: test loss with the gradient-descent level, prediction distance and sensitivity cosine, one line per seed."}}
run_specs = C.specs(cfg, seed, ch.device)
cached = sum(ch.run_cache.get(C.lsa_run, s) is not None for s in run_specs)
started = time.time()
results = ch.sweep(C.lsa_run, run_specs, desc="LSA models")
sweep_s = time.time() - started
groups = C.by_group(run_specs, results)
main_runs, code_runs = groups["1 layer (paper)"], groups.get("1 layer (code)", [])
gd_loss = main_runs[0][1]["ref_loss"]["gd"]
fig = figures.training(main_runs, gd_loss, "test loss, x ~ U(−1, 1)")


# %%
def summary_rows(runs):
    final = [r["final"] for _, r in runs]
    loss, ratio = (C.mean_std(v) for v in ([f["test_loss"] for f in final],
                                            [f["test_loss"] / r["ref_loss"]["gd"]
                                             for f, (_, r) in zip(final, runs)]))
    match = [C.weight_match(r, s) for s, r in runs]
    return [f"{runs[0][0]['input_range'] / 2:g}", len(runs), f"{loss[0]:.4f} ± {loss[1]:.4f}",
            f"{runs[0][1]['ref_loss']['gd']:.4f}", f"{ratio[0]:.4f}",
            f"{min(f['cos_gd'] for f in final):.4f}",
            f"{max(f['pred_dist_rel_gd'] for f in final):.3f}",
            f"{np.mean([m['eta_lsa'] for m in match]):.3f} vs {match[0]['eta_gd']:.3f}"]


display(Markdown(markdown_table(
    ["x ~ U(−a, a), a =", "seeds", "LSA test loss", "1-step GD loss", "LSA / GD",
     "min cosine", "max pred. distance / init", "η of the LSA vs η*"],
    [summary_rows(runs) for runs in (main_runs, code_runs) if runs])))

# %% [markdown]
# Within a few hundred steps the test loss falls onto the gradient-descent line and stays
# there; the sensitivities turn parallel (cosine → 1) as the loss drops, and the predictions
# of the two models converge. What remains is a small, steady gap, presumably the jitter of
# Adam at a constant learning rate around the optimum: it shows in the distances (a few % of
# their initial value) and hardly in the loss (a few tenths of a per cent).
#
# **Input range: the paper's text versus its code.** The paper's text samples
# $x\sim\mathcal{U}(-1,1)^{n_I}$ (Sec. 3), as do the axis labels of the official notebook, but
# its data function draws from $\mathcal{U}(-r/2, r/2)$ and the notebook sets $r = 1$, i.e.
# $\mathcal{U}(-\tfrac12,\tfrac12)$. The paper's own numbers side with the code: App. A.11
# calls 0.2 "the desired GD loss" (our closed form: 0.825 on $\mathcal{U}(-1,1)$, 0.206 on
# $\mathcal{U}(-\tfrac12,\tfrac12)$), the loss axis of Fig. 2 spans 0.2–0.4, and App. A.10
# gives the largest eigenvalue of $XX^\top$ over $10^4$ tasks with $N = 10$ as 4.6 — the cell
# below computes it for both ranges. So the paper's figures are on the code's scale.
# Rescaling the inputs by $c$ rescales $\eta^*$ by $c^{-2}$ and every loss by $c^2$ and changes
# nothing else for gradient descent; the second row of the table above trains the LSA on the
# code's range to check that the trained model does not care either.

# %%
def max_eigenvalue(input_range, n=10_000):
    """Largest eigenvalue of XXᵀ (X: the N context inputs of a task) over n tasks."""
    tasks = icl.sample_tasks(n, dim=cfg.dim, context=cfg.context, input_range=input_range,
                             generator=torch.Generator().manual_seed(seed))
    x = tasks.tokens[:, :-1, :-1]
    return float(torch.linalg.eigvalsh(x.transpose(1, 2) @ x).max())


eig_max = {f"U(−{r / 2:g}, {r / 2:g})": max_eigenvalue(r) for r in (2.0, 1.0)}
display(Markdown("Largest eigenvalue of $XX^\\top$ over 10,000 tasks: "
                 + ", ".join(f"**{v:.1f}** for x ~ {k}" for k, v in eig_max.items())
                 + " (paper, App. A.10: 4.6)."))

# %% [markdown]
# **Precondition: has training plateaued?** The check fixed in section 3, for every group of
# trained models (the two-layer models of section 6 included): per group, the largest change
# over its seeds of the mean test loss between the last 10 % of training and the window before
# it, and the largest final / initial loss.

# %%
plateaus = {name: [C.plateau(r["history"], min_points=min(3, len(r["history"]) // 2))
                   for _, r in runs] for name, runs in groups.items()}  # (smoke: short runs)
flat = {name: all(abs(p["change"]) <= 0.01 and p["fallen"] < 0.9 for p in checks)
        for name, checks in plateaus.items()}
display(Markdown(markdown_table(
    ["models", "seeds", "steps", "windows (steps)", r"max \|change\|", "max final / initial",
     "plateaued"],
    [[name, len(checks), groups[name][0][0]["steps"],
      "({:.0f}, {:.0f}] vs ({:.0f}, {:.0f}]".format(*checks[0]["window"][:2],
                                                    *checks[0]["window"][1:]),
      f"{max(abs(p['change']) for p in checks):.2%}", f"{max(p['fallen'] for p in checks):.3f}",
      "yes" if flat[name] else "**no**"] for name, checks in plateaus.items()])))

# %% mystnb={"figure": {"caption": "The precondition: the last part of every training curve, as the test loss relative to its mean over the last 10 % of training (one line per seed); shaded, the two windows compared, dotted, the ±1 % band.", "name": "fig-05-plateau"}, "image": {"alt": "One panel per group of trained models showing the tail of the test-loss curves, flat within about one per cent."}}
fig = figures.plateau(groups, plateaus)

# %% [markdown]
# ## 4. The trained weights next to the construction
#
# A trained layer has four matrices, but its function depends only on the products
# $W_K^\top W_Q$ and $PW_V$, and a scalar can move freely between the two. As in the official
# plots we divide $W_K^\top W_Q$ by the mean of its input diagonal and multiply $PW_V$ by the
# same number. Hatched: entries that cannot influence a one-layer prediction (the last column
# of $W_K^\top W_Q$ multiplies the query's output slot, which is 0; the first $d$ rows of
# $PW_V$ write into the query's inputs, which are never read) — they do not affect the loss,
# so nothing drives them to the construction's zeros.

# %%
seed0_spec, seed0 = main_runs[0]
match0 = C.weight_match(seed0, seed0_spec)
matches = [C.weight_match(r, s) for s, r in main_runs]
display(Markdown(markdown_table(
    ["seed", "cos W_KᵀW_Q (first d columns)", "cos last row of PW_V", "cos W_KᵀW_Q (all)",
     "cos PW_V (all)", "η of the LSA", "η* (line search)"],
    [[s["seed"], f"{m['cos_kq']:.4f}", f"{m['cos_pv']:.4f}", f"{m['cos_kq_full']:.4f}",
      f"{m['cos_pv_full']:.4f}", f"{m['eta_lsa']:.4f}", f"{m['eta_gd']:.4f}"]
     for (s, _), m in zip(main_runs, matches)])))

# %% mystnb={"figure": {"caption": "Trained weights next to the construction: heat maps of $W_K^\\top W_Q$ and $P W_V$ (normalised so that the input diagonal of $W_K^\\top W_Q$ is 1). Hatched entries cannot reach a one-layer prediction.", "name": "fig-05-weights"}, "image": {"alt": "A grid of heat maps comparing the trained attention weight products with the constructed ones."}}
fig = figures.weights([("trained LSA", {"KQ": match0["KQ"], "PV": match0["PV"], "trained": 1}),
                       ("construction (η*)", {"KQ": match0["KQ_gd"], "PV": match0["PV_gd"]})],
                      cfg.dim)

# %% [markdown]
# The trained layer *is* the construction: an identity block in $W_K^\top W_Q$, a single
# negative entry in the corner of $PW_V$, and — once the arbitrary scale is removed — a step
# size within a few per cent of the line-searched one. Nothing in training asked for this: the
# loss only sees predictions.
#
# ## 5. Out of distribution: larger and smaller inputs
#
# If the trained layer really runs gradient descent, it should fail exactly like gradient
# descent when the test tasks differ from the training ones. The paper's test (Sec. 3, item 2;
# Fig. 2, outer right; App. A.2): draw test inputs from $\mathcal{U}(-\alpha,\alpha)$ — for us
# $\alpha\cdot\mathcal{U}(-1,1)$ — with $\alpha$ from 0.5 to 2, keep the trained weights and
# GD's $\eta^*$; the paper finds that "the Transformer performs equally to gradient descent".
# For larger inputs the fixed step size overshoots (GD's prediction grows like $\alpha^3$, the
# target like $\alpha$), for smaller ones it undershoots.
#
# **Why this is a derived check, not a separate finding.** A one-layer LSA's prediction is
# fixed by the two weight products compared in section 4: $\hat y = -e_q^\top$(last row of
# $PW_V$)$\,\sum_j e_j e_j^\top W_K^\top W_Q e_q$, for *any* input. If those products are the
# construction up to scale, with step size $\eta_\text{LSA}$, then the layer *is* one step of GD
# with step $\eta_\text{LSA}$ on every input distribution, and its out-of-distribution loss
# differs from GD's only through $\eta_\text{LSA}/\eta^*$ and the small residual mismatch that
# the `weights` claim already bounds. The paper draws the same inference: the trained weights
# "coincide with the LSA-layer weight construction of Proposition 1, hence implementing a step
# of gradient descent, leading to the same learning capabilities on in- and out-of-distribution
# tasks" (Sec. 3). So we keep the check and its interval, as evidence that nothing outside the
# compared weights matters, but record it as kind `identity` (derived from `weights`), outside
# the reproduction score.

# %% mystnb={"figure": {"caption": "Out of distribution: test loss when inputs come from a scaled range $\\alpha\\cdot\\mathcal{U}$, for the trained one-layer LSA (one line per seed) and one step of GD (left), and their ratio (right).", "name": "fig-05-ood"}, "image": {"alt": "Two line plots against the input scale alpha: loss of the trained model and of gradient descent, and their ratio."}}
fig = figures.ood(main_runs, "U(−1, 1)")
ood_dev = [max(abs(np.array(r["ood"]["lsa"]) / np.array(r["ood"]["gd"]) - 1))
           for _, r in main_runs]
gd_ood = np.array(main_runs[0][1]["ood"]["gd"])
gd_spread = gd_ood.max() / gd_ood.min()

# %% [markdown]
# The trained layer and one step of gradient descent trace the same curve over two orders of
# magnitude of loss: the layer has not learned "the answer for inputs like these", it has
# learned the algorithm, with the algorithm's fixed step size and the same failure when the
# inputs outgrow it — as it must, given its weights. The paper also scales the teacher,
# $\alpha W$, and draws inputs from normal, exponential and Laplace distributions (App. A.2,
# Fig. 6); we do not run those.
#
# ## 6. Two layers versus two steps
#
# Stacking layers should give more gradient steps. We train a two-layer LSA with shared
# weights (the official "recurrent" Transformer; init scale $0.002/2$; the official notebook's
# 5,000 steps, five seeds) and compare it with two steps of GD (η by line search) and two steps
# of GD++ ((η, γ) fitted on the same tasks; the official code trains them with Adam instead).
#
# **Why 5,000 steps: the precondition, not the result.** An earlier version of this chapter
# trained these models for 2,500 steps to save CPU time; there the plateau check of section 3
# failed (two of five seeds were still falling by 1.25 % and 1.56 % over the last 10 % of
# training, and likewise in both fresh seed-sets of its audit), so the claims about them could
# not be judged. We therefore train them for the notebook's full 5,000 steps (about 40 % more
# CPU time for the chapter; it still fits the budget, section 9). The plateau check still decides whether the end point can be judged;
# where it cannot, the two claims are *not tested*: their numbers are shown, not judged (the
# `full` preset trains non-recurrent stacks for the official 50,000 steps).

# %%
deep_groups = dict(sorted(((k, v) for k, v in groups.items() if k.endswith("layers")),
                          key=lambda kv: kv[1][0][0]["layers"]))
deep_summary = []
for runs in deep_groups.values():
    layers = runs[0][0]["layers"]
    final = [r["final"] for _, r in runs]
    base = runs[0][1]["baselines"]
    deep_summary.append({
        "layers": layers, "loss": C.mean_std(f["test_loss"] for f in final),
        "gd": runs[0][1]["ref_loss"]["gd"], "gdpp": runs[0][1]["ref_loss"]["gdpp"],
        "worst_vs_gd": max(f["test_loss"] / runs[0][1]["ref_loss"]["gd"] for f in final),
        "worst_vs_gdpp": max(abs(f["test_loss"] / runs[0][1]["ref_loss"]["gdpp"] - 1)
                             for f in final),
        "closer_to_gdpp": all(f["cos_gdpp"] > f["cos_gd"] for f in final),
        "cos_gd": min(f["cos_gd"] for f in final), "cos_gdpp": min(f["cos_gdpp"] for f in final),
        "eta": base["eta"], "gdpp_params": (base["gdpp_eta"], base["gdpp_gamma"]),
        "shared": runs[0][0]["shared"], "runs": runs})
if deep_summary:
    display(Markdown(markdown_table(
        ["layers K", "seeds", "LSA test loss", "GD (K steps)", "GD++ (K steps)",
         "min cos vs GD", "min cos vs GD++", "GD η", "GD++ (η, γ)"],
        [[d["layers"], len(d["runs"]), "{:.4f} ± {:.4f}".format(*d["loss"]), f"{d['gd']:.4f}",
          f"{d['gdpp']:.4f}", f"{d['cos_gd']:.3f}", f"{d['cos_gdpp']:.3f}", f"{d['eta']:.3f}",
          "({:.3f}, {:.3f})".format(*d["gdpp_params"])] for d in deep_summary])))

# %%
for d in deep_summary:
    changes = [p["change"] for p in plateaus[d["runs"][0][0]["group"]]]
    display(Markdown(
        f"{d['layers']} layers — plateau check (section 3): change of the mean test loss over "
        "the last 10 % of training, per seed: " + ", ".join(f"{c:+.2%}" for c in changes)
        + (" — **met**." if flat[d["runs"][0][0]["group"]] else
           " — **not met** (+: still falling): the loss of some seeds still moves by more "
           "than 1 %, so the claims about this model are not tested at this preset.")))

# %% mystnb={"figure": {"caption": "A trained multi-layer LSA against GD and GD++ with as many steps as it has layers: test loss and alignment along training.", "name": "fig-05-deep"}, "image": {"alt": "Two panels of training curves comparing a multi-layer model with gradient descent and GD++."}}
for d in deep_summary:  # one figure per depth (the book preset trains one)
    fig = figures.deep(d["runs"], d["runs"][0][1]["ref_loss"], gd_loss, d["layers"])

# %% [markdown]
# The two-layer model ends well below two steps of plain gradient descent and close to two
# steps of GD++. Its path is telling (one line per seed):
# first its sensitivities line up with plain two-step GD, then it keeps improving past GD's loss
# and turns towards GD++. Shared weights let us put the trained layer next to GD++'s
# construction: the curvature correction is the small negative identity block in the upper left
# of $PW_V$, which makes every layer also shrink the inputs along their dominant directions —
# something plain gradient descent does not do.

# %%
shared_deep = [d for d in deep_summary if d["shared"]]
if shared_deep:
    spec_d, result_d = shared_deep[0]["runs"][0]
    deep_match = C.deep_weight_match(result_d, spec_d)
    display(Markdown(
        f"Trained vs GD++: cosine {deep_match['cos_kq']:.3f} for $W_K^\\top W_Q$, "
        f"{deep_match['cos_pv']:.3f} for $PW_V$; the trained layer's (η, γ) = "
        f"({deep_match['eta_lsa']:.3f}, {deep_match['gamma_lsa']:.3f}) against GD++'s "
        "({:.3f}, {:.3f}).".format(*shared_deep[0]["gdpp_params"])))

# %% mystnb={"figure": {"caption": "The trained multi-layer LSA's shared weights next to GD++'s construction: heat maps of $W_K^\\top W_Q$ and $P W_V$.", "name": "fig-05-deep-weights"}, "image": {"alt": "Heat maps comparing trained multi-layer weights with the GD++ construction."}}
if shared_deep:
    fig = figures.weights(
        [(f"trained {spec_d['layers']}-layer LSA", {"KQ": deep_match["KQ"],
                                                     "PV": deep_match["PV"]}),
         ("GD++ construction", {"KQ": deep_match["KQ_gd"], "PV": deep_match["PV_gd"]})],
        cfg.dim, mask_unused=False)

# %% [markdown]
# ## 7. Claims and verdicts
#
# Each verdict applies the rule stated in section 3 to the numbers above.

# %%
finals = [r["final"] for _, r in main_runs]
trained = cfg.steps >= 1000  # shorter runs (smoke) only exercise the code path
deep_trained = cfg.deep_steps >= 1000
loss_ratios = [f["test_loss"] / r["ref_loss"]["gd"] for f, (_, r) in zip(finals, main_runs)]
main_group = main_runs[0][0]["group"]


def seeded(values, long_enough=trained):
    """Per-seed values for a claim about trained models ({} = not tested: too short a preset)."""
    return list(values) if long_enough else {}


def flat_at(group, long_enough=trained):
    """The precondition of section 3 for a group's claims, as `requires=(ok, why)` (a preset
    too short to train leaves them not tested anyway)."""
    return flat[group] or not long_enough, "training had not plateaued (section 3)"


ch.claim_effect("loss", "A trained single LSA layer reaches the loss of one step of GD",
                paper="\"performance is identical to the one of gradient descent\" (Fig. 2, "
                      "5 seeds); GD loss 0.2 on the code's inputs (App. A.11)",
                requires=flat_at(main_group),
                ours=f"LSA {np.mean([f['test_loss'] for f in finals]):.4f} vs GD "
                     f"{gd_loss:.4f}; LSA / GD − 1",
                a=seeded(r - 1 for r in loss_ratios), threshold=0.02, direction="equivalent",
                digits=4)
ch.claim_effect("predictions", "… and makes the same predictions",
                paper="\"almost perfect alignment\", L2 distance of predictions (Fig. 2, "
                      "center left; no number in the text)", requires=flat_at(main_group),
                ours=f"final prediction distance / its initial value (absolute: ≤ "
                     f"{max(f['pred_dist_gd'] for f in finals):.3f})",
                a=seeded(f["pred_dist_rel_gd"] for f in finals), threshold=0.1,
                direction="less")
ch.claim_effect("sensitivities", "… with the same sensitivities ∂ŷ/∂x_q",
                paper="cosine of sensitivities ∂ŷ/∂x_test ≈ 1 (Sec. 3, Fig. 2 center left; no "
                      "number in the text)", requires=flat_at(main_group),
                ours="final cosine", a=seeded(f["cos_gd"] for f in finals), threshold=0.99,
                digits=4)
ch.claim_effect("weights",
                "The trained weights match the construction of Proposition 1 up to scale",
                paper="after a scalar correction, \"a perfect resemblance of our construction\" "
                      "(Sec. 2 Uniqueness, App. A.3, Fig. 9)", requires=flat_at(main_group),
                ours=f"η* = {matches[0]['eta_gd']:.3f}",
                a={"cosine (worse of W_KᵀW_Q, PW_V)":
                   seeded(min(m["cos_kq"], m["cos_pv"]) for m in matches),
                   "implied η / η* − 1": seeded(m["eta_lsa"] / m["eta_gd"] - 1
                                                for m in matches)},
                threshold={"cosine (worse of W_KᵀW_Q, PW_V)": 0.99, "implied η / η* − 1": 0.05},
                direction={"cosine (worse of W_KᵀW_Q, PW_V)": "greater",
                           "implied η / η* − 1": "equivalent"}, digits=4)
ch.claim_effect("ood", "Out of distribution (scaled inputs), LSA and GD degrade the same way",
                paper="\"performs equally to gradient descent\" for x ~ U(−α, α), α ∈ [0.5, 2] "
                      "(Sec. 3 item 2, Fig. 2 outer right, App. A.2)",
                ours=f"GD's loss spans {gd_spread:.0f}×; max over scales of |LSA/GD − 1|",
                a=seeded(ood_dev) if gd_spread > 10 else {}, threshold=0.1, direction="less",
                kind="identity", note="derived from `weights` (section 5): not in the score",
                requires=flat_at(main_group))
if code_runs:
    code_final = [r["final"] for _, r in code_runs]
    code_ratio = [f["test_loss"] / r["ref_loss"]["gd"] for f, (_, r) in zip(code_final,
                                                                              code_runs)]
    ch.claim("code_range", "The same holds at the official code's input range U(−½, ½)",
             paper="the official notebook trains on U(−½, ½); GD loss 0.2 (App. A.11)",
             ours=f"LSA / GD loss {code_ratio[0]:.4f}, cosine "
                  f"{code_final[0]['cos_gd']:.4f}, prediction distance "
                  f"{code_final[0]['pred_dist_rel_gd']:.3f} of initial",
             holds=all(abs(r - 1) <= 0.02 for r in code_ratio)
             and all(f["cos_gd"] >= 0.99 and f["pred_dist_rel_gd"] <= 0.1 for f in code_final)
             if trained and flat[code_runs[0][0]["group"]] else None, kind="identity",
             note="" if flat[code_runs[0][0]["group"]] or not trained else
             "precondition failed: training had not plateaued (section 3)",
             rule="one seed: |ratio − 1| ≤ 0.02, cosine ≥ 0.99, distance ≤ 0.1")
for d in deep_summary:
    k = d["layers"]
    kind = "recurrent" if d["shared"] else "non-recurrent"
    deep_final = [r["final"] for _, r in d["runs"]]
    group = d["runs"][0][0]["group"]
    ch.claim_effect(f"deep{k}_beats_gd", f"A trained {k}-layer {kind} LSA beats {k} steps of GD",
                    paper="the trained recurrent 2-layer model \"surpasses plain gradient "
                          "descent\" (Sec. 3, Fig. 3a; no number in the text)",
                    ours=f"{d['loss'][0]:.4f} vs {d['gd']:.4f}; LSA / GD loss",
                    a=seeded((f["test_loss"] / d["gd"] for f in deep_final), deep_trained),
                    threshold=0.98, direction="less", digits=4,
                    requires=flat_at(group, deep_trained))
    gdpp_ratio, closer = "loss / GD++ − 1", "cos vs GD++ − cos vs GD"
    ch.claim_effect(f"deep{k}_gdpp",
                    f"… and behaves like {k} steps of GD++ (curvature correction)",
                    paper="\"realigns perfectly with GD++ while matching its performance\"; "
                          "aligns with GD early, with GD++ after training (Sec. 3, Fig. 3a)",
                    ours=f"{d['loss'][0]:.4f} vs GD++ {d['gdpp']:.4f}",
                    a={gdpp_ratio: [f["test_loss"] / d["gdpp"] - 1 for f in deep_final],
                       closer: [f["cos_gdpp"] - f["cos_gd"] for f in deep_final]}
                    if deep_trained else {}, requires=flat_at(group, deep_trained),
                    threshold={gdpp_ratio: 0.05, closer: 0.0},
                    direction={gdpp_ratio: "equivalent", closer: "greater"}, digits=4)
ch.claim("construction", "Proposition 1: one LSA layer can implement one step of GD exactly",
         paper="explicit construction, \"identical to the gradient-induced dynamics\" "
               "(Proposition 1, Sec. 2; App. A.1 Eq. 8; GD++: App. A.10 Eq. 23)",
         ours=f"max relative deviation {max_err['float32']:.1e} (float32), "
              f"{max_err['float64']:.1e} (float64), 1–3 steps and GD++",
         holds=max_err["float32"] < 1e-5 and max_err["float64"] < 1e-12, kind="identity",
         rule="relative deviation < 1e-5 (float32), < 1e-12 (float64)")

# %% [markdown]
# ## 8. Paper vs ours
#
# The paper's column quotes its text, with the figure, section or appendix that says it; the
# paper gives few numbers, and where it gives one we put ours beside it. The last row compares
# a number we had computed before we read the paper's; it is shown, not scored.

# %%
PAPER_GAMMA = 0.179  # App. A.10: γ of trained recurrent 2-layer models at N = 10 (H = I − γXXᵀ)
gamma_ours_units = PAPER_GAMMA * cfg.context * (cfg.code_input_range / cfg.input_range) ** 2
deep_row = "; ".join(f"{d['layers']} layers: {d['loss'][0]:.3f} vs GD {d['gd']:.3f}, GD++ "
                     f"{d['gdpp']:.3f}" for d in deep_summary) or "not run at this preset"
rows = [
    ["Tasks", "d = N = 10, w ~ N(0, I), x ~ U(−1, 1) (Sec. 3); code and figures: U(−½, ½)",
     f"d = {cfg.dim}, N = {cfg.context}; U(−{cfg.input_range / 2:g}, "
     f"{cfg.input_range / 2:g})" + (f", one run at U(−{cfg.code_input_range / 2:g}, "
                                    f"{cfg.code_input_range / 2:g})" if code_runs else "")],
    ["Model", "1 LSA layer, square W_K, W_Q, W_V (App. A.12), init 0.002/K",
     f"same (key size {cfg.key_size}, init {cfg.init_scale:g})"],
    ["Training", "Adam 1e-3, \"default parameters\", clip 10, batch 2048 (App. A.12); "
     "notebook: β₂ 0.98, ε 1e-9, clip 0.001, 5,000 steps",
     f"Adam {cfg.lr:g} (β₂ {cfg.betas[1]:g}, ε {cfg.adam_eps:g}), clip {cfg.grad_clip:g}, "
     f"batch {cfg.batch_size}, {cfg.steps:,} steps"],
    ["GD step size", "line search on 10⁴ training tasks (Sec. 3); notebook: grid, step 0.1",
     f"exact line search, {cfg.line_search_tasks:,} tasks: η* = {eta_ls:.3f} "
     f"(closed form {eta_closed:.3f})"],
    ["Evaluation", "10⁴ validation tasks (Sec. 3); 5 seeds (Fig. 2)",
     f"{cfg.eval_tasks:,} test tasks; {cfg.seeds} seeds"],
]
if code_runs:
    rows.append(["1-step GD loss, x ~ U(−½, ½)", "0.2 (App. A.11)",
                 f"{code_runs[0][1]['ref_loss']['gd']:.4f} (closed form "
                 f"{icl.optimal_eta(cfg.dim, cfg.context, cfg.code_input_range)[1]:.3f})"])
rows += [
    ["LSA vs 1-step GD loss", "\"identical\" (Fig. 2)",
     f"{np.mean([f['test_loss'] for f in finals]):.4f} vs {gd_loss:.4f}"],
    ["Alignment at the end", "\"almost perfect\" (Fig. 2)",
     f"cosine ≥ {min(f['cos_gd'] for f in finals):.4f}; prediction distance ≤ "
     f"{max(f['pred_dist_rel_gd'] for f in finals):.3f} of initial"],
    ["Weights", "\"perfect resemblance\" after scaling (Fig. 9)",
     f"cosine ≥ {min(min(m['cos_kq'], m['cos_pv']) for m in matches):.4f}"],
    ["Scaled inputs α ∈ [0.5, 2]", "\"performs equally to gradient descent\" (Fig. 2)",
     f"loss ratio within {max(ood_dev):.1%} of 1"],
    ["Deeper models", "surpass GD, match GD++ (Fig. 3a)", deep_row],
]
two_shared = [d for d in shared_deep if d["layers"] == 2]
if two_shared:
    gammas = [C.deep_weight_match(r, s)["gamma_lsa"] for s, r in two_shared[0]["runs"]]
    rows.append(["GD++ γ, 2 layers, N = 10", f"{PAPER_GAMMA} (App. A.10) = "
                 f"{gamma_ours_units:.3f} in our units", "fitted {:.3f}; trained {:.3f} ± "
                 "{:.3f}".format(two_shared[0]["gdpp_params"][1], *C.mean_std(gammas))])
display(Markdown(markdown_table(["", "Paper", f"Ours ({ch.preset} preset)"], rows)))

# %% [markdown]
# "Our units" for γ: the paper's GD++ moves the inputs by $-\gamma XX^\top x$, ours by
# $-\frac{\gamma}{N}XX^\top x$, and its γ was measured on the code's inputs
# $\mathcal{U}(-\tfrac12,\tfrac12)$ (the eigenvalues it quotes beside it are that range's,
# section 3), so $\gamma_\text{ours} = N\cdot\gamma_\text{paper}\cdot(\tfrac12)^2$.

# %% [markdown]
# ## 9. Verdicts and what they mean
#
# Every verdict is computed from the numbers above by the rule fixed in section 3.

# %%
ch.claims_table()

# %% [markdown]
# **Reading the verdicts.** The one-layer claims held on the book's seeds (0–4) and on the
# first fresh seed-set of the last audit (1000–1004). In the second (2000–2004) one seed of five
# sat on its initial loss for about 4,700 of its 5,000 steps and was still dropping at the end
# (test loss 1.59 until step 4,700, 1.01 at step 5,000, against 0.84 for GD): the
# seed-dependent phase transition of the paper's App. A.11, "for some seeds very long initial
# phases of virtually zero progress after which the loss drops suddenly to the desired GD
# loss" (Fig. 15). The plateau check caught it, so that seed-set could not test the claims, and
# by the book's audit rule a verdict that fresh seeds do not reproduce is reported
# *inconclusive*. Longer training, or the paper's remedy — a second attention head, which
# "mitigates the random seed dependent training instabilities" (App. A.11) — would settle it;
# at the `book` preset we report what the notebook's 5,000 steps give. The out-of-distribution
# check follows the `weights` claim, as section 5 argues.
#
# The two-layer claims held on the book's seeds and on both fresh seed-sets: trained for the
# notebook's 5,000 steps, every seed passed the plateau check (largest change over the last 10 %
# of training 0.86 % here, 0.70 % and 0.50 % in the audit's seed-sets), the trained model's
# loss is about 72 % of two steps of GD's in all three seed-sets, and it lies 2–3 % above two
# steps of GD++ (upper interval ends 3.3 %, 3.3 % and 4.6 %, inside the ±5 % tolerance), with
# sensitivities closer to GD++'s than to GD's by 0.04 in cosine. It has not quite reached GD++:
# the trained shared layer's (η, γ) sit a few per cent below GD++'s fitted pair (section 6).
# At 2,500 steps, in an earlier version of this chapter, the plateau check failed and the
# claims were not tested; the extra steps changed whether the end point can be judged.
#
# **Deviations from the paper.** (1) Inputs from $\mathcal{U}(-1,1)$, the range of the paper's
# text (Sec. 3); its code and, by their numbers, its figures use
# $\mathcal{U}(-\tfrac12,\tfrac12)$, which we run as a check. (2) GD's step size comes from an
# exact line search on separate tasks (the paper: a line search on $10^4$ training tasks; the
# notebook: a grid on the test tasks); GD++'s $(\eta,\gamma)$ from a direct minimisation instead
# of Adam (App. A.12 trains them "with an identical training setup"). (2b) Adam's settings and
# the clipping follow the official notebook, not App. A.12 (default Adam, clip 10).
# (3) To fit the `book` budget: five seeds, the input-range check trained for 1,500 steps
# instead of 5,000 (its plateau check passes there, and fails at 1,000), and twelve input
# scales of 2,000 tasks each (the official code: 51 scales of 1,000, as in `full`). The
# two-layer models get the notebook's 5,000 steps (section 6) and the chapter still fits the
# budget (about 255 s of CPU time, under 2.5 minutes on two idle cores); to save a little, GD's
# and GD++'s step sizes, which depend on the notebook seed only, are computed once per worker
# process instead of once per model (exactly the same numbers; tested). (4) Our GD++ normalises γ by
# $1/N$; this only reparameterises it. The `full` preset runs five seeds, every check at the
# official 5,000 steps, and non-recurrent stacks of two to five layers trained for the official
# 50,000 steps (with the notebook's per-depth learning rate and clipping).
#
# **Not reproduced here**: the interpolation between trained and constructed weights (Fig. 2
# center right, App. A.3), the repeated, dampened layer ($\lambda = 0.75$, Fig. 1, App. A.6),
# scaled teachers and other input distributions (Fig. 6), fixed training sets (Fig. 16), the
# phase transitions of App. A.11, and the further experiments of the paper and its code —
# softmax attention and LayerNorm (App. A.9), the token construction with inputs and targets in
# separate tokens (Sec. 4, which needs an induction-head-like copying layer), non-linear
# regression with an MLP (Fig. 4), and distractor tokens.

# %%
elapsed = time.time() - ch.started
display(Markdown(
    f"This chapter executed in **{elapsed:.0f} s** at the `{ch.preset}` preset "
    f"({sweep_s:.0f} s of it in the sweep over {len(run_specs)} models, {cached} of them read "
    f"from the run cache, {ch.workers} worker process(es)); the budget for `book` is 3 minutes "
    "on 2 CPU cores."))

# %% [markdown]
# ## Provenance
# Parameters of this run (see `lossbook list -v` for every preset):

# %%
ch.finish()
