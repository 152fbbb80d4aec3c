"""Tests of the shared transformer (bidirectional DiT and causal twin) and its layers."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from catdiff.models import layers
from catdiff.models.layers import apply_rotary, rotary_tables
from catdiff.models.transformer import (
    PRESETS,
    Transformer,
    TransformerConfig,
    build_transformer,
    flops_per_token,
    maybe_compile,
)

V, K, L, B = 11, 10, 12, 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared machine every OpenMP barrier can
    wait a scheduler slice; run these tests single-threaded and restore the setting after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, out_size=K, seq_len=L, d_model=32, n_layers=2, n_heads=4)
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg)).eval()


def perturb_zero_init(model: Transformer, std: float = 0.1) -> None:
    """Give every parameter (including the adaLN-Zero modulation) a random value."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


def tokens(b=B, n=L, seed=0):
    return torch.randint(0, V, (b, n), generator=torch.Generator().manual_seed(seed))


def test_output_shapes_tokens_and_embeds():
    m = make()
    t = torch.rand(B)
    assert m(tokens(), t).shape == (B, L, K)
    assert m(tokens(n=5), t).shape == (B, 5, K)
    emb = torch.randn(B, 7, 32)
    assert m(None, t, inputs_embeds=emb).shape == (B, 7, K)
    # inputs_embeds = the embedding of the tokens gives the same logits (positions added to both)
    x = tokens()
    torch.testing.assert_close(m(None, t, inputs_embeds=m.tok_emb(x)), m(x, t))


def test_abs_pos_is_optional():
    m = make(abs_pos=False, time_cond=False)
    assert not hasattr(m, "pos_emb")
    assert m(tokens()).shape == (B, L, K)
    with_pos = make(time_cond=False)
    assert with_pos.pos_emb.shape == (L, 32)
    assert with_pos.num_params(False) - m.num_params(False) == L * 32


def test_argument_validation():
    m = make()
    x, t = tokens(), torch.rand(B)
    with pytest.raises(ValueError):
        m(x)  # t missing for a time-conditioned model
    with pytest.raises(ValueError):
        m(x, t, inputs_embeds=torch.randn(B, L, 32))  # both inputs
    with pytest.raises(ValueError):
        m(tokens(n=L + 1), t)  # longer than the rotary table
    with pytest.raises(ValueError):
        m(x, torch.rand(B + 1))  # one t per sequence (or a single shared t)
    with pytest.raises(ValueError):
        make(time_cond=False)(x, t)  # t given to an unconditioned model
    with pytest.raises(ValueError):
        m.new_cache(B)  # bidirectional: no cache
    with pytest.raises(ValueError):
        TransformerConfig(vocab_size=5, out_size=6, seq_len=4, tie_weights=True)


@pytest.mark.parametrize("time_cond", [False, True])
def test_causal_future_tokens_do_not_leak(time_cond):
    m = make(causal=True, time_cond=time_cond)
    perturb_zero_init(m)
    t = torch.rand(B) if time_cond else None
    x = tokens()
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % V
    a, b = m(x, t), m(y, t)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().amax() > 1e-4


def test_bidirectional_sees_future_tokens():
    m = make(causal=False, time_cond=False)
    x = tokens()
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % V
    assert (m(x)[:, :7] - m(y)[:, :7]).abs().amax() > 1e-4


@pytest.mark.parametrize("time_cond", [False, True])
def test_kv_cache_matches_full_causal_forward(time_cond):
    m = make(causal=True, time_cond=time_cond)
    perturb_zero_init(m)
    t = torch.rand(B) if time_cond else None
    x = tokens()
    with torch.no_grad():
        full = m(x, t)  # (B, L, K)
        cache = m.new_cache(B)
        steps = [m(x[:, i:i + 1], t, cache=cache) for i in range(L)]  # one token at a time
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)
        # chunked prefill then single tokens (exercises the offset mask with several queries)
        cache = m.new_cache(B)
        chunks = [m(x[:, :5], t, cache=cache), m(x[:, 5:9], t, cache=cache), m(x[:, 9:], t, cache=cache)]
        torch.testing.assert_close(torch.cat(chunks, 1), full, rtol=1e-4, atol=1e-5)
        assert cache.pos == L
        with pytest.raises(ValueError):
            m(x[:, :1], t, cache=cache)  # cache is full


def test_adaln_zero_identity_at_init():
    m = make()
    x = tokens()
    out = m(x, torch.rand(B))
    # every block is the identity: logits = LayerNorm(embed(x) + pos) @ W_out^T
    expected = F.linear(F.layer_norm(m.tok_emb(x) + m.pos_emb[:L], (32,)), m.output_weight)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(m(x, torch.zeros(B)), m(x, torch.ones(B)))
    for blk in m.blocks:
        h = torch.randn(B, L, 32)
        c = torch.randn(B, 32)
        torch.testing.assert_close(blk(h, c, m.rope_cos[:L], m.rope_sin[:L]), h)
    # once the modulation is non-zero, t matters
    with torch.no_grad():
        for blk in m.blocks:
            blk.ada.weight.normal_(std=0.1)
        m.final_ada.weight.normal_(std=0.1)
    assert (m(x, torch.zeros(B)) - m(x, torch.ones(B))).abs().amax() > 1e-3


def _rot(x, pos, cos, sin):
    # x (N, Dh) rotated to the positions pos (N,)
    return apply_rotary(x, cos[pos], sin[pos])


def test_rotary_scores_depend_only_on_relative_position():
    Dh = 16
    cos, sin = rotary_tables(64, Dh)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, Dh, generator=g), torch.randn(1, Dh, generator=g)
    for m, n, s in [(3, 7, 5), (10, 2, 20), (0, 0, 33)]:
        score = (_rot(q, torch.tensor([m]), cos, sin) * _rot(k, torch.tensor([n]), cos, sin)).sum()
        shifted = (_rot(q, torch.tensor([m + s]), cos, sin) * _rot(k, torch.tensor([n + s]), cos, sin)).sum()
        torch.testing.assert_close(score, shifted, rtol=1e-5, atol=1e-5)
    # and it is a rotation (norm preserving) that does depend on the offset
    r3 = _rot(q, torch.tensor([3]), cos, sin)
    torch.testing.assert_close(r3.norm(), q.norm())
    a = (_rot(q, torch.tensor([3]), cos, sin) * _rot(k, torch.tensor([7]), cos, sin)).sum()
    b = (_rot(q, torch.tensor([3]), cos, sin) * _rot(k, torch.tensor([8]), cos, sin)).sum()
    assert (a - b).abs() > 1e-4


def test_rotary_matches_reference_formula_and_gradient():
    Dh = 8
    cos, sin = rotary_tables(10, Dh)
    x = torch.randn(2, 10, 3, Dh, dtype=torch.float64, requires_grad=True)
    c, s = cos.double()[:, None], sin.double()[:, None]  # (10, 1, Dh/2)
    ref = x * torch.cat([c, c], -1) + layers.rotate_half(x) * torch.cat([s, s], -1)
    torch.testing.assert_close(apply_rotary(x, c, s), ref)
    # complex-number form: (x1 + i x2) e^{i m θ}
    z = torch.complex(x[..., :Dh // 2], x[..., Dh // 2:]) * torch.complex(c, s)
    torch.testing.assert_close(apply_rotary(x, c, s), torch.cat([z.real, z.imag], -1))
    assert torch.autograd.gradcheck(lambda v: apply_rotary(v, c, s), (x,))


def test_weight_tying_shares_the_parameter():
    m = make(tie_weights=True)  # vocab 11 >= out 10: the first 10 rows are the output projection
    assert not hasattr(m, "head")
    assert m.output_weight.data_ptr() == m.tok_emb.weight.data_ptr()
    assert m.output_weight.shape == (K, 32)
    names = [n for n, _ in m.named_parameters()]
    assert "tok_emb.weight" in names and not any(n.startswith("head") for n in names)
    # gradient of the logits reaches embedding rows that no input token used
    x = torch.zeros(B, L, dtype=torch.long)
    m(x, torch.rand(B)).sum().backward()
    assert m.tok_emb.weight.grad[1:K].abs().sum() > 0
    assert m.tok_emb.weight.grad[K:].abs().sum() == 0  # the mask row is input-only
    same = make(tie_weights=True, vocab_size=K)
    assert same.output_weight.data_ptr() == same.tok_emb.weight.data_ptr()
    untied = make()
    assert untied.head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()


def test_cond_changes_output():
    m = make(cond_dim=5)
    x, t = tokens(), torch.rand(B)
    c1, c2 = torch.randn(B, 5), torch.randn(B, 5)
    torch.testing.assert_close(m(x, t, cond=c1), m(x, t, cond=c2))  # adaLN-Zero at init
    perturb_zero_init(m)
    assert (m(x, t, cond=c1) - m(x, t, cond=c2)).abs().amax() > 1e-3
    with pytest.raises(ValueError):
        m(x, t)  # cond missing
    # conditioning without time: adaLN blocks driven by cond alone
    m2 = make(cond_dim=5, time_cond=False)
    perturb_zero_init(m2)
    assert (m2(x, cond=c1) - m2(x, cond=c2)).abs().amax() > 1e-3


def independent_flops(cfg: TransformerConfig, seq_len: int) -> float:
    """Count matmul weights from the module tree instead of the formula."""
    m = Transformer(cfg)
    per_token = per_seq = 0
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.Linear):
            if name.endswith(("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")) or name == "head":
                per_token += mod.weight.numel()
            else:  # time MLP, cond projection, adaLN modulations: once per sequence
                per_seq += mod.weight.numel()
    if cfg.tie_weights:
        per_token += m.output_weight.numel()
    n = per_token + per_seq / seq_len
    attn = cfg.n_layers * 2 * 2 * seq_len * cfg.d_model  # QK^T and AV, forward
    return 6 * n + 3 * attn


@pytest.mark.parametrize("kw", [dict(), dict(tie_weights=True), dict(time_cond=False, causal=True),
                                dict(cond_dim=7, mlp_ratio=3.0)])
def test_flops_per_token_against_independent_count(kw):
    cfg = TransformerConfig(vocab_size=V, out_size=K, seq_len=L, d_model=32, n_layers=3, n_heads=4, **kw)
    assert flops_per_token(cfg, L) == pytest.approx(independent_flops(cfg, L))
    assert flops_per_token(cfg, L, training=False) == pytest.approx(independent_flops(cfg, L) / 3)
    # the headline formula: 6 N + 12 n_layers L D
    D, H = cfg.d_model, cfg.hidden
    n_tok = cfg.n_layers * (4 * D * D + 2 * D * H) + D * K
    assert flops_per_token(cfg, L) >= 6 * n_tok + 12 * cfg.n_layers * L * D


@pytest.mark.parametrize("kw", [dict(), dict(time_cond=False), dict(causal=True, cond_dim=3, tie_weights=True)])
def test_gradient_reaches_every_parameter(kw):
    m = make(**kw).train()
    perturb_zero_init(m)  # adaLN-Zero blocks otherwise pass no gradient to attention/MLP at step 0
    t = torch.rand(B) if m.cfg.time_cond else None
    cond = torch.randn(B, m.cfg.cond_dim) if m.cfg.cond_dim else None
    x = tokens()
    loss = F.cross_entropy(m(x, t, cond=cond).reshape(-1, K), x.reshape(-1) % K)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_plain_model_gradients_at_init():
    m = make(time_cond=False).train()
    x = tokens()
    F.cross_entropy(m(x).reshape(-1, K), x.reshape(-1) % K).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_presets_build_and_count():
    for name in PRESETS:
        m = build_transformer(name, vocab_size=50, out_size=49, seq_len=64)
        assert m.cfg.d_model == PRESETS[name]["d_model"] and len(m.blocks) == PRESETS[name]["n_layers"]
        D = m.cfg.d_model
        assert m.num_params(non_embedding=False) - m.num_params() == 50 * D + 64 * D  # tokens + positions
    # the small preset: 12 D^2 per block of per-token weights
    small = build_transformer("small", time_cond=False, abs_pos=False)
    assert small.num_params() == 6 * (12 * 384**2 + 2 * 384) + 384 + 384 * 256
    with pytest.raises(ValueError):
        build_transformer("huge")


def test_dropout_is_active_only_in_training():
    m = make(dropout=0.5, time_cond=False)
    x = tokens()
    torch.testing.assert_close(m.eval()(x), m(x))
    m.train()
    assert (m(x) - m(x)).abs().amax() > 0


def test_maybe_compile_disabled_and_fallback(monkeypatch):
    m = make()
    assert maybe_compile(m, enabled=False).forward.__func__ is Transformer.forward
    x, t = tokens(), torch.rand(B)
    ref = m(x, t)

    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    m2 = maybe_compile(m, enabled=True)
    assert m2 is m
    with pytest.warns(UserWarning, match="falling back"):
        out = m2(x, t)
    torch.testing.assert_close(out, ref)
    assert m2.forward.__func__ is Transformer.forward  # eager restored
    assert set(m2.state_dict()) == set(make().state_dict())


def test_maybe_compile_deepcopy_runs_its_own_parameters(monkeypatch):
    calls = []

    def fake_compile(fn, **kw):  # an "identity compiler" that records its use
        def call(*a, **k):
            calls.append(1)
            return fn(*a, **k)
        return call

    monkeypatch.setattr(torch, "compile", fake_compile)
    m = maybe_compile(make(causal=True), enabled=True)
    x, t = tokens(), torch.rand(B)
    ref = m(x, t)
    assert calls
    twin = copy.deepcopy(m)
    with torch.no_grad():
        twin.head.weight.mul_(2.0)
    torch.testing.assert_close(twin(x, t), 2 * ref)
    torch.testing.assert_close(m(x, t), ref)
    n = len(calls)
    m(x[:, :1], t, cache=m.new_cache(B))  # KV-cached calls bypass the compiled forward
    assert len(calls) == n


@pytest.mark.slow
def test_torch_compile_matches_eager():
    m = make(causal=True)
    perturb_zero_init(m)
    x, t = tokens(), torch.rand(B)
    ref = m(x, t)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(m.parameters()))
    maybe_compile(m, enabled=True)
    out = m(x, t)
    assert isinstance(m.forward, layers._CompiledForward)  # no fallback to eager happened
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), list(m.parameters()))
    for g, r in zip(grads, ref_grads, strict=True):  # fused kernels reorder sums: compare in norm
        assert (g - r).norm() <= 1e-3 * r.norm() + 1e-6


def test_rotary_compile_branch_matches_eager(monkeypatch):
    cos, sin = rotary_tables(10, 8)
    x = torch.randn(2, 10, 3, 8)
    eager = apply_rotary(x, cos[:, None], sin[:, None])
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(apply_rotary(x, cos[:, None], sin[:, None]), eager)


def test_time_accepts_scalar_and_is_scaled():
    m = make()
    perturb_zero_init(m)
    x = tokens()
    torch.testing.assert_close(m(x, torch.tensor(0.3)), m(x, torch.full((B,), 0.3)))
    # t in [0, 1] is scaled internally: nearby times give distinct outputs
    assert (m(x, torch.full((B,), 0.50)) - m(x, torch.full((B,), 0.51))).abs().amax() > 1e-4
    assert math.isfinite(m(x, torch.ones(B)).sum().item())


def test_local_mix_is_a_zero_padded_depthwise_convolution():
    import torch.nn.functional as F

    from catdiff.models.layers import local_mix
    from catdiff.models.transformer import Block, TransformerConfig

    cfg = TransformerConfig(vocab_size=5, out_size=5, seq_len=9, d_model=16, n_heads=2, n_layers=1,
                            time_cond=False, local_mix=5)
    blk = Block(cfg, 0)
    torch.nn.init.normal_(blk.mix_weight)
    h = torch.randn(3, 9, 16)
    ref = F.conv1d(h.transpose(1, 2), blk.mix_weight.t().unsqueeze(1), padding=2, groups=16).transpose(1, 2)
    assert torch.allclose(local_mix(h, blk.mix_weight), ref, atol=1e-5)
    # the output at position i depends only on positions i-2..i+2
    h2 = h.clone()
    h2[:, 8] += 1.0
    diff = (local_mix(h2, blk.mix_weight) - local_mix(h, blk.mix_weight)).abs().sum(-1)  # (3, 9)
    assert torch.all(diff[:, :6] == 0) and torch.all(diff[:, 6:] > 0)


def test_local_mix_settings_are_validated():
    from catdiff.models.transformer import TransformerConfig

    for bad in [dict(local_mix=4), dict(local_mix=-1), dict(local_mix=3, causal=True)]:
        with pytest.raises(ValueError):
            TransformerConfig(vocab_size=5, out_size=5, seq_len=9, **bad)


def test_cross_attention_starts_silent_and_then_reads_the_context():
    from catdiff.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    net = Transformer(TransformerConfig(vocab_size=5, out_size=5, seq_len=6, d_model=32, n_heads=2, n_layers=2,
                                        context_dim=7))
    x, t = torch.randint(0, 5, (3, 6)), torch.rand(3)
    c1, c2 = torch.randn(3, 4, 7), torch.randn(3, 4, 7)
    torch.testing.assert_close(net(x, t, context=c1), net(x, t, context=c2))  # zero-init output projection
    for blk in net.blocks:
        torch.nn.init.normal_(blk.cross.proj.weight, std=0.1)
        torch.nn.init.normal_(blk.ada.weight, std=0.1)
    a = net(x, t, context=c1)
    assert not torch.allclose(a, net(x, t, context=c2))
    a.sum().backward()
    assert float(net.blocks[0].cross.kv.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="context"):
        net(x, t)
