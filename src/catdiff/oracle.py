"""Exact-conditional ("oracle") denoisers from synthetic datasets: the best any factorized masked
sampler can do at k steps (DESIGN.md §4). Knows the dataset contract and the sampler, no networks."""

from __future__ import annotations

import torch

from .samplers import masked
from .schedules import MaskSchedule


def oracle_denoiser(dataset, mask_id: int):
    """(z_t, t) -> (B, L, K) log p_data(x_i | unmasked positions of z_t), exact."""

    def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        observed = z != mask_id
        return dataset.conditionals(torch.where(observed, z, 0), observed).clamp_min(1e-300).log()

    return denoise


@torch.no_grad()
def oracle_samples(dataset, n: int, steps: int, seed: int = 0, schedule: str = "linear") -> torch.Tensor:
    """(n, L) samples of the masked ancestral sampler driven by the exact conditionals."""
    K = dataset.vocab_size
    g = torch.Generator().manual_seed(seed)
    z = torch.full((n, dataset.seq_len), K, dtype=torch.long)
    return masked.sample(oracle_denoiser(dataset, K), z, masked.grid(steps), schedule=MaskSchedule(schedule), mask_id=K,
                         generator=g).state
