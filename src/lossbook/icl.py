"""In-context linear regression with linear self-attention (von Oswald et al., ICML 2023).

Everything the chapter "Transformers learn in-context by gradient descent" needs, written in
torch from the paper and its official JAX code (google-research/self-organising-systems,
folder `transformers_learn_icl_by_gd`, files `src/data.py`, `src/attn.py`, `src/train.py`,
`src/config.py` and the notebook `constructed_token_setup.ipynb`):

- `sample_tasks`: linear-regression tasks as token sequences, e_j = (x_j, y_j), query (x_q, 0);
- `LSA`: a stack of linear self-attention layers (no softmax, no MLP, no LayerNorm, no biases),
  the paper's model, with the official initialisation;
- `gd_construction`: the paper's Proposition 1 — weights with which one LSA layer *is* one step
  of gradient descent on the in-context least-squares loss (and GD++ with a curvature term);
- `gd_tokens` / `gd_predict`: the gradient-descent baselines themselves;
- `line_search_eta`, `optimal_eta`, `fit_gdpp`: the GD step sizes;
- `sensitivities`, `alignment`: the paper's comparison measures;
- `train_lsa`: the training loop (Adam on freshly sampled tasks every step).

Conventions (the paper's, checked against the official code). A task is w ~ N(0, I)·weight_scale,
x_j, x_q ~ U(−r/2, r/2)^d with r = `input_range` (the official `create_reg_data`), y = w·x.
Tokens are columns e_j = (x_j, y_j) ∈ R^{d+1}; the query token is (x_q, 0). One LSA layer maps
every token e_t (context and query) to

    e_t ← e_t + P W_V Σ_{j≤N} e_j (W_K e_j)ᵀ (W_Q e_t)

— keys and values come from the N context tokens only (official `include_query=False`) and the
attention scores are used raw (no softmax, no 1/√k). The prediction is read from the query
token's y-entry with a minus sign, ŷ = −e_q[−1] (official `preds[:, -1, -1] * (-1.0)`), and the
training loss is ½·mean((y_q − ŷ)²) (official `compute_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Haiku's truncated-normal VarianceScaling divides by this constant (the std of a standard
# normal truncated to [-2, 2]) so that the truncated samples have the requested variance.
TRUNCATED_NORMAL_STD = 0.87962566103423978


# --- data -------------------------------------------------------------------------------------

@dataclass
class Tasks:
    """A batch of regression tasks: tokens (B, N+1, d+1) with the query last, targets (B,)."""

    tokens: torch.Tensor
    target: torch.Tensor
    w: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)


def sample_tasks(n: int, *, dim: int = 10, context: int = 10, input_range: float = 2.0,
                 weight_scale: float = 1.0, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu", dtype=torch.float32) -> Tasks:
    """`n` tasks of the official `create_reg_data` (no distractors).

    w ~ N(0, I)·weight_scale, x_j and x_q ~ U(−input_range/2, input_range/2)^dim, y = w·x.
    `input_range=2` is the paper's U(−1, 1); the official notebooks use `input_range=1`.
    """
    w = torch.randn(n, dim, generator=generator, device=device, dtype=dtype) * weight_scale
    tokens = torch.empty(n, context + 1, dim + 1, device=device, dtype=dtype)
    x = tokens[..., :dim].uniform_(-input_range / 2, input_range / 2, generator=generator)
    y = torch.matmul(x, w[:, :, None])[..., 0]
    target = y[:, -1].clone()
    y[:, -1] = 0.0  # the query token carries y = 0
    tokens[..., dim] = y
    return Tasks(tokens, target, w)


def icl_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's in-context regression loss ½·mean((y − ŷ)²) (official `compute_loss`)."""
    return 0.5 * ((target - pred) ** 2).mean()


# --- the model --------------------------------------------------------------------------------

def haiku_variance_scaling_(weight: torch.Tensor, scale: float, fan_in: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """In place: Haiku's `VarianceScaling(scale)` (fan-in, truncated normal at ±2σ)."""
    std = math.sqrt(scale / fan_in) / TRUNCATED_NORMAL_STD
    with torch.no_grad():
        sample = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
        while (bad := sample.abs() > 2).any():  # resample outside ±2σ
            sample[bad] = torch.randn(int(bad.sum()), generator=generator, dtype=weight.dtype)
        weight.copy_(sample * std)
    return weight


class LSA(nn.Module):
    """A stack of linear self-attention layers: the paper's attention-only linear Transformer.

    Each layer has W_Q, W_K, W_V ∈ R^{k×D} and P ∈ R^{D×k} (D = d+1 the token size, k the key
    size, official `key_size = 11`), no biases, and adds its output to the residual stream.
    `shared=True` reuses one layer's weights in every layer (the official "recurrent"
    Transformer, `deq=True`). Weights are drawn like Haiku's VarianceScaling(init_scale) with
    the official `init_scale = 0.002 / num_layers`. `clip > 0` clamps the tokens after every
    layer (official `config.clip`, used for deep models only).
    """

    def __init__(self, token_dim: int = 11, *, layers: int = 1, shared: bool = True,
                 key_size: int = 11, init_scale: float | None = None, clip: float = 0.0,
                 seed: int = 0):
        super().__init__()
        self.token_dim, self.layers, self.shared, self.clip = token_dim, layers, shared, clip
        init_scale = 0.002 / layers if init_scale is None else init_scale
        generator = torch.Generator().manual_seed(seed)
        blocks = 1 if shared else layers

        def weights(rows: int, cols: int) -> nn.ParameterList:
            return nn.ParameterList(
                nn.Parameter(haiku_variance_scaling_(torch.empty(rows, cols), init_scale, cols,
                                                     generator)) for _ in range(blocks))

        self.W_Q = weights(key_size, token_dim)
        self.W_K = weights(key_size, token_dim)
        self.W_V = weights(key_size, token_dim)
        self.P = weights(token_dim, key_size)

    def block(self, layer: int) -> int:
        return 0 if self.shared else layer

    def products(self, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_Kᵀ W_Q, P W_V) of a layer: all the layer's function depends on."""
        b = self.block(layer)
        return self.W_K[b].T @ self.W_Q[b], self.P[b] @ self.W_V[b]

    def _clip(self, h: torch.Tensor) -> torch.Tensor:
        return h.clamp(-self.clip, self.clip) if self.clip > 0 else h

    def layer(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """One layer on every token: e_t + P W_V Σ_j e_j (e_jᵀ W_Kᵀ W_Q e_t)."""
        kq, pv = self.products(layer)
        context = h[:, :-1]
        scores = torch.bmm(h @ kq.T, context.transpose(1, 2))  # (B, T, N): e_jᵀ (W_KᵀW_Q) e_t
        return self._clip(h + torch.bmm(scores, context @ pv.T))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """All tokens after every layer, (B, N+1, D)."""
        h = tokens
        for layer in range(self.layers):
            h = self.layer(h, layer)
        return h

    def predict(self, tokens: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        """ŷ = −(query token's y-entry) after `layers` layers (default all), shape (B,).

        The last layer is evaluated for the query token only (the same arithmetic as `layer`,
        re-associated: only the last row of P W_V reaches the read-out), which makes training
        several times faster on a CPU.
        """
        layers = self.layers if layers is None else layers
        if layers == 0:
            return -tokens[:, -1, -1]
        if layers == 2 and self.clip == 0:
            return self._predict_two_layers(tokens)
        h = tokens
        for layer in range(layers - 1):
            h = self.layer(h, layer)
        kq, pv = self.products(layers - 1)
        context, query = h[:, :-1], h[:, -1]
        scores = (context * (query @ kq.T)[:, None, :]).sum(-1)  # (B, N)
        y_query = query[:, -1] + (scores * (context @ pv[-1])).sum(-1)
        if self.clip > 0:
            y_query = y_query.clamp(-self.clip, self.clip)
        return -y_query

    def _predict_two_layers(self, tokens: torch.Tensor) -> torch.Tensor:
        """`predict` for two layers without clipping, in matrix–vector form (about a third
        faster on a CPU than running the first layer on every token).

        For a fixed task a layer maps every token by the same matrix, e ↦ (I + M) e with
        M = PV·S·KQ and S = Σ_j e_j e_jᵀ over the context, so after the first layer the query is
        (I + M₀) e_q and the context's S becomes (I + M₀) S (I + M₀)ᵀ. Only products of these
        (symmetric S) matrices with vectors are needed. Tested against the token-by-token path.
        """
        (kq0, pv0), (kq1, pv1) = self.products(0), self.products(1)
        context, query = tokens[:, :-1], tokens[:, -1]
        S = torch.matmul(context.transpose(1, 2), context)  # (B, D, D), data only

        def s_mv(v):
            return (S * v[:, None, :]).sum(-1)

        def m_mv(v):  # M₀ v
            return s_mv(v @ kq0.T) @ pv0.T

        def mt_mv(v):  # M₀ᵀ v
            return s_mv(v @ pv0) @ kq0

        query = query + m_mv(query)
        u = query @ kq1.T
        u = s_mv(u + mt_mv(u))
        return -(query[:, -1] + (u + m_mv(u)) @ pv1[-1])

    @torch.no_grad()
    def load_matrices(self, W_Q, W_K, W_V, P) -> LSA:
        """Set every block's weights (e.g. to `gd_construction`)."""
        for b in range(len(self.W_Q)):
            for param, value in zip((self.W_Q, self.W_K, self.W_V, self.P), (W_Q, W_K, W_V, P)):
                param[b].copy_(torch.as_tensor(value, dtype=param[b].dtype))
        return self


def gd_construction(dim: int, context: int, eta: float, gamma: float = 0.0,
                    w0: torch.Tensor | None = None, dtype=torch.float32) -> dict:
    """The paper's Proposition 1: LSA weights that perform one step of GD (GD++ with γ > 0).

    With W_K = W_Q = [[I_d, 0], [0, 0]], W_V = [[I_d, 0], [w0ᵀ, −1]] and
    P = diag(−γ/N·I_d, η/N) (as in the official `create_weights`), one layer maps
    y_t ← y_t − (η/N) Σ_j (y_j − w0·x_j)(x_j·x_t): on the query token, which starts at
    −w0·x_q, this leaves −w1·x_q with w1 = w0 − η ∇L(w0) one gradient step on
    L(w) = 1/(2N) Σ_j (w·x_j − y_j)². GD++'s curvature correction γ also moves the inputs,
    x_t ← x_t − (γ/N) Σ_j x_j (x_j·x_t) (our 1/N normalisation of γ; the official code
    parameterises it differently). Returns the four matrices and their products.
    """
    D = dim + 1
    kq = torch.zeros(D, D, dtype=dtype)
    kq[:dim, :dim] = torch.eye(dim, dtype=dtype)
    W_V = torch.zeros(D, D, dtype=dtype)
    W_V[:dim, :dim] = torch.eye(dim, dtype=dtype)
    W_V[-1, -1] = -1.0
    if w0 is not None:
        W_V[-1, :dim] = torch.as_tensor(w0, dtype=dtype)
    P = torch.zeros(D, D, dtype=dtype)
    P[:dim, :dim] = -gamma / context * torch.eye(dim, dtype=dtype)
    P[-1, -1] = eta / context
    return {"W_Q": kq.clone(), "W_K": kq.clone(), "W_V": W_V, "P": P,
            "KQ": kq.T @ kq, "PV": P @ W_V}


def constructed_lsa(dim: int, context: int, eta: float, gamma: float = 0.0, layers: int = 1,
                    dtype=torch.float32) -> LSA:
    """A (shared-weight) LSA whose every layer is the construction: `layers` steps of GD/GD++."""
    c = gd_construction(dim, context, eta, gamma, dtype=dtype)
    return LSA(dim + 1, layers=layers, shared=True, key_size=dim + 1).to(dtype).load_matrices(
        c["W_Q"], c["W_K"], c["W_V"], c["P"])


# --- the gradient-descent baselines -----------------------------------------------------------

def gd_predict(tokens: torch.Tensor, eta: float, steps: int = 1,
               w0: torch.Tensor | None = None) -> torch.Tensor:
    """Plain GD in weight space: w ← w − η ∇L(w), L(w) = 1/(2N) Σ_j (w·x_j − y_j)²; ŷ = w·x_q."""
    x, y, x_query = tokens[:, :-1, :-1], tokens[:, :-1, -1], tokens[:, -1, :-1]
    w = torch.zeros_like(x_query) if w0 is None else torch.as_tensor(w0).expand_as(x_query)
    for _ in range(steps):
        residual = torch.einsum("bnd,bd->bn", x, w) - y
        w = w - eta * torch.einsum("bn,bnd->bd", residual, x) / x.shape[1]
    return (w * x_query).sum(-1)


def gd_tokens(tokens: torch.Tensor, eta: float, steps: int = 1,
              gamma: float = 0.0) -> torch.Tensor:
    """GD (γ = 0) and GD++ written on the tokens, as the paper does: per step, for every token t,
    y_t ← y_t − (η/N) Σ_j y_j (x_j·x_t) and x_t ← x_t − (γ/N) Σ_j x_j (x_j·x_t).
    Returns ŷ = −(query y-entry). With γ = 0 this is `gd_predict`, K steps for K layers."""
    x, y = tokens[..., :-1], tokens[..., -1]
    n = tokens.shape[1] - 1
    for _ in range(steps):
        gram = torch.bmm(x, x[:, :-1].transpose(1, 2))  # (B, T, N): x_t·x_j
        new_y = y - eta / n * torch.einsum("btn,bn->bt", gram, y[:, :-1])
        if torch.is_tensor(gamma) or gamma != 0:
            x = x - gamma / n * torch.bmm(gram, x[:, :-1])
        y = new_y
    return -y[:, -1]


def optimal_eta(dim: int, context: int, input_range: float) -> tuple[float, float]:
    """Closed-form best one-step GD step size and its expected loss for U(−r/2, r/2) inputs.

    With σ² = r²/12 and the uniform kurtosis E[x⁴]/σ⁴ = 9/5, a = (1/N) Σ_j y_j x_j·x_q has
    E[a y_q] = d σ⁴ and E[a²] = d σ⁶ (9/5 + d + N − 2)/N, so
    η* = N / (σ² (d + N − 1/5)) and L(η*) = ½ d σ² (d − 1/5) / (d + N − 1/5)
    (derived here; checked against `line_search_eta` in the tests).
    """
    var = input_range ** 2 / 12
    eta = context / (var * (dim + context - 0.2))
    return eta, 0.5 * dim * var * (dim - 0.2) / (dim + context - 0.2)


def line_search_eta(tasks: Tasks, steps: int = 1) -> tuple[float, float]:
    """The GD step size minimising the loss on `tasks`, and that loss.

    One step: ŷ = η·a is linear in η, so the loss is a parabola and the line search is exact
    (η = mean(a·y)/mean(a²)). Several steps: a bounded scalar search (Brent) on the same tasks.
    The official code scans η on a grid (`scan_lrs`, step 0.1).
    """
    tokens, target = tasks.tokens.double(), tasks.target.double()
    if steps == 1:
        a = gd_predict(tokens, 1.0)
        eta = float((a * target).mean() / (a * a).mean())
        return eta, float(icl_loss(eta * a, target))
    from scipy.optimize import minimize_scalar

    eta1, _ = line_search_eta(tasks, 1)
    result = minimize_scalar(lambda e: float(icl_loss(gd_predict(tokens, e, steps), target)),
                             bounds=(0.0, 2.5 * eta1), method="bounded",
                             options={"xatol": 1e-6 * eta1})
    return float(result.x), float(result.fun)


def fit_gdpp(tasks: Tasks, steps: int, eta0: float) -> tuple[float, float, float]:
    """GD++'s (η, γ) minimising the loss on `tasks` (L-BFGS from (η0, 0), exact gradients), and
    that loss.

    The official code instead trains η and γ with Adam (`pre_train_gd_hps`); both minimise the
    same loss over the same two numbers.
    """
    from scipy.optimize import minimize

    tokens, target = tasks.tokens.double(), tasks.target.double()

    def loss_and_grad(params):
        p = torch.tensor(params, dtype=torch.float64, requires_grad=True)
        loss = icl_loss(gd_tokens(tokens, p[0], steps, p[1]), target)
        (grad,) = torch.autograd.grad(loss, p)
        return float(loss.detach()), grad.numpy()

    result = minimize(loss_and_grad, x0=[eta0, 0.0], jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-10, "ftol": 1e-12, "maxiter": 200})
    return float(result.x[0]), float(result.x[1]), float(result.fun)


# --- comparison measures ----------------------------------------------------------------------

def sensitivities(predict, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions ŷ and their sensitivities ∂ŷ/∂x_q (B, d) for a batched `predict(tokens)`.

    Tasks do not interact, so the gradient of Σ ŷ w.r.t. the query inputs is per-task. For GD
    the sensitivity is the weight vector it learned in context.
    """
    with torch.enable_grad():
        tokens = tokens.detach().clone().requires_grad_(True)
        pred = predict(tokens)
        (grad,) = torch.autograd.grad(pred.sum(), tokens)
    return pred.detach(), grad[:, -1, :-1]


def alignment(pred_a, sens_a, pred_b, sens_b) -> dict:
    """The official `analyse`: mean cosine of sensitivities, mean L2 distance of sensitivities
    and mean |ŷ_a − ŷ_b|, plus the prediction distance relative to mean |ŷ_b|."""
    eps = 1e-8
    cos = ((sens_a / (sens_a.norm(dim=1, keepdim=True) + eps))
           * (sens_b / (sens_b.norm(dim=1, keepdim=True) + eps))).sum(1)
    pred_dist = (pred_a - pred_b).abs().mean()
    return {"cos": float(cos.mean()), "sens_dist": float((sens_a - sens_b).norm(dim=1).mean()),
            "pred_dist": float(pred_dist), "pred_dist_rel": float(pred_dist / pred_b.abs().mean())}


def matrix_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a).flatten().double(), torch.as_tensor(b).flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


def effective_weights(kq: torch.Tensor, pv: torch.Tensor, dim: int) -> dict:
    """Scale-free view of one trained layer, as the official plots normalise it.

    Only the products KQ = W_KᵀW_Q and PV = P W_V matter, and a factor can move between them.
    We divide KQ by the mean of its input-block diagonal and multiply PV by it (official
    `interpolate_weights`), so the construction reads KQ = [[I, 0], [0, 0]],
    PV = diag(−γ/N, …, −η/N). `eta_over_n` is the step size the layer implements (−PV[−1, −1]).
    """
    kq, pv = kq.detach(), pv.detach()
    scale = torch.diagonal(kq[:dim, :dim]).mean()
    return {"KQ": kq / scale, "PV": pv * scale, "eta_over_n": float(-pv[-1, -1] * scale)}


# --- training ---------------------------------------------------------------------------------

def clip_by_global_norm_(params, max_norm: float) -> float:
    """optax.clip_by_global_norm: scale all gradients by max_norm/‖g‖ when ‖g‖ > max_norm."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return float(norm)


def train_lsa(model: LSA, *, steps: int, batch_size: int, lr: float, task_kwargs: dict,
              seed: int, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-9,
              grad_clip: float = 1e-3, evaluate=None, eval_every: int = 100,
              progress: bool = False, desc: str = "LSA") -> list[dict]:
    """Train `model` with Adam on freshly sampled tasks every step; return the logged history.

    Our own loop rather than `lossbook.train.fit`: the paper trains *online* — every step draws a
    new batch of tasks (official `cycle_data = 0`) — while `fit` iterates over a fixed in-memory
    dataset. Optimiser as the official code: `optax.adamw(lr, b1=0.9, b2=0.98, eps=1e-9,
    weight_decay=0)` after `clip_by_global_norm(grad_clip)` (the notebook uses 0.001 for ≤ 2
    layers, 10 beyond). Seeded and deterministic: tasks come from a generator seeded by `seed`.
    `evaluate(model)` is logged before training, every `eval_every` steps and at the end.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)
    history = []

    def log(step: int, loss: float | None) -> None:
        record = {"step": step, "train_loss": loss}
        if evaluate is not None:
            with torch.no_grad():
                record.update(evaluate(model))
        history.append(record)

    log(0, None)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=2.0):
        tasks = sample_tasks(batch_size, generator=generator, device=device, **task_kwargs)
        loss = icl_loss(model.predict(tasks.tokens), tasks.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            clip_by_global_norm_(params, grad_clip)
        opt.step()
        if step % eval_every == 0 or step == steps:
            log(step, float(loss.detach()))
    return history
