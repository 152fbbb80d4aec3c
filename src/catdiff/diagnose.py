"""Collapse diagnostics of a trained embedding-diffusion run: the embedding statistics logged over
training and the denoising cross-entropy curve CE(t), as JSON and a PNG. It knows the run layout
and the embedding method's `ce_curve`, not how the run was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import ConfigError
from .evaluate import load_run

STATS = ("emb_pairwise", "emb_norm", "emb_rank", "emb_decodable")


def history(run_dir: str | Path) -> dict:
    """{stat: [(step, value), ...]} of the embedding statistics in metrics.jsonl."""
    out = {k: [] for k in STATS}
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            for k in STATS:
                if k in rec:
                    out[k].append((rec["step"], rec[k]))
    return out


def diagnose_run(run_dir: str | Path, n_t: int = 21, max_examples: int = 256, seed: int = 0,
                 device: str = "auto", plot: bool = True) -> dict:
    """Writes RUN/diagnostics.json (+ diagnostics.png) and returns the record."""
    run_dir = Path(run_dir)
    cfg, method, dataset = load_run(run_dir, device)
    if not hasattr(method, "ce_curve"):
        raise ConfigError(f"diagnose applies to embedding-diffusion runs; {run_dir} holds method {method.name!r}")
    x = dataset.split("val")[:max_examples].to(method.device)
    ts = torch.linspace(0.0, 1.0, n_t).tolist()
    g = torch.Generator(device=method.device).manual_seed(seed)
    res = {"run": str(run_dir), "method": method.name, "t": ts, "ce": method.ce_curve(x, ts, g),
           "uniform_ce": float(torch.log(torch.tensor(float(dataset.vocab_size)))),
           "final": method.diagnostics(), "history": history(run_dir)}
    (run_dir / "diagnostics.json").write_text(json.dumps(res, indent=1))
    if plot:
        plot_diagnostics([res], run_dir / "diagnostics.png")
    return res


def plot_diagnostics(records: list[dict], path: str | Path, labels: list[str] | None = None) -> None:
    """One figure: the four embedding statistics over training and CE(t), one line per record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    titles = {"emb_pairwise": "mean pairwise distance", "emb_norm": "mean norm", "emb_rank": "effective rank",
              "emb_decodable": "NN decodability"}
    labels = labels or [r["method"] for r in records]
    for r, lab in zip(records, labels, strict=True):
        for ax, k in zip(axes, STATS, strict=False):
            pts = r["history"].get(k, [])
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=lab)
            ax.set_title(titles[k])
            ax.set_xlabel("training step")
        axes[4].plot(r["t"], r["ce"], label=lab)
    axes[0].set_yscale("log")
    axes[4].axhline(records[0]["uniform_ce"], color="k", ls=":", label="uniform")
    axes[4].set_title("denoising CE(t) [nats/token]")
    axes[4].set_xlabel("t")
    axes[4].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
