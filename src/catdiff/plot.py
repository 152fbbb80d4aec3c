"""Training curves of one or more runs in one image (`catdiff plot`): it reads each run folder's
metrics.jsonl (and, for a tokens axis of runs that did not record `tokens`, the batch size and
sequence length in config.yaml / dataset.json), and knows nothing of methods or training.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ConfigError, DataError

X_AXES = ("step", "tokens")


@dataclass(frozen=True)
class Panel:
    title: str
    keys: tuple[str, ...]  # the first key any run records is drawn (validation: bits, else loss)
    ylabel: str
    log: bool = False  # log-scale y when every value is positive and they span a factor > 10
    markers: bool = False


PANELS = (
    Panel("training loss", ("loss",), "loss (per logged batch)", log=True),
    Panel("validation", ("val_bits_per_token", "val_loss"), "", markers=True),
    Panel("learning rate", ("lr",), "learning rate"),
    Panel("gradient norm", ("grad_norm",), "‖gradient‖₂ before clipping", log=True),
    Panel("throughput (average since the process started)", ("tokens_per_s",), "tokens / s (all ranks)"),
)
VALIDATION = {"val_bits_per_token": ("validation bits per token", "bits / token"),
              "val_loss": ("validation loss", "loss")}


@dataclass
class Run:
    folder: Path
    label: str
    rows: list[dict]

    def series(self, key: str, x_of) -> tuple[list[float], list[float]]:
        """(x, y) of the records holding a finite number under `key`, by step."""
        pts = sorted((r["step"], x_of(r), float(r[key])) for r in self.rows
                     if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)
                     and math.isfinite(r[key]))
        return [p[1] for p in pts], [p[2] for p in pts]


def read_metrics(folder: Path) -> list[dict]:
    """The records of folder/metrics.jsonl that have an integer step (torn lines are skipped);
    DataError naming the folder when there are none."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: catdiff plot takes run folders (train.out_dir)")
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{folder} has no metrics.jsonl: not a catdiff run folder, or it has logged nothing yet")
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e})") from None
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
            rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no records yet")
    return rows


def run_labels(folders: list[Path]) -> list[str]:
    """Each folder's name; folders of the same name get as many parent folders as tell them apart
    (runs/a/x, runs/b/x -> a/x, b/x), the same folder given twice a number."""
    paths = [f.resolve() for f in folders]
    depth = [1] * len(paths)

    def label(i):
        return "/".join(paths[i].parts[-depth[i]:]).lstrip("/") or str(paths[i])

    labels = [label(i) for i in range(len(paths))]
    while True:  # lengthen the labels that clash, as long as their paths are longer
        clash = [i for i, lab in enumerate(labels) if depth[i] < len(paths[i].parts)
                 and any(other == lab and paths[j] != paths[i] for j, other in enumerate(labels))]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
        labels = [label(i) for i in range(len(paths))]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def tokens_per_step(run: Run) -> float:
    """Tokens one step consumes (all ranks): from a record's cumulative `tokens`, else
    train.batch_size (config.yaml) × the sequence length (dataset.json, or data.seq_len)."""
    for r in run.rows:
        if isinstance(r.get("tokens"), (int, float)) and r["step"] > 0:
            return r["tokens"] / r["step"]
    batch = seq_len = None
    try:
        cfg = yaml.safe_load((run.folder / "config.yaml").read_text())
        batch = cfg["train"]["batch_size"]
        seq_len = cfg["data"].get("seq_len")
    except (OSError, ValueError, yaml.YAMLError, TypeError, KeyError, AttributeError):
        pass
    try:
        seq_len = json.loads((run.folder / "dataset.json").read_text()).get("seq_len") or seq_len
    except (OSError, ValueError, AttributeError):
        pass
    if not (isinstance(batch, int) and isinstance(seq_len, int)):
        raise DataError(f"{run.folder}: --x tokens needs the tokens seen, which neither its metrics.jsonl nor its "
                        "config.yaml/dataset.json give; plot it with --x step")
    return float(batch * seq_len)


def _colors(n: int) -> list:
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["viridis"](i / (n - 1)) for i in range(n)]


def _short(label: str, width: int = 48) -> str:
    return label if len(label) <= width else label[: width // 2 - 1] + "…" + label[-(width // 2):]


def short_labels(labels: list[str], width: int = 40) -> list[str]:
    """Labels of at most about `width` characters for the legend: the part that tells runs apart is
    kept, what they all share (a long common beginning or end) is shortened first."""
    if all(len(lab) <= width for lab in labels):
        return list(labels)
    if len(labels) == 1:
        return [_short(labels[0], width)]
    n = min(map(len, labels))
    pre = next((i for i in range(n) if len({lab[i] for lab in labels}) > 1), n)
    suf = next((i for i in range(n - pre) if len({lab[-1 - i] for lab in labels}) > 1), n - pre)

    def squeeze(part: str) -> str:
        return part if len(part) <= 13 else part[:6] + "…" + part[-6:]

    return [_short(squeeze(lab[:pre]) + lab[pre:len(lab) - suf] + squeeze(lab[len(lab) - suf:]), width)
            for lab in labels]


def _summary(run: Run) -> str:
    """'120 steps, val 1.389 bits/token': how far the run got, and its last validation bits."""
    text = f"{max(r['step'] for r in run.rows)} steps"
    bits = [r["val_bits_per_token"] for r in run.rows if isinstance(r.get("val_bits_per_token"), (int, float))]
    return text + (f", val {bits[-1]:.3f} bits/token" if bits else "")


def figure(runs: list[Run], x: str = "step"):
    """A matplotlib Figure (Agg canvas, no pyplot state): one panel per PANELS entry, one colour per
    run, the legend in the last cell; a metric no run recorded is an empty panel saying so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter, MaxNLocator

    if x not in X_AXES:
        raise ConfigError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    x_of = {}
    for run in runs:
        if x == "step":
            x_of[run.label] = lambda r: r["step"]
        else:
            per_step = tokens_per_step(run)
            x_of[run.label] = (lambda tps: lambda r: r["tokens"] if isinstance(r.get("tokens"), (int, float))
                               else r["step"] * tps)(per_step)
    # every panel spans the same x range, so that panels line up
    xs_all = [x_of[run.label](r) for run in runs for r in run.rows
              if any(isinstance(r.get(k), (int, float)) for p in PANELS for k in p.keys)]
    span = (max(xs_all) - min(xs_all)) if xs_all else 0
    xlim = (min(xs_all) - 0.02 * span, max(xs_all) + 0.02 * span) if span > 0 else None
    colors = dict(zip([r.label for r in runs], _colors(len(runs)), strict=True))

    fig = Figure(figsize=(15, 8.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    xlabel = "optimizer step" if x == "step" else "tokens seen"
    for ax, panel in zip(axes, PANELS, strict=False):
        key = next((k for k in panel.keys if any(k in r for run in runs for r in run.rows)), panel.keys[0])
        title, ylabel = VALIDATION.get(key, (panel.title, panel.ylabel))
        ax.set_title(title, fontsize=12)
        drawn = []
        for i, run in enumerate(runs):
            xs, ys = run.series(key, x_of[run.label])
            if not xs:
                continue
            drawn += ys
            # earlier runs drawn wider: a curve another run's covers (the same schedule) still shows
            ax.plot(xs, ys, color=colors[run.label], lw=1.4 + (len(runs) - 1 - i) / max(len(runs) - 1, 1),
                    marker="o" if panel.markers else None, ms=4)
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center",
                    fontsize=13, color="0.45")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.set_xlabel(xlabel)
        if xlim is not None:
            ax.set_xlim(*xlim)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if panel.log and min(drawn) > 0 and max(drawn) > 10 * min(drawn):
            ax.set_yscale("log")
            ax.grid(True, which="minor", alpha=0.12)
            ax.set_ylabel(f"{ylabel}, log scale")
        if key == "tokens_per_s":
            ax.yaxis.set_major_formatter(EngFormatter())
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if x == "tokens":
            ax.xaxis.set_major_formatter(EngFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    legend_ax = axes[len(PANELS)] if len(PANELS) < len(axes) else None
    for ax in axes[len(PANELS) + 1:]:
        ax.set_axis_off()
    if legend_ax is not None:
        legend_ax.set_axis_off()
        handles = [Line2D([], [], color=colors[run.label], lw=3) for run in runs]
        names = [f"{label}  ({_summary(run)})" for label, run in zip(short_labels([r.label for r in runs]), runs,
                                                                        strict=True)]
        ncol = 1 if len(runs) <= 12 else 2
        # the legend fits its cell (a third of the width: about 550/size characters a column)
        size = min(12 if len(runs) <= 8 else 10 if len(runs) <= 16 else 8, 560 / ncol / max(map(len, names)))
        legend = legend_ax.legend(handles, names, loc="center", frameon=False, fontsize=max(size, 6), title="runs",
                                  title_fontsize=max(size, 6) + 1, ncol=ncol)
        legend.set_in_layout(False)  # the panels keep equal widths
    fig.suptitle(f"training curves against {'steps' if x == 'step' else 'tokens seen'}", fontsize=14)
    return fig


def plot_runs(folders: list[str | Path], out: str | Path, x: str = "step") -> Path:
    """Draw the curves of the run folders in `folders` (overlaid) into image file `out` (PNG, or
    PDF/SVG by its extension); returns its path. One-line errors: DataError for a folder without
    records, ConfigError for an --x or a file type not known, DataError for an unwritable `out`."""
    if x not in X_AXES:
        raise ConfigError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    if not folders:
        raise ConfigError("catdiff plot needs at least one run folder")
    out = Path(out)
    paths = [Path(f) for f in folders]
    runs = [Run(p, label, read_metrics(p)) for p, label in zip(paths, run_labels(paths), strict=True)]
    fig = figure(runs, x)
    kind = out.suffix.lower().lstrip(".") or "png"
    if kind not in fig.canvas.get_supported_filetypes():
        raise ConfigError(f"--out {out}: cannot write .{kind} images; use .png, .pdf or .svg")
    if out.is_dir():
        raise DataError(f"cannot write the plot to {out}: it is a folder")
    try:
        fig.savefig(out, format=kind)
    except OSError as e:
        raise DataError(f"cannot write the plot to {out} ({e.strerror or e})") from None
    return out


__all__ = ["plot_runs", "figure", "read_metrics", "run_labels"]
