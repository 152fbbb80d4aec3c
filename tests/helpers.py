"""Test utilities: a tiny enumerable joint distribution with an exact masked denoiser."""

from __future__ import annotations

import itertools

import torch


class EnumeratedJoint:
    """A random joint distribution over {0..K-1}^L given as an explicit table (K^L entries)."""

    def __init__(self, K: int = 3, L: int = 3, seed: int = 0, peaked: float = 2.0):
        g = torch.Generator().manual_seed(seed)
        self.K, self.L = K, L
        self.seqs = torch.tensor(list(itertools.product(range(K), repeat=L)))  # (N, L)
        logits = peaked * torch.randn(len(self.seqs), generator=g, dtype=torch.float64)
        self.p = torch.softmax(logits, 0)  # (N,)

    def index(self, x: torch.Tensor) -> torch.Tensor:
        w = self.K ** torch.arange(self.L - 1, -1, -1)
        return (x * w).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.p[self.index(x)].log()

    def conditionals(self, z: torch.Tensor, mask_id: int) -> torch.Tensor:
        """(B, L, K) exact p(x_i = k | unmasked positions of z), one-hot at unmasked positions."""
        observed = z != mask_id  # (B, L)
        agree = (self.seqs.unsqueeze(0) == z.unsqueeze(1)) | ~observed.unsqueeze(1)  # (B, N, L)
        w = self.p.unsqueeze(0) * agree.all(-1)  # (B, N)
        onehot = torch.nn.functional.one_hot(self.seqs, self.K).double()  # (N, L, K)
        probs = torch.einsum("bn,nlk->blk", w, onehot)
        return probs / probs.sum(-1, keepdim=True)

    def denoiser(self, mask_id: int):
        """Exact time-free denoiser as a lookup table over all (K+1)^L partially masked states."""
        states = torch.tensor(list(itertools.product(range(self.K + 1), repeat=self.L)))
        states = torch.where(states == self.K, mask_id, states)
        table = self.conditionals(states, mask_id).log()  # ((K+1)^L, L, K)
        w = (self.K + 1) ** torch.arange(self.L - 1, -1, -1)

        def denoise(z, t):
            return table[(torch.where(z == mask_id, self.K, z) * w).sum(-1)]
        return denoise


def folder_state(folder) -> dict:
    """{relative path: sha256} of every file under `folder`: compare before and after to show
    that a refused command lost or changed nothing."""
    import hashlib
    from pathlib import Path

    root = Path(folder)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_line_error(err: str, *needles: str) -> None:
    """stderr is exactly one `catdiff: error: ...` line (no traceback) containing every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("catdiff: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def train_mixture_runs(base, overrides, names=("mdlm", "difformer", "ar")) -> dict:
    """{name: run folder} of tiny runs of configs/<name>/mixture.yaml trained under `base` through
    the CLI (one per sampler family the bad-input tests probe)."""
    from pathlib import Path

    from catdiff.cli import main

    root = Path(__file__).resolve().parents[1]
    out = {}
    for name in names:
        out[name] = Path(base) / name
        assert main(["train", str(root / f"configs/{name}/mixture.yaml"), *overrides,
                     f"train.out_dir={out[name]}"]) == 0
    return out


def load_benchmark(name: str):
    """benchmarks/<name>.py imported as a module (benchmarks/ on sys.path for its `common` import;
    registered in sys.modules, which dataclasses need to resolve their module)."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(f"{name}_bench", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
