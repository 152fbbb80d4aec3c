"""Exact-likelihood synthetic datasets (DESIGN.md §4); they know nothing of models or diffusion.

`mixture`, `hmm` and `binsaw` give exact log p(x), fresh samples and (mixture, hmm) exact
conditionals p(x_i | observed positions), the oracle denoiser of DESIGN.md §4.

Shapes: B = batch, L = sequence length, K = vocabulary size, M = mixture components,
S = hidden states, Q = quadrature nodes. Every probability table is float64 and strictly positive
(mixed with `FLOOR` of the uniform distribution), so `log_prob` is always finite.

Randomness: every parameter table and every sample is a function of `seed` alone, through
`numpy.random.SeedSequence` keys (never the global RNG):
  parameters  (seed, 3)                   numpy Generator
  train batch (seed, 0, step, rank)       torch.Generator
  val split   (seed, 1)                   torch.Generator
  test split  (seed, 2)                   torch.Generator
so training streams differ across (step, rank), repeat exactly, and never coincide with the splits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from catdiff.data.base import CategoricalDataset

FLOOR = 1e-3  # every categorical table is (1 - FLOOR) * drawn + FLOOR * uniform

_TRAIN, _VAL, _TEST, _PARAMS = 0, 1, 2, 3  # SeedSequence stream tags
_SPLITS = {"val": _VAL, "test": _TEST}


# ---- helpers ---------------------------------------------------------------------------------
def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _seed_int(*key: int) -> int:
    """A 64-bit seed hashed from an integer key by numpy's SeedSequence (distinct keys → seeds)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0])


def _torch_generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed_int(*key))


def _floored(p: np.ndarray) -> np.ndarray:
    """Mix each last-axis distribution with FLOOR of the uniform one (no exact zeros)."""
    p = p / p.sum(-1, keepdims=True)
    return (1.0 - FLOOR) * p + FLOOR / p.shape[-1]


def _categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of `probs` (..., K) by inverse CDF → (...) int64."""
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, dtype=torch.float64)
    cdf = probs.to(torch.float64).cumsum(-1)  # (..., K)
    idx = (cdf < u * cdf[..., -1:]).sum(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def _one_hot_observed(cond: torch.Tensor, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Overwrites the (B, L, K) rows of `cond` at observed positions with the one-hot of x."""
    cond = cond.masked_fill(observed[..., None], 0.0)
    return cond.scatter_add_(2, x[..., None], observed[..., None].to(cond.dtype))


class _Synthetic(CategoricalDataset):
    """Shared plumbing: deterministic training streams, cached splits, state round trip."""

    exact = True
    kind = "tokens"

    def _init_common(self, kwargs: dict) -> None:
        self.seed = _check_int("seed", kwargs["seed"], minimum=0)
        self.n_val = _check_int("n_val", kwargs["n_val"])
        self.n_test = _check_int("n_test", kwargs["n_test"])
        # plain Python scalars so that state() is JSON-able even if numpy scalars were passed
        self._kwargs = {k: v.item() if isinstance(v, np.generic) else v for k, v in kwargs.items()}
        self._splits: dict[str, torch.Tensor] = {}

    def _params_rng(self) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, _PARAMS]))

    def _check_tokens(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.seq_len:
            raise ValueError(f"x must have shape (B, {self.seq_len}), got {tuple(x.shape)}")
        lo, hi = torch.aminmax(x) if x.numel() else (0, 0)
        if int(lo) < 0 or int(hi) >= self.vocab_size:
            raise ValueError(f"x must hold tokens in [0, {self.vocab_size})")

    def _check_observed(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Validated copy of x with unobserved entries replaced by 0 (they may hold a mask id)."""
        if observed.shape != x.shape or observed.dtype != torch.bool:
            raise ValueError(f"observed must be a bool tensor of shape {tuple(x.shape)}")
        x = torch.where(observed, x.long(), torch.zeros_like(x, dtype=torch.long))
        self._check_tokens(x)
        return x

    def train_batch(
        self, step: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> torch.Tensor:
        """(B, L) fresh samples from the generator keyed (seed, 0, step, rank).

        `world` is only used to check the rank; a rank's batch does not depend on it."""
        step = _check_int("step", step, minimum=0)
        batch_size = _check_int("batch_size", batch_size)
        world = _check_int("world", world)
        rank = _check_int("rank", rank, minimum=0)
        if rank >= world:
            raise ValueError(f"rank must be < world ({world}), got {rank}")
        return self.sample(batch_size, _torch_generator(self.seed, _TRAIN, step, rank))

    def split(self, name: str) -> torch.Tensor:
        """(N, L) fixed held-out samples keyed (seed, 1) for "val", (seed, 2) for "test"; cached."""
        if name not in _SPLITS:
            raise ValueError(f"unknown split {name!r}; allowed: 'val', 'test'")
        if name not in self._splits:
            n = self.n_val if name == "val" else self.n_test
            self._splits[name] = self.sample(n, _torch_generator(self.seed, _SPLITS[name]))
        return self._splits[name].clone()

    def state(self) -> dict:
        """{"name", **every constructor kwarg} (vocab_size and seq_len included): JSON-able, and
        `registry.build_dataset(state)` or `from_state(state)` rebuilds this dataset exactly."""
        return {"name": self.name, **self._kwargs}

    @classmethod
    def from_state(cls, state: dict) -> _Synthetic:
        """Rebuild a dataset from `state()`; refuses the state of another dataset."""
        kwargs = dict(state)
        if kwargs.pop("name", cls.name) != cls.name:
            raise ValueError(f"state is not of a {cls.name!r} dataset: name {state['name']!r}")
        return cls(**kwargs)


# ---- mixture ---------------------------------------------------------------------------------
class Mixture(_Synthetic):
    """Mixture of M product-of-categoricals components (DESIGN.md §4, `mixture`).

    p(x) = Σ_m w_m Π_i probs[m, i, x_i]. Parameters, fixed by `seed`:
      probs[m, i] = (1 - FLOOR) Dir(concentration · 1_K) + FLOOR / K   (per component, position)
      weights     = (1 - FLOOR) Dir(weights_concentration · 1_M) + FLOOR / M
    `concentration` is the one peakedness knob: small values put nearly all mass of each
    (component, position) on one symbol, so components are far apart and tokens strongly
    dependent. The default 0.08 is calibrated (DESIGN.md §4) so that the exact-conditional
    ("oracle") masked sampler on (M, L, K) = (16, 32, 8) has sample-NLL excess over H/L of about
    0.86 / 0.35 / 0.03 nats/token at 4 / 8 / 64 steps. `weights_concentration = 10` keeps the
    weights unequal but none negligible.
    """

    name = "mixture"

    def __init__(
        self,
        num_components: int = 16,
        seq_len: int = 32,
        vocab_size: int = 8,
        concentration: float = 0.08,
        weights_concentration: float = 10.0,
        seed: int = 0,
        n_val: int = 2048,
        n_test: int = 2048,
    ):
        self.num_components = _check_int("num_components", num_components)
        self.seq_len = _check_int("seq_len", seq_len)
        self.vocab_size = _check_int("vocab_size", vocab_size, minimum=2)
        self.concentration = _check_positive("concentration", concentration)
        self.weights_concentration = _check_positive("weights_concentration", weights_concentration)
        self._init_common(
            dict(
                num_components=num_components,
                seq_len=seq_len,
                vocab_size=vocab_size,
                concentration=concentration,
                weights_concentration=weights_concentration,
                seed=seed,
                n_val=n_val,
                n_test=n_test,
            )
        )
        M, L, K = self.num_components, self.seq_len, self.vocab_size
        rng = self._params_rng()
        probs = rng.dirichlet(np.full(K, self.concentration), size=(M, L))  # (M, L, K)
        weights = rng.dirichlet(np.full(M, self.weights_concentration))  # (M,)
        self.probs = torch.from_numpy(_floored(probs))  # (M, L, K) float64
        self.weights = torch.from_numpy(_floored(weights))  # (M,) float64
        # log-prob table with an extra all-zero symbol K standing for "unobserved":
        log_lkm = self.probs.log().permute(1, 2, 0)  # (L, K, M)
        pad = torch.zeros(L, 1, M, dtype=torch.float64)
        self._log_table = torch.cat([log_lkm, pad], 1).reshape(L * (K + 1), M)  # (L·(K+1), M)
        self._log_weights = self.weights.log()  # (M,)

    def _log_joint(self, x: torch.Tensor, observed: torch.Tensor | None) -> torch.Tensor:
        """(B, M) log w_m + Σ_{i observed} log probs[m, i, x_i] (one embedding_bag sum)."""
        K = self.vocab_size
        if observed is not None:
            x = torch.where(observed, x, K)  # symbol K: zero row of the table
        rows = x + torch.arange(self.seq_len) * (K + 1)  # (B, L) rows of _log_table
        return (
            torch.nn.functional.embedding_bag(rows, self._log_table, mode="sum") + self._log_weights
        )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) exact log p(x) = logsumexp_m [log w_m + Σ_i log probs[m, i, x_i]]."""
        self._check_tokens(x)
        return torch.logsumexp(self._log_joint(x.long(), None), dim=1)

    def component_log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M) float64 log p(c = m | x) for fully observed x."""
        self._check_tokens(x)
        return torch.log_softmax(self._log_joint(x.long(), None), dim=1)

    latent_name = "component"

    def latent_assignments(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) the most likely component argmax_m p(c = m | x) of each sequence."""
        return self.component_log_posterior(x).argmax(1, keepdim=True)

    def latent_marginals(self) -> torch.Tensor:
        """(1, M) float64: the true law of the component (the mixture weights)."""
        return self.weights[None]

    def latent_labels(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent_assignments(x)[:, 0]

    def conditionals(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """(B, L, K) exact p(x_i = k | x_observed) = Σ_m p(m | x_observed) probs[m, i, k];
        one-hot of x_i at observed positions (contract in base.py)."""
        x = self._check_observed(x, observed)
        post = torch.softmax(self._log_joint(x, observed), dim=1)  # (B, M)
        cond = post @ self.probs.reshape(self.num_components, -1)  # (B, L·K)
        return _one_hot_observed(cond.view(x.shape + (self.vocab_size,)), x, observed)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, L): component c ~ weights, then x_i ~ probs[c, i] independently."""
        n = _check_int("n", n, minimum=0)
        comp = _categorical(self.weights.expand(n, -1), generator)  # (n,)
        return _categorical(self.probs[comp], generator)  # probs[comp]: (n, L, K) → (n, L)


# ---- hidden Markov model -----------------------------------------------------------------------
class HMM(_Synthetic):
    """Hidden Markov model with S states and K symbols (DESIGN.md §4, `hmm`).

    Parameters, fixed by `seed` (each row then floored with FLOOR of the uniform):
      init      ~ Dir(1_S)
      trans[s]  = stickiness · e_s + (1 - stickiness) · Dir(transition_concentration · 1_S)
      emit[s]   ~ Dir(emission_concentration · 1_K)
    A sticky chain (default 0.9: mean run length ≥ 10 of L = 32) with peaked emissions gives
    long-range structure. Exact likelihood by the forward algorithm in log space; exact
    conditionals by forward–backward with emission likelihood 1 at unobserved positions.
    """

    name = "hmm"

    def __init__(
        self,
        num_states: int = 8,
        seq_len: int = 32,
        vocab_size: int = 8,
        stickiness: float = 0.9,
        transition_concentration: float = 0.5,
        emission_concentration: float = 0.2,
        seed: int = 0,
        n_val: int = 2048,
        n_test: int = 2048,
    ):
        self.num_states = _check_int("num_states", num_states)
        self.seq_len = _check_int("seq_len", seq_len)
        self.vocab_size = _check_int("vocab_size", vocab_size, minimum=2)
        if (
            isinstance(stickiness, bool)
            or not isinstance(stickiness, (int, float))
            or not (0 <= stickiness < 1)
        ):
            raise ValueError(f"stickiness must be a number in [0, 1), got {stickiness!r}")
        self.stickiness = float(stickiness)
        self.transition_concentration = _check_positive(
            "transition_concentration", transition_concentration
        )
        self.emission_concentration = _check_positive(
            "emission_concentration", emission_concentration
        )
        self._init_common(
            dict(
                num_states=num_states,
                seq_len=seq_len,
                vocab_size=vocab_size,
                stickiness=stickiness,
                transition_concentration=transition_concentration,
                emission_concentration=emission_concentration,
                seed=seed,
                n_val=n_val,
                n_test=n_test,
            )
        )
        S, K = self.num_states, self.vocab_size
        rng = self._params_rng()
        init = rng.dirichlet(np.ones(S))  # (S,)
        rows = rng.dirichlet(np.full(S, self.transition_concentration), size=S)  # (S, S)
        trans = self.stickiness * np.eye(S) + (1 - self.stickiness) * rows  # (S, S)
        emit = rng.dirichlet(np.full(K, self.emission_concentration), size=S)  # (S, K)
        self.init = torch.from_numpy(_floored(init))  # (S,) float64
        self.trans = torch.from_numpy(_floored(trans))  # (S, S) float64, rows sum to 1
        self.emit = torch.from_numpy(_floored(emit))  # (S, K) float64
        self._log_init = self.init.log()  # (S,)
        self._log_emit_ks = self.emit.log().T.contiguous()  # (K, S)

    def _forward(self, log_e: torch.Tensor) -> list[torch.Tensor]:
        """Forward recursion in log space, log α_i(s) = log p(evidence_{≤i}, z_i = s), from the
        (B, L, S) emission log-likelihoods. The sum over the previous state is a matmul on
        exp(log α - max), so it cannot underflow (every trans entry is ≥ FLOOR / S)."""
        la = [self._log_init + log_e[:, 0]]  # (B, S)
        for i in range(1, self.seq_len):
            m = la[-1].amax(1, keepdim=True)  # (B, 1)
            la.append(((la[-1] - m).exp() @ self.trans).log() + m + log_e[:, i])  # (B, S)
        return la

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) exact log p(x) by the forward algorithm."""
        self._check_tokens(x)
        log_e = self._log_emit_ks[x.long()]  # (B, L, S)
        return torch.logsumexp(self._forward(log_e)[-1], dim=1)

    def _state_posterior(self, log_e: torch.Tensor) -> torch.Tensor:
        """(B, L, S) p(z_i = s | evidence) by forward–backward from (B, L, S) emission log-likelihoods."""
        la = self._forward(log_e)
        lb = [torch.zeros_like(la[0])]  # log β_{L-1} = 0, (B, S)
        for i in range(self.seq_len - 1, 0, -1):  # log β_{i-1}(s) = log Σ_s' trans[s, s'] e_i β_i
            nxt = log_e[:, i] + lb[-1]  # (B, S_next)
            m = nxt.amax(1, keepdim=True)  # (B, 1)
            lb.append(((nxt - m).exp() @ self.trans.T).log() + m)  # (B, S)
        return torch.softmax(torch.stack(la, 1) + torch.stack(lb[::-1], 1), dim=2)  # (B, L, S)

    def conditionals(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """(B, L, K) exact p(x_i = k | x_observed) = Σ_s p(z_i = s | x_observed) emit[s, k]
        (forward–backward; unobserved positions have emission likelihood 1)."""
        x = self._check_observed(x, observed)
        post = self._state_posterior(self._log_emit_ks[x] * observed[..., None])  # 0 where unobserved
        return _one_hot_observed(post @ self.emit, x, observed)  # (B, L, S) @ (S, K) → (B, L, K)

    latent_name = "state"

    def latent_assignments(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) the most likely hidden state argmax_s p(z_i = s | x) at every position."""
        self._check_tokens(x)
        return self._state_posterior(self._log_emit_ks[x.long()]).argmax(2)

    def latent_marginals(self) -> torch.Tensor:
        """(L, S) float64: the chain's true state law p(z_i) = init · trans^i at every position."""
        rows = [self.init]
        for _ in range(1, self.seq_len):
            rows.append(rows[-1] @ self.trans)
        return torch.stack(rows)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, L) by ancestral sampling, vectorised over the batch (sequential over positions)."""
        n = _check_int("n", n, minimum=0)
        z = _categorical(self.init.expand(n, -1), generator)  # (n,)
        states = [z]
        for _ in range(1, self.seq_len):
            z = _categorical(self.trans[z], generator)  # trans[z]: (n, S) → (n,)
            states.append(z)
        return _categorical(self.emit[torch.stack(states, 1)], generator)  # (n, L, K) → (n, L)


# ---- binary sawtooth -------------------------------------------------------------------------
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1) / 2, weights / 2  # on [0, 1]


class BinSaw(_Synthetic):
    """LDDM's binary sawtooth (METHODS.md §5; darioShar/LADD `binary_sawtooth`), K = 2.

    Per sequence a shift u ~ U[0, 1]; for i = 0..L-1
        v_i = (n_saws · ((i/L + u) mod 1)) mod 1,   p_i = c + (1 - 2c) · tri(v_i),
        tri(v) = 1 - |2v - 1|,                       x_i ~ Bernoulli(p_i).
    log p(x) = log ∫_0^1 Π_i p_i(u)^{x_i} (1 - p_i(u))^{1-x_i} du.

    Quadrature (instead of a midpoint rule): every p_i(u) is linear in u between the kinks of
    tri, which all lie on the grid u ∈ (1/P)Z with P = lcm(L, 2·n_saws). On each of the P pieces
    the integrand is therefore a polynomial of degree L, which Gauss–Legendre with
    `n_quad ≥ (L + 1)/2` nodes integrates *exactly*; the default `n_quad=None` takes
    L // 2 + 1 nodes per piece (L = 128: 128 × 65 = 8320 nodes), so the only error is float64
    rounding (positive weights, summed by logsumexp). A smaller n_quad gives an approximation.
    `seed` only keys the data streams (the distribution has no random parameters).
    """

    name = "binsaw"

    def __init__(
        self,
        seq_len: int = 128,
        n_saws: int = 2,
        c: float = 0.01,
        seed: int = 0,
        n_quad: int | None = None,
        n_val: int = 2048,
        n_test: int = 2048,
        vocab_size: int = 2,
    ):
        self.seq_len = _check_int("seq_len", seq_len)
        if vocab_size != 2:  # accepted only so that configs and state() look like the others'
            raise ValueError(f"vocab_size of binsaw must be 2, got {vocab_size!r}")
        self.vocab_size = 2
        self.n_saws = _check_int("n_saws", n_saws)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < 0.5:
            raise ValueError(f"c must be a number in (0, 0.5), got {c!r}")
        self.c = float(c)
        nodes = self.seq_len // 2 + 1 if n_quad is None else _check_int("n_quad", n_quad)
        self._init_common(
            dict(
                seq_len=seq_len,
                n_saws=n_saws,
                c=c,
                seed=seed,
                n_quad=n_quad,
                n_val=n_val,
                n_test=n_test,
                vocab_size=vocab_size,
            )
        )
        pieces = math.lcm(self.seq_len, 2 * self.n_saws)
        t, w = _gauss_legendre(nodes)
        u = ((np.arange(pieces)[:, None] + t[None, :]) / pieces).reshape(-1)  # (Q,) = (P·n,)
        log_w = np.log(np.tile(w, pieces) / pieces)  # (Q,)
        p = self.probs_given_shift(torch.from_numpy(u)).T  # (L, Q)
        self.quad_nodes = torch.from_numpy(u)  # (Q,)
        self._log_w = torch.from_numpy(log_w)  # (Q,)
        self._logit = p.log() - (-p).log1p()  # (L, Q) log p - log(1-p)
        self._base = (-p).log1p().sum(0) + self._log_w  # (Q,) Σ_i log(1-p_i) + log weight
        # shift-phase bins of the coverage metric (latent_assignments); a bin edge is a piece edge
        self.shift_bins = math.gcd(self.seq_len // math.gcd(self.seq_len, self.n_saws), 16)
        phase = torch.remainder(self.n_saws * self.quad_nodes, 1.0)
        self._node_bin = (phase * self.shift_bins).floor().long().clamp_(max=self.shift_bins - 1)

    def probs_given_shift(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L) float64 p_i(u) = P(x_i = 1 | u) for shifts u of shape (B,)."""
        i = torch.arange(self.seq_len, dtype=torch.float64)
        t = torch.remainder(i[None, :] / self.seq_len + u.to(torch.float64)[:, None], 1.0)  # (B, L)
        v = torch.remainder(self.n_saws * t, 1.0)
        return self.c + (1 - 2 * self.c) * (1 - (2 * v - 1).abs())

    def _node_log_joint(self, x: torch.Tensor):
        """Chunks (b, Q) of log w_q + log p(x | u_q) over the quadrature nodes, ≤ 2^22 entries each."""
        self._check_tokens(x)
        x = x.to(torch.float64)
        chunk = max(1, 2**22 // self._base.numel())
        for xb in x.split(chunk):
            yield xb @ self._logit + self._base

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) log ∫ Π_i Bern(x_i; p_i(u)) du by piecewise Gauss–Legendre (exact; class doc)."""
        out = [torch.logsumexp(lj, dim=1) for lj in self._node_log_joint(x)]  # (b, Q) → (b,)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    latent_name = "shift"

    def latent_assignments(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) the most likely shift-phase bin of each sequence: argmax_c p(φ ∈ bin c | x).

        The pattern depends on u only through its phase φ = (n_saws · u) mod 1, split into
        C = `shift_bins` = gcd(16, L / gcd(L, n_saws)) equal bins (16 at L = 128, n_saws = 2): then
        rotating a sequence by whole positions permutes the bins cyclically, so the assigned bins of
        exact samples are exactly uniform. p(φ-bin | x) sums the posterior over u on the quadrature
        nodes of `log_prob` (the bin edges fall on piece edges, so no node straddles one).
        A coverage metric of ours (issue 19, like `Mixture`'s component), not from the LDDM paper.
        """
        out = [torch.zeros(0, 1, dtype=torch.long)]
        for lj in self._node_log_joint(x):
            post = torch.softmax(lj, dim=1)  # (b, Q)
            mass = post.new_zeros(len(lj), self.shift_bins).index_add_(1, self._node_bin, post)
            out.append(mass.argmax(1, keepdim=True))
        return torch.cat(out)

    def latent_marginals(self) -> torch.Tensor:
        """(1, C) float64: the true law of the shift-phase bin, uniform (u ~ U[0, 1])."""
        return torch.full((1, self.shift_bins), 1.0 / self.shift_bins, dtype=torch.float64)

    def sample_with_latent(
        self, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, L) int64, u (n,) float64): samples and the shifts that generated them."""
        n = _check_int("n", n, minimum=0)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        p = self.probs_given_shift(u)  # (n, L)
        x = (torch.rand(n, self.seq_len, generator=generator, dtype=torch.float64) < p).long()
        return x, u

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, L) exact samples."""
        return self.sample_with_latent(n, generator)[0]
