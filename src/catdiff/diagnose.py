"""Diagnostics of a trained run as JSON and a PNG. Embedding diffusion: the embedding statistics
logged over training and the denoising cross-entropy curve CE(t) (collapse). EDM / DisCo-Diff: ODE
curvature along sampling trajectories, the Jacobian norm and the loss as functions of σ. It knows
the run layout and the methods' public hooks, not how the run was trained.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from . import export
from .build import load_run
from .errors import ConfigError

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
    cfg, method, dataset = load_run(run_dir, device)
    run_dir = export.output_dir(run_dir)  # results next to the run (a hub model's: ./owner--name)
    if hasattr(method, "ode_denoiser"):
        return diagnose_ode(run_dir, method, dataset, max_examples, seed, plot)
    if not hasattr(method, "ce_curve"):
        raise ConfigError(f"diagnose applies to embedding-diffusion and EDM runs; {run_dir} holds method "
                          f"{method.name!r}")
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


def ode_record(method, dataset, n: int = 512, steps: int = 50, seed: int = 0) -> dict:
    """Curvature κ(σ) (mean and median over n trajectories), E‖∇G‖²(σ) and loss(σ) of an EDM-style
    method (latents from its prior), all computed on a float64 copy of the method."""
    from . import ode_diagnostics as od

    method = copy.deepcopy(method).double()
    y = dataset.split("test")[:n].to(method.device, torch.float64)
    n = len(y)  # the Jacobian and loss run on held-out points under the same latents
    g = torch.Generator(device=method.device).manual_seed(seed)
    cond, _ = method.latent_condition(n, method.sample_options(), g, None)
    D = method.ode_denoiser(cond)
    sig = method.sigmas(steps, "euler").double()  # `steps` σ steps (an Euler budget)
    x = float(sig[0]) * torch.randn((n, method.seq_len), generator=g, device=method.device, dtype=torch.float64)
    kappa = od.curvature_along_trajectories(D, x, sig)
    grid = [float(v) for v in sig[:-1:5]]
    jac = [(s, od.jacobian_norm(D, y + s * torch.randn(y.shape, generator=g, device=y.device), s)) for s in grid]

    def loss(y_, s_):
        return method.denoising_loss(y_, g, sigma=s_, train=False)

    return {"method": method.name, "curvature": [(s, k) for s, k, _ in kappa],
            "curvature_median": [(s, k) for s, _, k in kappa], "jacobian": jac, "loss": od.loss_by_sigma(loss, y, grid)}


def diagnose_ode(run_dir: Path, method, dataset, n: int = 512, seed: int = 0, plot: bool = True) -> dict:
    res = {"run": str(run_dir), **ode_record(method, dataset, n, seed=seed)}
    (run_dir / "diagnostics.json").write_text(json.dumps(res, indent=1))
    if plot:
        plot_ode([res], run_dir / "diagnostics.png")
    return res


def plot_ode(records: list[dict], path: str | Path, labels: list[str] | None = None) -> None:
    """Curvature, Jacobian norm and loss against σ (log axes), one line per record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    labels = labels or [r["method"] for r in records]
    for r, lab in zip(records, labels, strict=True):
        for ax, k, title in zip(axes, ("curvature", "jacobian", "loss"),
                                ("ODE curvature κ(σ)", "E‖∇ₓG‖²_F", "weighted loss(σ)"), strict=True):
            line, = ax.plot([p[0] for p in r[k]], [p[1] for p in r[k]], "o-", ms=3, label=lab)
            if k == "curvature" and r.get("curvature_median"):
                ax.plot([p[0] for p in r["curvature_median"]], [p[1] for p in r["curvature_median"]], "--",
                        color=line.get_color(), label=f"{lab} (median)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("σ (= t)")
            ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
