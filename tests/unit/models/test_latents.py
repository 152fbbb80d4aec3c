"""Discrete-latent pieces: straight-through Gumbel-softmax, encoder/embedding shapes and dropout."""

import torch

from catdiff.models.latents import ConditionalMLP, LatentEmbedding, MLPEncoder, gumbel_softmax_st


def test_straight_through_gumbel_is_one_hot_forward_with_a_soft_gradient():
    logits = torch.randn(64, 3, 5, requires_grad=True)
    z = gumbel_softmax_st(logits, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(z.detach(), torch.nn.functional.one_hot(z.detach().argmax(-1), 5).float())
    (z * torch.randn(5)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_gumbel_max_draws_follow_the_softmax():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    z = gumbel_softmax_st(p.log().expand(40000, 4), 1.0, torch.Generator().manual_seed(1))
    freq = z.mean(0)
    assert torch.allclose(freq, p, atol=4 * (0.25 / 40000) ** 0.5)
    soft = gumbel_softmax_st(p.log().expand(8, 4), 1.0, torch.Generator().manual_seed(1), hard=False)
    assert torch.allclose(soft.sum(-1), torch.ones(8)) and (soft < 1).all()


def test_encoder_embedding_and_conditional_mlp():
    enc = MLPEncoder(2, m=3, k=4)
    assert enc(torch.randn(7, 2)).shape == (7, 3, 4)
    emb = LatentEmbedding(3, 4, 16)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 4, (7, 3)), 4).float()
    drop = torch.tensor([True] + [False] * 6)
    e = emb(onehot, drop)
    assert e.shape == (7, 16) and torch.equal(e[0], emb.null.detach()) and not torch.equal(e[1], e[0])
    net = ConditionalMLP(2, 32, 4, cond_dim=16)
    out = net(torch.randn(7, 2), torch.rand(7), e)
    assert out.shape == (7, 2)


def test_latent_embedding_lookup_equals_the_one_hot_product():
    emb = LatentEmbedding(3, 4, 16)
    z = torch.randint(0, 4, (7, 3))
    torch.testing.assert_close(emb.of_indices(z), emb(torch.nn.functional.one_hot(z, 4).float()))
