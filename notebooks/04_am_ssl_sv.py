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
# # Additive margins for contrastive self-supervised speaker verification
#
# *Reproducing {cite:t}`lepage2023margins` (Interspeech 2023).*
#
# Self-supervised speaker verification learns a speaker embedding from unlabelled speech: two
# segments of the same utterance should map close together, segments of other utterances far
# apart. Most such systems use a SimCLR-style contrastive loss {cite}`chen2020simclr`. Lepage and
# Dehak try two changes to it:
#
# 1. a **symmetric** formulation (SNT-Xent) in which every view is an anchor, instead of the
#    non-symmetric NT-Xent used by earlier speaker-verification work;
# 2. **additive margins** on the positive pair, borrowed from supervised speaker and face
#    recognition: AM-softmax / CosFace {cite}`wang2018cosface` and AAM-softmax / ArcFace
#    {cite}`deng2019arcface`.
#
# The abstract reports that the symmetric loss "provides more supervision", that AM and AAM
# "allow reducing the overall number of false negatives and false positives", and 7.50 % EER /
# 0.5804 minDCF on VoxCeleb1-O {cite}`nagrani2017voxceleb` for the combination with a larger
# model. The tables behind it — both changes lower the equal error rate (EER), margins widen the
# gap between target and non-target scores, the minimum detection cost (minDCF) does *not*
# improve, too large an angular margin makes training explode — we could not read in the paper
# itself (its text is not in our stored sources); we quote them from the authors' slides and mark
# them **recalled**.
#
# **What we can and cannot check here.** VoxCeleb is licensed and cannot be downloaded by a
# script, so the `book` preset runs an *analogue* of speaker verification, built so that its
# evaluation has the same structure (trials between identities never seen in training, scored with
# the encoder embedding). Absolute EERs are not comparable with the paper; the *directions* of
# the effects are. The `full` preset is the paper's VoxCeleb setup, for a GPU and for readers who
# hold the data (section 7).
#
# | Ingredient | Source | How we checked it |
# |---|---|---|
# | NT-Xent, SNT-Xent, AM, AAM (with its fallback), s = 5, projector, evaluation on the encoder | official code `theolepage/sslsv` at the Interspeech-2023 commit 97915a6 (`losses/Custom.py`, `models/Custom.py`) | read; our losses equal pytorch-metric-learning's `NTXentLoss`, `CosFaceLoss`, `ArcFaceLoss` (unit tests) |
# | EER, minDCF (p_target = 0.01, normalised) | official `utils/evaluate.py` | unit tests against a transcription of it, a brute-force sweep and Gaussian closed forms (section 2) |
# | Abstract: 7.50 % EER, 0.5804 minDCF (SNT-Xent-AM, larger model, Table 3) | arXiv 2306.03664 abstract | read |
# | Tables 1–2, Fig. 4 score gaps, VoxCeleb2 results at s = 30 | the authors' slides, not the paper text | **recalled**, quoted in section 6 |
# | Log-mel front end, Thin ResNet-34, training schedule | official code at 97915a6 | front end tested against librosa; encoder runs one step in the tests |

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
from lossbook import verification
from lossbook.chapters import am_ssl_sv as C
from lossbook.chapters import am_ssl_sv_figures as figures
from lossbook.claims import markdown_table

ch = lossbook.start("04_am_ssl_sv", preset=preset, seed=seed, device=device, overrides=overrides)
cfg = ch.cfg
print(f"preset={ch.preset} seed={ch.seed} device={ch.device} workers={ch.workers}")

# %% [markdown]
# ## 1. The losses
#
# Both views of $N$ utterances go through the encoder and a projector; the projector outputs are
# L2-normalised, so every logit is a cosine $c=\cos\theta$ multiplied by a scale $s$ (the
# temperature is $\tau = 1/s$; the paper uses $s=5$, the follow-up $s=30$). For an anchor $a$
# with positive $p(a)$ and negatives $k$,
#
# $$
# \begin{aligned}
# \ell_a &= -\log\frac{e^{s\,\psi(c_{a,p(a)})}}{e^{s\,\psi(c_{a,p(a)})} + \sum_{k} e^{s\,c_{a,k}}},\\[4pt]
# \psi(c) &= \begin{cases} c & \text{no margin,}\\ c - m & \text{AM,}\\
# \cos(\theta + m) \text{ if } c > \cos(\pi - m), \text{ else } c - m\sin m & \text{AAM.}
# \end{cases}
# \end{aligned}
# $$
#
# - **NT-Xent** (non-symmetric): the $N$ first views are the anchors and the $N$ second views the
#   candidates — one positive and $N-1$ negatives per anchor.
# - **SNT-Xent** (symmetric, SimCLR): all $2N$ views are anchors; the other view of the same
#   utterance is the positive and the $2(N-1)$ views of other utterances are negatives (the anchor
#   itself is excluded).
#
# The margin only touches the positive logit: the loss asks the two views of an utterance to be
# closer by $m$ (in cosine, AM) or by $m$ radians (AAM) than they would need to be without it.
# Our implementation builds the full cosine matrix, replaces the positive cosine by $\psi(c)$
# and masks self-similarities; it equals the official `[pos | neg]` construction and
# pytorch-metric-learning's losses to machine precision (tests):
#
# ```{literalinclude} ../src/lossbook/contrastive.py
# :pyobject: margin_contrastive_loss
# ```
#
# The left panel shows the positive logit as a function of the angle between the two views. AM
# shifts the curve down uniformly; AAM shifts it by an amount that grows with the angle. The right
# panel shows why AAM can blow up: its slope with respect to the cosine is
# $\cos m + \sin m\cot\theta$, unbounded as the two views become aligned
# ($\theta\to 0$) — and in floating point, once a positive cosine rounds to 1, the
# $\sqrt{1-c^2}$ in $\psi$ has an infinite derivative. Larger margins push positive pairs
# harder towards exactly this region.
#
# **What an additive margin does to the gradient.** Write $p_a$ for the softmax probability of
# the positive in anchor $a$'s row (so $\ell_a=-\log p_a$). Differentiating, the gradient of
# $\ell_a$ with respect to the row's cosines is
# $s\,(1-p_a)\,\big(-\psi'(c_{a,p(a)})\ \text{on the positive};\ \text{softmax of the negatives'
# logits on the negatives}\big)$. For AM, $\psi' = 1$ and the bracket does not depend on $m$:
# **the margin only re-weights anchors**, by $1-p_a$ evaluated with the margin, which is larger
# for "easy" anchors whose positive already dominates the row (a unit test checks this identity).
# While every $p_a\ll 1$ — an unsaturated softmax, as at a low scale $s$ with hundreds of
# negatives — all weights are close to 1 and AM changes training by little more than a global
# gradient scale, which Adam's normalisation removes. AAM is different: $\psi'$ depends on the
# angle, so it changes the *direction* of the gradient, pulling nearly aligned positives harder.
#
# **How large can $p_a$ be at $s = 5$?** Take $K = 2(N-1)$ negatives and unit-norm embeddings,
# so every cosine lies in $[-1, 1]$. The positive's probability is largest when its cosine is 1,
# and by convexity of the exponential the negatives' sum is at least $K e^{s\bar c_a}$, with
# $\bar c_a$ the anchor's mean negative cosine:
#
# $$
# \begin{aligned}
# p_a &= \frac{e^{s(c_{a,p}-m)}}{e^{s(c_{a,p}-m)} + \sum_k e^{s c_{a,k}}}
#      \le \frac{e^{s(1-m)}}{e^{s(1-m)} + K e^{s\bar c_a}}.
# \end{aligned}
# $$
#
# The negatives cannot all point away from the anchor: $\lVert\sum_j z_j\rVert^2 \ge 0$ over
# the $2N$ views, and positive cosines are at most 1, so the batch average of $\bar c_a$ is at
# least $-2/K = -1/(N-1)$ (a regular simplex of the $N$ utterances, both views equal, attains
# it). For an anchor at that average,
# $p_a \le e^{s(1-m)}/(e^{s(1-m)} + K e^{-2s/K})$; with the negatives at cosine 0 instead it is
# $e^{s(1-m)}/(e^{s(1-m)}+K)$. At the paper's $N = 256$ ($K = 510$) and $s = 5$ these give
# **0.229** and 0.225 without a margin, 0.098 with AM $m = 0.2$. (The bound
# $e^{5}/(e^{5} + 510\,e^{-5}) = 0.977$ would need *all* 510 negatives at cosine $-1$: possible for
# one anchor, but then those negatives coincide and are each other's negatives at cosine 1, so
# not for the batch: an anchor can beat the bound only if its negatives point away from it on
# average, which by the same inequality pulls other anchors' negatives towards them.) Hence at
# $s = 5$ the anchor weights $1-p_a$ of section 1's gradient stay near $[0.77, 1]$ **whatever the
# data and the encoder** (exactly so for every anchor at or above the average negative cosine):
# AM can re-weight anchors by little more than 1.3 : 1, and less as $m$ grows. At $s = 10$ the
# bound is 0.978 and at $s = 30$ it is 1 to ten digits: there the softmax *can* saturate and AM
# can act. The crossover is where $e^{s} \approx K$,
# $s \approx \ln 510 \approx 6.2$. We record the mean and largest $p_a$ of each trained model (one
# batch of training views) and run AM $m = 0.2$ at $s = 5$, 10 (two seeds) and 30 to see where
# it starts to act.

# %% mystnb={"figure": {"caption": "The margin transforms $s\\,\\psi(\\cos\\theta)$ of AM and AAM over $\\theta\\in[0,\\pi]$ (left) and the slope $d\\psi/d\\cos\\theta$ that backpropagation sees (right).", "name": "fig-04-margins"}, "image": {"alt": "Two panels of curves for several additive and additive-angular margins: the transformed score and its slope against the angle."}}
grid = C.Config()  # the paper's whole margin grid (the figure trains nothing)
fig = figures.margin_transforms(grid.am_margins, grid.aam_margins + grid.aam_large_margins,
                                cfg.scales[0])

# %% [markdown]
# Per batch, the symmetric loss has twice the anchors and twice the negatives per anchor — four
# times the negative pairs — for the same forward passes ("2N positive pairs have 2(N − 1)
# negatives"). At the paper's batch of 256 utterances that is 512 anchors with 510 negatives each
# instead of 256 with 255.

# %% mystnb={"figure": {"caption": "Anchors, positive pairs and negative pairs per batch for NT-Xent and its symmetric version SNT-Xent, against the batch size.", "name": "fig-04-pairs"}, "image": {"alt": "Two log-log line plots of pair counts against batch size for NT-Xent and SNT-Xent."}}
fig = figures.pair_counts(np.unique(np.geomspace(2, 1024, 40).astype(int)))

# %% [markdown]
# ## 2. Verification metrics
#
# A *trial* pairs two utterances; it is a *target* trial when both come from the same speaker.
# A system accepts a trial when its score (here the cosine of the two embeddings) exceeds a
# threshold. Sweeping the threshold trades false alarms (FPR) for misses (FNR):
#
# - the **EER** is the error rate where the two are equal — as in the official code, the larger of
#   FPR and FNR at the operating point where they are closest;
# - the **minDCF** is the smallest detection cost $C_\text{miss}\,\mathrm{FNR}\,p +
#   C_\text{fa}\,\mathrm{FPR}\,(1-p)$ over thresholds, with $p=0.01$ and unit costs, divided by
#   $\min(p, 1-p)$ (NIST SRE 2016), so 1 is the cost of accepting or rejecting everything. It
#   weighs false alarms 99 times more than misses: it looks at the far low-FPR end of the DET
#   curve, where EER does not look.
#
# For equal-variance Gaussian target and non-target scores separated by $d'$ standard deviations
# both have closed forms ($\mathrm{EER} = \Phi(-d'/2)$; minDCF by minimising over the threshold).
# Our implementation, run on 40,000 sampled scores, lands on them:

# %% mystnb={"figure": {"caption": "Check of the metrics: closed-form EER and minDCF of equal-variance Gaussian scores (lines) against our estimates on samples (dots).", "name": "fig-04-gaussian"}, "image": {"alt": "Two panels comparing closed-form and sampled EER and minDCF against the score separation d-prime."}}
rng = np.random.default_rng(seed)
d_primes = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
empirical = {}
for d in d_primes:
    scores = np.r_[rng.normal(d, 1, 20000), rng.normal(0, 1, 20000)]
    labels = np.r_[np.ones(20000), np.zeros(20000)]
    empirical[d] = verification.summary(scores, labels)
fig = figures.gaussian_check(d_primes, empirical)
gauss_err = max(abs(empirical[d]["eer"] - verification.gaussian_eer(d)) for d in d_primes)
print(f"largest |EER(samples) − Φ(−d′/2)| = {gauss_err:.2f} points")

# %% [markdown]
# ## 3. A verification task without VoxCeleb
#
# The analogue keeps the structure that matters for the paper's question:
#
# - **Speakers** are random smooth 12-point templates (normalised like MNIST-1D's digit templates
#   {cite}`greydanus2020mnist1d`): some for training, and *other* identities, never seen in
#   training, for testing.
# - An **utterance** is one draw of the MNIST-1D generator from a template: random zero padding
#   (which stretches the template and sets how much of the 40 samples it fills), scaling, circular
#   translation, correlated and white noise, shear. This randomness plays the session/channel role
#   — two utterances of the same identity differ by it.
# - **Training uses no labels**: each utterance gives two *views* (random circular shift of
#   a few samples, amplitude scaling, a random linear trend and white noise — the generator's
#   own kind of transforms), exactly as VoxCeleb
#   training takes two augmented segments of one utterance. As there, positives share their
#   session, so the session nuisance is never directly taught away.
# - **Encoder / projector split** as in the paper: a small 1-D CNN (three conv+BN layers, mean+std
#   pooling, linear embedding), a projector of the official shape
#   (E → 4E → E/2) that only the loss sees; verification scores the **encoder** output.
# - **Trials**: every same-identity pair of test utterances (target trials) and
#   random different-identity pairs, scored by cosine.
#
# The table below lists the sizes used at this preset.
#
# Adam at lr 10⁻³ and batch 256 are the official settings; the schedule is short (see the preset
# table at the end).

# %%
display(Markdown(markdown_table(["", "book analogue"], [
    ["training identities × utterances", f"{cfg.train_ids} × {cfg.utterances}"],
    ["test identities × utterances (unseen)", f"{cfg.test_ids} × {cfg.utterances}"],
    ["views", f"shift ±{cfg.aug_shift}, scale ±{cfg.aug_scale / 2:g}, trend ±{cfg.aug_slope / 2:g}, "
              f"noise σ={cfg.aug_noise:g}"],
    ["encoder → projector", f"CNN ({cfg.channels} channels) → {cfg.embedding_dim} → "
                            f"{4 * cfg.embedding_dim} → {cfg.embedding_dim // 2}"],
    ["training", f"{cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}"],
    ["non-target trials", f"{cfg.nontarget_trials}"],
    ["seeds per setting", f"{cfg.seeds}"],
])))

# %% [markdown]
# **Calibrating the difficulty.** The paper's baseline sits at 9.45 % EER, and its minDCF
# (0.66–0.76) is well below 1. We want ours far from 50 % (nothing learnt) and from 0 %, and —
# a precondition for the minDCF claim — a minDCF that training moves well off the floor set by
# the **untrained encoder** (a random CNN already separates these identities somewhat). The only
# knob is the size λ of the generator's nuisance (all its default variability, padding
# included, multiplied by λ). The rule, fixed before any loss was compared: train the **baseline
# only** (NT-Xent, s = 5, first seed) on a grid of halvings of λ and take the hardest level whose
# EER is at most 10 % *and* whose minDCF is at least 0.1 below the untrained encoder's.
# (A first version of the rule looked at EER alone and chose λ = 0.25, where the trained minDCF,
# 0.89, was hardly below the untrained 0.92: the minDCF claim was judged on a saturated metric.
# The second condition was added for that reason, before the comparison runs were redone.)
# The embedding size (64) and the encoder (32 channels) were set by the 3-minute time budget
# alone. The training length (24 epochs, against the paper's 200) was set for the plateau
# precondition of section 4 and the budget, not for any claim: a first version trained
# 12 epochs, and there the s = 5 baseline was still improving (EER change over the last third
# −0.21 [−0.44, +0.02] points), so every claim the plateau guards was *not tested*. A
# baseline-only exploration (SNT-Xent at s = 5 and 30, the book's five seeds, EER every two
# epochs up to 36, no margin run) showed the s = 5 baseline meeting the rule from 24 epochs on
# (16 → 24: −0.04 [−0.10, +0.03]) but not at 16 or 20. The s = 30 baseline, by contrast, is
# best after about 6 epochs and then slowly gets *worse* (4.70 % → 5.31 % by epoch 36): that is
# overfitting of the self-supervised task, which no training length cures, and the rule judges
# it the same way (section 6). To pay for 24 epochs, the preset runs only the settings the
# claims need (section 4) and the s sweep's extra scale with two seeds. The calibration below
# is re-run at this length. Nothing else was tuned.

# %%
calib_specs = C.calibration_specs(cfg, seed, ch.device)
specs = C.specs(cfg, seed, ch.device)  # the comparison runs of section 5, one worker pool for all
calib, results = C.sweep_once(ch, calib_specs, specs, desc="all runs")
every = list({id(r): r for r in calib + results}.values())  # distinct runs
levels = [s["nuisance"] for s in calib_specs]
if levels:
    ok = [lv for lv, r in zip(levels, calib) if r["eer"] is not None and r["eer"] <= 10
          and r["min_dcf"] <= r["min_dcf0"] - 0.1]
    rule_pick = max(ok) if ok else None
    display(Markdown(markdown_table(
        ["λ", "EER (%)", "minDCF", "untrained EER", "untrained minDCF"],
        [[f"{lv:g}", f"{r['eer']:.2f}", f"{r['min_dcf']:.3f}", f"{r['eer0']:.2f}",
          f"{r['min_dcf0']:.3f}"] for lv, r in zip(levels, calib)])))
    print(f"rule picks λ = {rule_pick}; the preset uses λ = {cfg.nuisance:g}"
          + ("" if rule_pick == cfg.nuisance else
             "  <-- differs: a preset that was not calibrated (smoke) or needs recalibration"))

# %% mystnb={"figure": {"caption": "Calibration of the synthetic task: the baseline's EER (left) and minDCF (right) against the generator's nuisance level, trained and untrained (same initialisation), with the EER band of the rule.", "name": "fig-04-calibration"}, "image": {"alt": "Two line plots of equal error rate and minDCF against nuisance level, for the trained baseline and the untrained encoder."}}
if levels:
    fig = figures.calibration(levels, calib, cfg.nuisance)

# %% [markdown]
# ## 4. Verdict rules (fixed before the comparison runs)
#
# Every setting is trained with several seeds (table above). A seed fixes the initialisation, the
# data order and the augmentation draws, and is **shared by all losses**, so differences are
# taken seed by seed (paired; a seed where a run diverged is left out). Every claim follows the
# book's protocol (`lossbook.claims`): the 95 % Student-t interval of the paired difference over
# the seeds, *held* when it lies wholly beyond the threshold on the paper's side, *not held* when
# it lies wholly on the other side, **inconclusive** otherwise. Thresholds are 0 except for the
# null claim. AM and AAM are judged separately: section 1 shows they act differently.
#
# 1. **Symmetric < non-symmetric** (Table 1, recalled): EER(SNT-Xent) − EER(NT-Xent) < 0 at
#    s = 5; the same at s = 30 (VoxCeleb2 follow-up, recalled) is a separate claim.
# 2. **AM lowers EER** (Table 2, recalled): EER(AM m = 0.2) − EER(SNT-Xent) < 0 at s = 5.
# 3. **AAM lowers EER** (Table 2, recalled): EER(AAM m = 0.1) − EER(SNT-Xent) < 0 at s = 5.
# 4. **AM lowers EER at s = 30** (follow-up, recalled): AM m = 0.2 minus SNT-Xent < 0.
# 5. **AM widens the score gap** (Fig. 4, recalled; the paper's m = 0.4, ours 0.2):
#    gap(AM) − gap(SNT-Xent) > 0 at s = 5, the gap being mean target minus mean non-target
#    cosine.
# 6. **minDCF does not improve** (a null claim, one-sided): the mean over AM 0.2 and AAM 0.1,
#    minus SNT-Xent, on minDCF, must be credibly above −0.01 (held) — the smallest minDCF
#    difference between SNT-Xent and a margin in Table 2 is +0.010; not held when the interval
#    lies below −0.01.
# 7. **Too large an AAM margin destabilises training**: per seed, 1 if AAM m = 0.3 produced a
#    non-finite loss, minus 1 if AAM m = 0.1 did; > 0.
#
# **Settings each claim needs** (the `book` preset runs each with five seeds): claim 1 —
# NT-Xent and SNT-Xent at s = 5 (and at s = 30 for its follow-up version); claims 2, 5 — AM 0.2 at s = 5; claim 3 — AAM 0.1 at s = 5; claim 4 — AM 0.2 at s = 30;
# claim 6 — AM 0.2 and AAM 0.1 at s = 5; claim 7 — AAM 0.3 and 0.1 at s = 5 (the kept AAM
# margin is the reference, no second one is run). The s sweep (section 5) adds SNT-Xent and
# AM 0.2 at s = 10; it decides no claim and runs the first two seeds only.
#
# **Preconditions**, checked before the claims they guard (a failed precondition makes them
# *not tested*):
#
# - *Floor* (guards claim 6): per seed, the untrained encoder's minDCF minus the trained
#   SNT-Xent's (s = 5) must be credibly above 0.05 — training must move minDCF off its floor.
#   The EER floor is shown beside it.
# - *Plateau* (guards claims 1–5 at the scale where it is measured): per seed, the change of the
#   SNT-Xent EER over the last third of training (epoch 16 → 24), at s = 5 and at s = 30, must
#   lie within ±0.3 points (TOST). A claim whose precondition fails is not judged, but its
#   "Ours" cell still gives the effect, so that the reader sees what the data say.
# - *Stress* (guards claim 7): the AAM instability can only show where positive pairs come close
#   to alignment, $\theta\to 0$, where the AAM slope $\cos m + \sin m\cot\theta$ grows without
#   bound. The claim is tested only if some AAM m = 0.3 run reaches a positive-pair cosine
#   ≥ 0.99 in a training batch after the first epoch (an untrained encoder maps everything
#   nearly to one direction, so the first epoch does not count), or diverges.

# %%
groups = C.group(specs, results)
by_scale = {}
for key in groups:
    by_scale.setdefault(key[1], []).append(key)
by_scale = dict(sorted(by_scale.items()))
cpu = [r["cpu_s"] for r in every]
print(f"{len(every)} runs; CPU time per run {np.mean(cpu):.1f} s (min {min(cpu):.1f}, "
      f"max {max(cpu):.1f})")

# %% [markdown]
# ## 5. Results
#
# Seed mean ± standard deviation of the EER (%), minDCF, mean score gap and mean positive
# probability $p_a$ (section 1) of every setting, and the largest positive-pair cosine reached
# in the last epoch of training; a setting that diverged in some seed reports the others and
# says how many diverged. The first rows are the **untrained encoder** (the floor).


# %%
def cell(values, fmt):
    m, sd = C.mean_std(values)
    return "–" if np.isnan(m) else f"{m:{fmt}} ± {sd:{fmt}}"


rows = [["–", "untrained encoder", cell([r["eer0"] for r in groups[k]], ".2f"),
         cell([r["min_dcf0"] for r in groups[k]], ".3f"), "–", "–", "–", "–"]
        for k in list(groups)[:1]]
for key, runs in groups.items():
    diverged = sum(r["diverged"] for r in runs)
    rows.append([f"{key[1]:g}", C.label(key[0], key[2]),
                 cell([r["eer"] for r in runs], ".2f"), cell([r["min_dcf"] for r in runs], ".3f"),
                 cell([r["gap"] for r in runs], ".3f"),
                 cell([r.get("p_pos_mean") for r in runs], ".3f"),
                 cell([r.get("pos_cos_max_last") for r in runs], ".3f"),
                 f"{diverged}/{len(runs)}" if diverged else "–"])
display(Markdown(markdown_table(["s", "loss", "EER (%)", "minDCF", "score gap", "mean $p_a$",
                                 "max cos", "diverged"], rows)))

# %% [markdown]
# Training curves, seed mean ± one standard deviation, from the untrained encoder (epoch 0) to
# the end, for the baselines at each scale — the plateau precondition reads the last third:

# %% mystnb={"figure": {"caption": "Seed-mean test EER and minDCF along training (epoch 0: the untrained encoder; band: ± one standard deviation over seeds) for the SNT-Xent baselines.", "name": "fig-04-training"}, "image": {"alt": "Two panels of training curves: equal error rate and minDCF against epoch, one line per scale."}}
curve_keys = [k for k in groups if k[0] == "snt-xent"]
fig = figures.plateau(groups, curve_keys)

# %% [markdown]
# Where does AM start to act? The left panel shows the seed-paired EER difference of AM
# m = 0.2 from SNT-Xent at each scale, the right panel the measured positive-pair
# probabilities beside the bound of section 1 (dashed):

# %% mystnb={"figure": {"caption": "The s sweep: EER of SNT-Xent-AM (m = 0.2) minus SNT-Xent per seed and its mean ± 2 standard errors (left); mean and largest positive-pair probability of the trained models with the bound of section 1 (right).", "name": "fig-04-scale-sweep"}, "image": {"alt": "Left, dot plot of EER differences against scale; right, positive-pair probabilities and their bound against scale on a log axis."}}
sweep = sorted({k[1] for k in groups if k[0] == "snt-xent-am" and k[2] == cfg.sweep_margin})
fig = figures.scale_sweep(groups, sweep, cfg.sweep_margin, cfg.batch_size)

# %% mystnb={"figure": {"caption": "Seed-paired differences from SNT-Xent at the same scale $s$ — EER, minDCF and score gap — for every setting: each seed (dots) and the mean ± 2 standard errors.", "name": "fig-04-paired-deltas"}, "image": {"alt": "A grid of dot plots with error bars of differences from the baseline for each loss setting, rows EER, minDCF and score gap."}}
fig = figures.paired_deltas(groups, by_scale)

# %% [markdown]
# Small dots are single seeds, large ones the seed mean with ± 2 standard errors (filled when
# the interval excludes 0). The DET curves compare the baselines with the margins at s = 5; a
# curve further down-left is better, EER is where it crosses the diagonal and minDCF lives at
# the far left.

# %% mystnb={"figure": {"caption": "DET curves (probit axes) of the main settings, false-negative rate averaged over seeds on a common false-positive grid.", "name": "fig-04-det"}, "image": {"alt": "DET curves for several loss settings on probit axes."}}
s0 = cfg.scales[0]
det_keys = [k for k in groups if k[1] == s0]
if det_keys:
    fig = figures.det_curves(groups, det_keys)

# %% [markdown]
# The paper's Fig. 4 (recalled) shows the cosine scores of target and non-target trials without
# a margin and with AM m = 0.4; the mean gap grew from 0.259 to 0.278. Ours (AM m = 0.2), pooled
# over seeds:

# %% mystnb={"figure": {"caption": "Target and non-target cosine-score histograms (all seeds pooled) with the mean gap, for SNT-Xent and SNT-Xent with an additive margin.", "name": "fig-04-histograms"}, "image": {"alt": "Side-by-side histograms of target and non-target scores for two loss settings."}}
am_key = ("snt-xent-am", s0, cfg.am_margins[0]) if cfg.am_margins else None
hist_keys = [k for k in [("snt-xent", s0, 0.0), am_key] if k in groups]
if hist_keys:
    fig = figures.score_histograms(groups, hist_keys)

# %% [markdown]
# ## 6. Claims
#
# The preconditions first, then the paper's claims in the order of section 4.

# %%
from lossbook.claims import evidence  # noqa: E402

base = ("snt-xent", s0, 0.0)
s1 = cfg.scales[1] if len(cfg.scales) > 1 else None
base1 = ("snt-xent", s1, 0.0) if s1 is not None else None


def seeds_of(key, metric):
    return [r[metric] for r in groups.get(key, []) if r[metric] is not None]


def eer_change(key):
    """Per seed, EER at the end minus EER one third of training earlier."""
    out = []
    for r in groups.get(key, []):
        h = r["history"]
        if r["diverged"] or len(h) < 2:
            continue
        third = [x for x in h if x["epoch"] <= h[-1]["epoch"] * 2 / 3]
        out.append(h[-1]["eer"] - (third[-1] if third else h[0])["eer"])
    return out


# precondition: floor
floor = ch.claim_effect(
    "pre_floor", "Precondition: training moves minDCF off the untrained encoder's floor",
    paper="–", kind="context", threshold=0.05,
    ours=(f"untrained EER {C.mean_std(seeds_of(base, 'eer0'))[0]:.2f} % → trained "
          f"{C.mean_std(seeds_of(base, 'eer'))[0]:.2f} %; minDCF(untrained) − minDCF(SNT-Xent)"),
    a=seeds_of(base, "min_dcf0"), b=seeds_of(base, "min_dcf"), digits=3)
# precondition: plateau
plateau_cond = {f"s = {k[1]:g}": eer_change(k) for k in (base, base1) if k in groups}
plateau = ch.claim_effect(
    "pre_plateau", "Precondition: the baseline EER has plateaued (last third within ±0.3 pts)",
    paper="200 epochs", kind="context", direction="equivalent", threshold=0.3,
    ours="ΔEER (pts) over the last third of training", a=plateau_cond, digits=2)
# precondition: stress
aam_large = [k for k in groups if k[0] == "snt-xent-aam" and k[1] == s0 and k[2] > 0.2]
aam_small = [k for k in groups if k[0] == "snt-xent-aam" and k[1] == s0 and k[2] <= 0.2]


def stress_cos(r):
    trace = r.get("pos_cos_epochs") or []
    return max((e[0] for e in trace[1:]), default=-1.0)


stress_max = max((stress_cos(r) for k in aam_large for r in groups[k]), default=None)
stress_div = sum(r["diverged"] for k in aam_large for r in groups[k])
stressed = bool(aam_large) and (stress_div > 0 or stress_max >= 0.99)
ch.claim("pre_stress", "Precondition: the AAM m = 0.3 runs reach positive cosines ≥ 0.99",
         paper="–", kind="context", holds=stressed if aam_large else None,
         ours=("not run" if not aam_large else
               f"largest positive cosine after epoch 1: {stress_max:.4f}; diverged {stress_div}"),
         rule="held if some AAM m = 0.3 run reaches a positive-pair cosine ≥ 0.99 after the "
              "first epoch, or diverges")

floor_ok = floor.verdict == "held"
plateau_at = {e["label"]: e["verdict"] for e in plateau.evidence}


def plateau_ok(scale):
    """The plateau precondition at `scale`, as `requires=(ok, why)` of a claim."""
    verdict = plateau_at.get(f"s = {scale:g}", "not tested")
    return verdict == "held", f"plateau at s = {scale:g} {verdict}"


# 1. symmetric vs non-symmetric, at s = 5 and at s = 30
a_, ok = C.paired_differences(groups, [base], ("nt-xent", s0, 0.0), "eer"), plateau_ok(s0)
ch.claim_effect("symmetric", "Symmetric SNT-Xent gives a lower EER than NT-Xent (s = 5)",
                paper="9.35 vs 9.45 % (Table 1, recalled)", direction="less",
                ours="ΔEER (pts)", a=a_, requires=ok)
if s1 is not None:
    a_, ok = C.paired_differences(groups, [base1], ("nt-xent", s1, 0.0), "eer"), plateau_ok(s1)
    ch.claim_effect("symmetric_s30",
                    f"Symmetric SNT-Xent gives a lower EER than NT-Xent (s = {s1:g})",
                    paper="VoxCeleb2: 8.41 vs 8.98 % (recalled)", direction="less",
                    ours="ΔEER (pts)", a=a_, requires=ok)

# 2.–4. margins lower the EER: AM and AAM separately, and AM at s = 30
am = ("snt-xent-am", s0, cfg.am_margins[0]) if cfg.am_margins else None
aam = ("snt-xent-aam", s0, cfg.aam_margins[0]) if cfg.aam_margins else None
a_, ok = C.paired_differences(groups, [am], base, "eer"), plateau_ok(s0)
ch.claim_effect("am_eer", f"An AM margin (m = {am[2]:g}) lowers the EER of SNT-Xent (s = 5)",
                paper="9.35 → 9.01 % (Table 2, recalled)", direction="less",
                ours="ΔEER (pts)", a=a_, requires=ok)
a_, ok = C.paired_differences(groups, [aam], base, "eer"), plateau_ok(s0)
ch.claim_effect("aam_eer", f"An AAM margin (m = {aam[2]:g}) lowers the EER of SNT-Xent (s = 5)",
                paper="9.35 → 8.98 % (Table 2, recalled)", direction="less",
                ours="ΔEER (pts)", a=a_, requires=ok)
follow = [k for k in groups if s1 is not None and k[1] == s1 and k[0] == "snt-xent-am"]
if follow:
    a_, ok = C.paired_differences(groups, follow, base1, "eer"), plateau_ok(s1)
    ch.claim_effect("margin_eer_s30",
                    f"At s = {s1:g}, an AM margin (m = {follow[0][2]:g}) lowers the EER",
                    paper="VoxCeleb2: 8.41 → 8.13 % (recalled)", direction="less",
                    ours="ΔEER (pts)", a=a_, requires=ok)

# 5. score gap
g_base = C.mean_std([r["gap"] for r in groups[base]])[0]
g_am = C.mean_std([r["gap"] for r in groups[am]])[0]
a_, ok = C.paired_differences(groups, [am], base, "gap"), plateau_ok(s0)
ch.claim_effect("score_gap",
                f"An AM margin widens the target/non-target mean score gap (m = {am[2]:g}, s = 5)",
                paper="m = 0.4: 0.259 → 0.278 (Fig. 4, recalled)",
                ours=f"{g_base:.3f} → {g_am:.3f}, Δ", a=a_, digits=4, requires=ok)

# 6. minDCF (guarded by the floor)
ch.claim_effect("min_dcf", "Margins do not improve minDCF",
                paper="0.6647 (SNT-Xent) vs 0.6742–0.7182 with margins (Table 2, recalled)",
                ours="ΔminDCF, mean of AM and AAM", threshold=-0.01, digits=4,
                a=C.paired_differences(groups, [am, aam], base, "min_dcf"),
                requires=(floor_ok, f"floor precondition {floor.verdict}"))


# 7. large AAM margin (guarded by the stress test)
def diverged(key):
    return sum(r["diverged"] for r in groups.get(key, []))


per_seed_div = [float(any(groups[k][i]["diverged"] for k in aam_large))
                - float(any(groups[k][i]["diverged"] for k in aam_small))
                for i in range(cfg.seeds)] if aam_large else []
ch.claim_effect("aam_unstable", "Too large an AAM margin (m = 0.3) destabilises training",
                paper="m = 0.3: “exploding gradients” (Table 2, recalled)",
                ours=(f"diverged runs: m = 0.3 {sum(map(diverged, aam_large))}/"
                      f"{cfg.seeds * len(aam_large)}, m = 0.1 {sum(map(diverged, aam_small))}/"
                      f"{cfg.seeds * len(aam_small)}; per seed, diverged(0.3) − diverged(0.1)"),
                a=per_seed_div, digits=2,
                requires=(stressed, "stress precondition not met: positive cosines stayed "
                                    "below 0.99"))

# identity: the bound of section 1 is attained by the regular simplex (both views equal)
import torch  # noqa: E402

from lossbook import contrastive  # noqa: E402

n_b = cfg.batch_size
z_simplex = torch.nn.functional.normalize(torch.eye(n_b, dtype=torch.float64) - 1 / n_b, dim=1)
bound_err = max(
    (contrastive.positive_probability(z_simplex, z_simplex, scale=sc, margin=m,
                                      kind="am" if m else "none")
     - C.positive_probability_bound(sc, n_b, m)).abs().max().item()
    for sc in (5.0, 10.0, 30.0) for m in (0.0, 0.2))
measured = "; ".join(
    f"{C.label(k[0], k[2])}: max measured {mean_of_max:.3f}" for k, mean_of_max in
    ((k, max(r["p_pos_max"] for r in groups[k] if not r["diverged"])) for k in groups
     if k[1] == s0 and k[0] in ("snt-xent", "snt-xent-am")))
ch.claim("bound", "The simplex batch attains the bound on $p_a$ (N = batch, s = 5, 10, 30)",
         paper="–", kind="identity",
         ours=f"largest error {bound_err:.1e}; bound at s = 5: "
              f"{C.positive_probability_bound(s0, n_b):.3f} ({measured})",
         holds=bound_err < 1e-12, rule="absolute error < 1e-12 (float64)")

# %% [markdown]
# ### Paper vs ours
#
# The paper's numbers are VoxCeleb1-O EER/minDCF after 200 epochs of a Thin ResNet-34 on
# VoxCeleb1 (s = 5; the s = 30 rows are the VoxCeleb2 results of the authors' follow-up);
# they are **recalled** from the authors' slides (table numbers as there), except the abstract's
# 7.50 % / 0.5804, which we read. Ours are the analogue task's seed means. Compare directions,
# not values.

# %%
paper_rows = []
for key in groups:
    table = C.PAPER if key[1] == s0 else C.PAPER_FOLLOW_UP if key[1] == s1 else {}
    p = table.get((key[0], key[2]))
    runs = groups[key]
    ours = f"{C.mean_std([r['eer'] for r in runs])[0]:.2f} / " \
           f"{C.mean_std([r['min_dcf'] for r in runs])[0]:.3f}"
    n_div = sum(r["diverged"] for r in runs)
    if n_div:
        ours += f" ({n_div} diverged)"
    if p is None:
        paper, source = "–", "not in the paper"
    else:
        paper = "exploding gradients" if p[0] is None else f"{p[0]:.2f} / {p[1]:.4f}"
        source = ("Table 1" if key[0] in ("nt-xent",) or key == base else "Table 2") \
            if key[1] == s0 else "VoxCeleb2 table"
        source += " (recalled)"
    paper_rows.append([f"{key[1]:g}", C.label(key[0], key[2]), paper, source, ours])
paper_rows.append([f"{s0:g}", "score gap, AM", "0.259 → 0.278 (m = 0.4)", "Fig. 4 (recalled)",
                   f"{g_base:.3f} → {g_am:.3f} (m = {am[2]:g})"])
paper_rows.append(["5", "SNT-Xent-AM 0.4, larger model", "7.50 / 0.5804", "abstract, Table 3",
                   "not run"])
display(Markdown(markdown_table(["s", "loss", "paper EER / minDCF", "source",
                                 "ours EER / minDCF"], paper_rows)))

# %% [markdown]
# ## 7. The `full` preset: VoxCeleb
#
# `lossbook run 04_am_ssl_sv --preset full -p data_dir=/path/to/data` runs the paper's setting on
# a GPU: VoxCeleb1 dev (1,211 speakers, labels unused) for training and the VoxCeleb1-O trial
# list for evaluation, two 2-s segments per utterance (official `sample_frames`), MUSAN noise and
# simulated room impulse responses {cite}`snyder2015musan,ko2017rir` as augmentation, the
# official Thin ResNet-34 (SE blocks, self-attentive pooling, 512-d) on 40 log-mel bands,
# projector 512–2048–256, 200 epochs, batch 256, Adam 10⁻³, and evaluation on 6 evenly spaced
# 2-s frames per test utterance, averaged and L2-normalised. VoxCeleb requires accepting its
# licence, so the data must be placed locally in the layout of the official `prepare_data.py`
# (documented in `lossbook.audio`); the reader, the augmentation and one training step of this
# path are tested on tiny fabricated WAV files in that layout.
#
# The log-mel front end is computed in plain torch (`torch.stft` and our own HTK-scale triangular
# filterbank) and matches librosa's mel spectrogram on the same signal (tests):
#
# ```{literalinclude} ../src/lossbook/audio.py
# :pyobject: mel_spectrogram
# ```
#
# `full` follows the official schedule (Adam 10⁻³, × 0.95 every 10 epochs, the `step` schedule
# of `lossbook.train.fit`), with one departure stated in the preset: each training utterance is
# cut to its first `train_samples` samples (6 s) in memory (the official loader reads the whole
# file and picks the two segments anywhere in it).
#
# ## 8. Verdicts

# %%
ch.claims_table()

# %% [markdown]
# **Reading the verdicts.** An *inconclusive* claim was tested, but the interval of its
# seed-paired difference straddles the threshold: at this scale the data cannot tell. A *not
# tested* claim failed its precondition (section 4); its "Ours" cell gives the unjudged effect.
# The summary below is computed from the runs (95 % t-intervals of the seed-paired differences,
# as in the claims).

# %%
def delta(key, ref, metric="eer"):
    d = C.paired_differences(groups, [key], ref, metric)
    if len(d) < 2:
        return "–"
    e = evidence("", d, None, 0.0, "less", 3)
    lo, hi = e["interval"]
    return f"{e['effect']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def mean_of(key, metric):
    return C.mean_std([r.get(metric) for r in groups.get(key, [])])[0]


lines = []
for s_ in sorted({k[1] for k in groups}):
    b_ = ("snt-xent", s_, 0.0)
    am_ = ("snt-xent-am", s_, cfg.sweep_margin)
    line = (f"- **s = {s_:g}** (bound on $p_a$ without a margin "
            f"{C.positive_probability_bound(s_, cfg.batch_size):.3f}): SNT-Xent "
            f"{mean_of(b_, 'eer'):.2f} % EER, mean $p_a$ {mean_of(b_, 'p_pos_mean'):.3f}, "
            f"largest {mean_of(b_, 'p_pos_max'):.3f}.")
    if am_ in groups:
        line += (f" AM m = {am_[2]:g} − SNT-Xent: ΔEER {delta(am_, b_)} pts, Δgap "
                 f"{delta(am_, b_, 'gap')}.")
    for k in groups:
        if k[1] == s_ and k[0] == "snt-xent-aam":
            line += f" AAM m = {k[2]:g}: ΔEER {delta(k, b_)} pts."
    if ("nt-xent", s_, 0.0) in groups:
        line += f" SNT-Xent − NT-Xent: ΔEER {delta(b_, ('nt-xent', s_, 0.0))} pts."
    lines.append(line)
display(Markdown("\n".join(lines)))

# %% [markdown]
# - The margin mechanics are exact: the losses equal pytorch-metric-learning's, the metrics
#   equal the official evaluation code and the Gaussian closed forms, and the bound of
#   section 1 is attained by the simplex batch (claim `bound`; the largest $p_a$ measured in
#   our trained models is printed beside it).
# - **AM at s = 5.** The bound caps the typical anchor's $p_a$ near 0.23 at s = 5 for any data,
#   so the anchor weights $1-p_a$ of section 1 vary by little more than 1.3 : 1 and AM is, up to a
#   global gradient scale that Adam removes, nearly the same loss as SNT-Xent. The lines above
#   give the measured AM effect at each scale with its interval; whether it is resolved at
#   s = 5 is the `am_eer` verdict, and the s sweep shows how it changes once $p_a$ can
#   approach 1 (s = 10, 30).
# - **AAM acts through the direction of the gradient**, its slope depending on the angle. The
#   instability the paper reports for m = 0.3 needs positive pairs near alignment; the stress
#   precondition says whether our runs went there, and the claim is only judged if they did.
# - **The plateau, and why s = 30 is not judged.** At 24 epochs the s = 5 baseline has
#   plateaued (precondition `pre_plateau`, its s = 5 part), so the s = 5 claims are judged, and
#   every one of them is inconclusive: the effects are a few hundredths of a point of EER, with
#   intervals of about ±0.1 (symmetric, AM) to ±0.3 points (AAM) around them — in line with the
#   bound's argument that AM at s = 5 barely changes the loss. The s = 5 plateau is met with
#   little room, though: of the audit's two fresh seed-sets, one meets it (−0.15 [−0.29, −0.02])
#   and one misses it narrowly (−0.08 [−0.33, +0.16]: a small mean change, a wide interval), and
#   there the s = 5 claims are not tested — hence their 50 % stability in the verdict table.
#   More epochs would cost more than the budget leaves. At s = 30 the baseline's EER is
#   lowest after a few epochs and then rises (training curves, section 5): at this scale the
#   self-supervised task overfits our small training set. In the baseline-only exploration of
#   section 3 its last-third change met the ±0.3-point rule at only one of the lengths we looked
#   at (18 epochs, where the rise paused) and not at 16, 20, 24, 30 or 36. Longer training does
#   not cure overfitting, so the two s = 30 claims stay *not tested*; their unjudged effects
#   (both against the paper's direction, lines above) belong to a model past its best EER.
# - **A wider mean gap is not a lower EER**: the gap is a difference of means, while EER and
#   minDCF depend on the overlap of the two distributions' tails (compare the Δgap and ΔEER
#   intervals above).
# - On the analogue task, read the verdicts as the signs of the effects at small scale: a small
#   CNN trained for 24 epochs on synthetic identities, five seeds, one margin per family (the
#   `book` preset runs AM 0.2, AAM 0.1 and 0.3 only; `full` runs the paper's grid). The paper's
#   effects are a few tenths of a point of EER on VoxCeleb; they need not survive a change of
#   data, encoder and training length, and where they do not, our verdicts say so.
# - The official code has a detail worth knowing about the paper's "learnable margin" rows: at
#   commit 97915a6 the AAM margin enters `SNTXentAAM` through `math.cos`/`math.sin` (so it gets
#   no gradient), the margin parameter is not in the optimiser's parameter groups
#   (`get_learnable_params` returns the encoder and projector only), and `train_step` assigns a
#   float to the margin every step, which PyTorch rejects for a registered parameter
#   (`TypeError`) — those rows cannot have come from this exact commit. Our
#   `MarginContrastiveLoss(learnable=True)` makes the margin trainable; a margin trained to
#   minimise the same loss can only shrink (a larger margin always raises the loss, a unit test
#   checks the sign of its gradient), consistent with the paper's finding that learning it does
#   not help. We did not run the learnable rows.
#
# These verdicts are collected with the other chapters' on the
# [reproduction status](status.md) page.

# %%
elapsed = time.time() - ch.started
run_cpu = sum(r["cpu_s"] for r in every)
print(f"This execution: {elapsed:.0f} s wall time on {ch.workers} worker(s); the training runs "
      f"took {run_cpu:.0f} s of CPU time in all, i.e. about {run_cpu / max(1, ch.workers):.0f} s "
      f"of wall time on idle cores (budget for the book preset: 180 s).")

# %% [markdown]
# ## Provenance
# Parameters of this run (see `lossbook list -v` for every preset):

# %%
ch.finish()
