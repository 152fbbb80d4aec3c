"""Coupled forward process of LDDM (METHODS.md §5): masked tokens x and a Gaussian latent y,
each noised by its own process given the clean pair (x, y_0). It never calls a network and
delegates every formula to processes.masked and processes.gaussian.

Times: the token channel lives on [t_min, 1) (schedules.sample_times); the latent channel on its
schedule's range [lo, hi]. With shared times t_y = clamp(t_x, lo, hi), so one time draw moves
both channels and the latent is frozen outside its range (a zero-length piece of the path, no
loss). Shapes: B batch, L tokens, P slots, dp slot width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schedules import GaussianSchedule, MaskSchedule, sample_times
from . import gaussian, masked


@dataclass(frozen=True)
class CoupledProcess:
    tokens: MaskSchedule
    latent: GaussianSchedule
    mask_id: int

    def latent_time(self, t: torch.Tensor) -> torch.Tensor:
        """t_y = clamp(t, lo, hi): the latent time seen on the shared path."""
        lo, hi = self.latent.t_range
        return t.clamp(lo, hi)

    def in_range(self, t: torch.Tensor) -> torch.Tensor:
        """1 where the shared path moves the latent (lo ≤ t ≤ hi), else 0; (B,) float."""
        lo, hi = self.latent.t_range
        return ((t >= lo) & (t <= hi)).to(t.dtype)

    def times(self, batch_size: int, generator: torch.Generator | None, device, t_min: float,
              antithetic: bool = True, independent: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_x, t_y), each (B,). Shared: t_y = latent_time(t_x). Independent: a second
        low-discrepancy set, randomly permuted so that the two times of a sequence are unrelated
        while each channel's batch still covers its range evenly (MDLM §3.5.1 for both)."""
        t_x = sample_times(batch_size, generator, device, t_min, antithetic)
        if not independent:
            return t_x, self.latent_time(t_x)
        lo, hi = self.latent.t_range
        u = sample_times(batch_size, generator, device, 0.0, antithetic)
        u = u[torch.randperm(batch_size, generator=generator, device=device)]
        return t_x, lo + (hi - lo) * u

    def mask(self, x: torch.Tensor, t_x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Token channel: z_t (B, L) ~ masked.q_sample."""
        return masked.q_sample(x, t_x, self.tokens, self.mask_id, generator)

    def noise(self, y0: torch.Tensor, t_y: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent channel: (y_t = a(t_y) y_0 + s(t_y) ε, ε), y0 (B, P, dp)."""
        eps = torch.randn(y0.shape, generator=generator, device=y0.device, dtype=y0.dtype)
        a, s = self.latent.coefficients(t_y.to(y0.dtype).view(-1, 1, 1))
        return gaussian.q_sample(y0, a, s, eps), eps

    def q_sample(self, x: torch.Tensor, y0: torch.Tensor, t_x: torch.Tensor, t_y: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_t (B, L), y_t (B, P, dp), ε): each channel from its own marginal, independently given
        (x, y_0); tokens drawn first, then the latent noise."""
        z_t = self.mask(x, t_x, generator)
        return (z_t, *self.noise(y0, t_y, generator))

    def latent_terms(self, y0: torch.Tensor, y_hat: torch.Tensor, t_y: torch.Tensor,
                     scale: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(diffusion term, prior KL), each (B,) nats: scale · ½(-SNR'(t_y)) ‖y_0 - ŷ_0‖² (VDM eq.
        17) and KL(q(y_1|y_0) ‖ N(0, I)) at the range's top. `scale` turns the one-time draw into
        the integral's estimate: `in_range(t)` on a shared path (t ~ U[0, 1)), hi - lo for
        independent t_y ~ U[lo, hi]. Their sum is the latent channel's share of the ELBO."""
        w = self.latent.vlb_weight(t_y.to(y0.dtype)) * scale  # (B,)
        diff = gaussian.diffusion_term(y0.flatten(1), y_hat.flatten(1), w)  # (B,)
        hi = torch.tensor(self.latent.t_range[1], dtype=y0.dtype, device=y0.device)
        a1, s1 = self.latent.coefficients(hi)
        return diff, gaussian.prior_kl(y0.flatten(1), a1, s1)
