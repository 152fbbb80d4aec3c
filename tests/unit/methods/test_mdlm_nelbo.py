"""The exact identity of MDLM's continuous-time NELBO: with the exact conditionals of a joint
distribution it equals -log p(x) (it averages the chain rule over unmasking orders)."""

import itertools
import math

import pytest
import torch
from helpers import EnumeratedJoint

from catdiff.losses import masked_nelbo
from catdiff.processes.masked import q_sample
from catdiff.schedules import MaskSchedule, sample_times

K, L = 3, 4


def test_nelbo_equals_nll_by_enumeration():
    """Linear schedule: ∫ (1/t) E_S[Σ_{i∈S} -log p(x_i|x_{S^c})] dt with P(S) = t^|S|(1-t)^{L-|S|}
    integrates to Σ_S B(|S|, L-|S|+1) Σ_{i∈S} -log p(x_i | x_{S^c}); it must equal -log p(x)."""
    joint = EnumeratedJoint(K, L, seed=0)
    masks = torch.tensor(list(itertools.product([False, True], repeat=L)))[1:]  # (2^L - 1, L)
    sizes = masks.sum(-1)
    beta = torch.tensor([math.gamma(s) * math.gamma(L - s + 1) / math.gamma(L + 1) for s in sizes.tolist()],
                        dtype=torch.float64)
    for x in joint.seqs[::7]:
        z = torch.where(masks, torch.full_like(masks, K, dtype=torch.long), x.expand(len(masks), L))
        logp = joint.conditionals(z, K).log()  # (S, L, K)
        # masked_nelbo with w(t)=1 at t=1 gives Σ_{masked} -log p; weight by the Beta integrals
        per_mask = masked_nelbo(logp, x.expand(len(masks), L), z, torch.ones(len(masks)),
                                MaskSchedule("linear"), K).sum(-1)
        nelbo = (beta * per_mask).sum()
        assert float(nelbo) == pytest.approx(-float(joint.log_prob(x)), rel=1e-9)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_monte_carlo_nelbo_is_unbiased_for_nll(schedule):
    """The training estimator (low-discrepancy t, random masks, schedule weight) averages to -log p(x)
    for exact conditionals, whatever the schedule (MDLM: the bound is schedule-invariant)."""
    joint = EnumeratedJoint(K, L, seed=4)
    s = MaskSchedule(schedule)
    g = torch.Generator().manual_seed(0)
    x = joint.seqs[joint.p.argmax()].expand(8192, L)
    vals = []
    for _ in range(6):
        t = sample_times(len(x), g, t_min=1e-5).double()
        z = q_sample(x, t, s, K, g)
        vals.append(masked_nelbo(joint.conditionals(z, K).log(), x, z, t, s, K).sum(-1))
    v = torch.cat(vals)
    se = float(v.std()) / math.sqrt(len(v))
    assert abs(float(v.mean()) + float(joint.log_prob(x[0]))) < 4 * se + 1e-3
