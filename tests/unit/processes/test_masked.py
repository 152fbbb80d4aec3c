import pytest
import torch

from catdiff.parameterizations import subs_log_probs
from catdiff.processes.masked import posterior_step, q_sample, unmask_probability
from catdiff.schedules import MaskSchedule


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_masking_rate_matches_one_minus_alpha(name, gen):
    s = MaskSchedule(name)
    x = torch.randint(0, 5, (400, 250), generator=gen)
    t = torch.full((400,), 0.3)
    z = q_sample(x, t, s, mask_id=5, generator=gen)
    rate = (z == 5).double().mean()
    p = 1 - float(s.alpha(torch.tensor(0.3)))
    se = (p * (1 - p) / z.numel()) ** 0.5
    assert abs(rate - p) < 5 * se
    assert torch.equal(z[z != 5], x[z != 5])  # unmasked tokens are untouched


def test_posterior_step_gives_the_forward_marginal_at_s(gen):
    """Masked at t, then revealed with (α_s-α_t)/(1-α_t): P(masked at s) must be 1-α_s."""
    s = MaskSchedule("cosine")
    t, u = torch.tensor(0.8), torch.tensor(0.35)
    p = unmask_probability(s, t, u)
    assert float(p) == pytest.approx(float((s.alpha(u) - s.alpha(t)) / (1 - s.alpha(t))))
    x = torch.randint(0, 4, (200, 500), generator=gen)
    z_t = q_sample(x, t.expand(200), s, 4, gen)
    z_s = posterior_step(z_t, x, p, 4, gen)
    rate = (z_s == 4).double().mean()
    target = 1 - float(s.alpha(u))
    assert abs(rate - target) < 5 * (target * (1 - target) / z_s.numel()) ** 0.5
    assert torch.equal(z_s[z_s != 4], x[z_s != 4])
    assert torch.all((z_t != 4) <= (z_s != 4))  # never re-masks


def test_unmask_probability_endpoints():
    s = MaskSchedule("linear")
    assert float(unmask_probability(s, torch.tensor(0.5), torch.tensor(0.0))) == 1.0
    assert float(unmask_probability(s, torch.tensor(0.5), torch.tensor(0.5))) == 0.0


def test_subs_normalised_and_carries_over(gen):
    logits = torch.randn(3, 7, 6, generator=gen)
    z = torch.randint(0, 7, (3, 7), generator=gen)  # 6 = mask id
    logp = subs_log_probs(logits, z, mask_id=6)
    assert logp.shape == (3, 7, 6)  # no mass can go to the mask id
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3, 7))
    unmasked = z != 6
    assert torch.all(logp.argmax(-1)[unmasked] == z[unmasked])
    assert torch.allclose(logp.exp().max(-1).values[unmasked], torch.ones(int(unmasked.sum())))
    assert torch.allclose(logp[~unmasked], torch.log_softmax(logits, -1)[~unmasked])
