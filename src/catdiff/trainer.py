"""One readable training loop for every method: AdamW, warm-up + cosine, clipping, EMA, AMP on
GPU, DDP under torchrun, atomic verified checkpoints (the last few and the best), exact resume,
divergence, Ctrl-C and full-disk handling, one process per run folder.

It knows the Method contract (forward → LossOutput) and the dataset contract (train_batch), not
what any method computes. Resume is exact because batches are a pure function of (seed, step,
rank), the learning rate is a pure function of step, and every RNG state is checkpointed.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import inspect
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import string
import sys
import textwrap
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from . import checkpoint as ckpt_io
from . import registry, rundir
from .build import build_dataset, build_method, method_options, rebuild_dataset
from .config import Config, build_config, from_mapping, resolve_data_paths, save_config, validate_method_section
from .errors import CatdiffError, CheckpointError, ConfigError, MissingExtra, TrainingError
from .runtime import amp_dtype, compile_enabled, resolve_device
from .structs import Probe

# keys that may differ between a run and its resumption (a run directory may be moved or copied:
# out_dir, and init_from, used only when a run starts, do not bind it); a method's stage step
# counts (Stage.steps_key) may change too, like train.max_steps
RESUMABLE_CHANGES = {"train.max_steps", "train.ckpt_every", "train.log_every", "train.eval_every",
                     "train.progress", "train.max_minutes", "train.budget_clock", "train.device", "train.tensorboard",
                     "train.wandb",
                     "train.eval_batches", "sample", "eval", "train.out_dir", "train.init_from",
                     "train.keep_checkpoints", "train.divergence_factor", "train.divergence_window"}


def lr_at(step: int, cfg, budget_s: float | None = None) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at max_steps, or
    (lr_schedule = budget) when `budget_s` seconds of the max_minutes budget are spent."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "budget" and budget_s is not None and cfg.max_minutes > 0:
        progress = min(1.0, budget_s / (60.0 * cfg.max_minutes))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(module: torch.nn.Module, weight_decay: float):
    """Decay matrices only (not norms, biases or gains)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def flat_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += flat_diff(va, vb, key + ".")
        elif va != vb and not (isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple))
                               and list(va) == list(vb)):
            keys.append(key)
    return keys


def config_changes(saved: dict, cfg: Config) -> list[str]:
    """The keys in which `cfg` differs from a run's saved config, beyond those a resumption may change."""
    free = RESUMABLE_CHANGES | {f"method.{s.steps_key}" for s in method_stages(cfg) if s.steps_key}
    return [k for k in flat_diff(saved, cfg.to_dict())
            if k not in free and k.split(".")[0] not in free and ".".join(k.split(".")[:2]) not in free]


def config_defaults(cfg: Config) -> dict:
    """What an empty config of `cfg`'s method and dataset resolves to, as a mapping: the dataclass
    defaults, the method's options and sampler options, the dataset constructor's defaults (a key
    the dataset requires has none). train.out_dir is `cfg`'s (it is shown on its own)."""
    out = Config().to_dict()
    out["method"] = validate_method_section({"name": cfg.method["name"]})
    out["sample"] = dataclasses.asdict(from_mapping(registry.method_class(cfg.method["name"]).SampleOptions, {},
                                                    "sample"))
    params = inspect.signature(registry.dataset_class(cfg.data["name"]).__init__).parameters
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    out["data"] = resolve_data_paths({"name": cfg.data["name"], **{
        k: p.default for k, p in params.items()
        if k != "self" and p.kind in kinds and p.default is not inspect.Parameter.empty}})
    out["train"]["out_dir"] = cfg.train.out_dir
    return out


def _shown(value) -> str:
    """A config value as one would type it in an override (YAML)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def start_lines(cfg: Config, method: str, resumed_from: int | None) -> list[str]:
    """What training says when it starts: the run folder, then the config as its difference from
    the defaults (`config_defaults`), wrapped in a few lines."""
    where = f" (resumed at step {resumed_from})" if resumed_from is not None else ""
    head = f"catdiff: training {method} on {cfg.data['name']} into {cfg.train.out_dir}{where}"
    resolved = cfg.to_dict()
    keys = [k for k in flat_diff(config_defaults(cfg), resolved) if k not in ("method.name", "data.name")]

    def value(key):
        node = resolved
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return _shown(node)

    diff = ", ".join(f"{k}={value(k)}" for k in keys) or "none"
    body = textwrap.wrap(f"catdiff: config (differs from defaults): {diff}", width=110, subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False)
    return [head, *body]


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def log_line(record: dict, max_steps: int) -> str:
    """One plain line for a training or validation record of metrics.jsonl (logs that are not a terminal)."""
    parts = [f"step {record['step']}/{max_steps}"]
    if "loss" in record:
        loss = record["loss"]
        parts.append(f"loss {loss:.4f}" if abs(loss) < 1e4 else f"loss {loss:.4g}")
        if "bits_per_token" in record:
            parts.append(f"bits/token {record['bits_per_token']:.3f}")
        parts += [f"lr {record['lr']:.1e}", f"grad {record['grad_norm']:.3g}",
                  f"{record['tokens_per_s']:.1e} tok/s", _duration(record["elapsed_s"])]
    else:  # validation: val_bits_per_token -> "val bits/token"
        parts += [f"{k.replace('_per_token', '/token').replace('_', ' ')} {v:.4f}" for k, v in record.items()
                  if k != "step" and isinstance(v, (int, float))]
    return "  ".join(parts)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is never torn."""

    def __init__(self):
        self.hit = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.hit:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)


def _distributed(tc) -> tuple[int, int, torch.device]:
    """(world size, rank, device): under torchrun the process group is started once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(tc.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


def _write_failure(e: OSError) -> str:
    return "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))


def truncate_metrics(path: Path, upto: int | None) -> None:
    """Keep the rows of metrics.jsonl logged at steps <= `upto` (none if None): on resume, the rows
    logged after the checkpoint are dropped, since they are logged again. Torn lines go too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if upto is not None and isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= upto:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


class Trainer:
    """Trains one run into cfg.train.out_dir. It does not lock the folder: `train` does."""

    def __init__(self, cfg: Config, resume: bool = False):
        self.cfg = cfg
        tc = cfg.train
        self.world, self.rank, self.device = _distributed(tc)
        if tc.batch_size % self.world:
            raise ConfigError(f"train.batch_size ({tc.batch_size}) must be divisible by the world size ({self.world})")
        self.run_dir = Path(tc.out_dir)
        self.is_main = self.rank == 0

        existing = ckpt_io.candidates(self.run_dir)
        if existing and not resume:
            raise CheckpointError(f"{self.run_dir} already holds a checkpoint: pass --resume to continue it, "
                                  "or choose another train.out_dir")
        if resume and not existing:
            raise CheckpointError(f"--resume given but {self.run_dir} has no checkpoint")
        self.method, self.meta, state = None, None, None
        if resume:  # the newest checkpoint that verifies; the run's data and model come from its meta
            _, state, _ = ckpt_io.load_newest(self.run_dir, self._read_checkpoint)
        else:
            self._build(build_dataset(cfg.data))
            if tc.init_from:
                self._init_from(Path(tc.init_from))
        if compile_enabled(cfg.model.compile, self.device):
            from .models.transformer import maybe_compile
            self.method.net = maybe_compile(self.method.net, True)
        try:  # fused AdamW: one kernel per step on CPU and GPU (torch >= 2.4)
            self.opt = torch.optim.AdamW(param_groups(self.method, tc.weight_decay), lr=tc.lr, betas=tc.betas,
                                         fused=True)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.AdamW(param_groups(self.method, tc.weight_decay), lr=tc.lr, betas=tc.betas)
        self.ema = ({k: v.detach().clone().float() for k, v in self.method.state_dict().items()}
                    if tc.ema > 0 else None)
        self.gen = torch.Generator(device=self.device).manual_seed(tc.seed * 1009 + self.rank)
        self.step = 0
        self.tokens_seen = 0  # over every rank, since the run started (resumes included)
        self.budget_used = 0.0  # seconds of the max_minutes budget spent before this session
        self.budget_s = lambda: self.budget_used  # seconds spent so far (fit() makes it live)
        self.resumed_from: int | None = None
        self.tb = self.wandb = None
        self.wandb_from = 0  # the first step a resumed W&B run takes
        self.plain = False  # one plain line per record on stderr (progress on, stderr not a terminal)
        self.recent = deque(maxlen=tc.divergence_window)  # the last losses (mean over ranks), for divergence
        self.first_loss: float | None = None  # the run's first loss (the untrained model's level), for divergence
        self.best_val, self.last_val = None, (None, None)  # lowest validation bound; (step, record) of the last
        if state is not None:
            self._restore(state)
        self.model = self.method
        if self.world > 1:
            ddp_kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = torch.nn.parallel.DistributedDataParallel(self.method, **ddp_kwargs)
        # autocast on CPU and GPU (runtime.amp_dtype: `auto` probes bf16 once); fp32 master weights
        # and optimizer state; fp16 needs loss scaling
        self.amp_dtype = amp_dtype(tc.amp, self.device)
        self.autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                         else nullcontext())
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None

    # ---- state ------------------------------------------------------------------------
    def _build(self, dataset) -> None:
        self.dataset = dataset
        torch.manual_seed(self.cfg.train.seed)  # identical initial weights on every rank
        self.method = build_method(self.cfg, dataset).to(self.device)

    def _check_compatible(self, saved: dict) -> None:
        diff = config_changes(saved, self.cfg)
        if diff:
            raise CheckpointError(f"config key '{diff[0]}' differs from the checkpoint in {self.run_dir}; "
                                  "only train.max_steps and logging keys may change on --resume")

    def _read_checkpoint(self, ckpt: Path, meta: dict) -> dict:
        """The states of a checkpoint whose files verified, their keys and shapes checked against
        the model (built from the first such checkpoint); Corrupt sends `load_newest` further back."""
        if self.method is None:
            self._check_compatible(meta["config"])
            self._build(rebuild_dataset(meta["dataset"]))
            self.meta = meta
        expected = self.method.state_dict()
        if self.cfg.train.ema > 0 and ckpt_io.EMA not in meta["files"]:
            raise ckpt_io.Corrupt(f"{ckpt_io.EMA} is missing (the run keeps EMA weights)")
        ema = ckpt_io.read_weights(ckpt / ckpt_io.EMA, expected, self.device) if self.cfg.train.ema > 0 else None
        return {"model": ckpt_io.read_weights(ckpt / ckpt_io.MODEL, expected, self.device), "ema": ema,
                "trainer": ckpt_io.load_trainer_state(ckpt), "step": meta["step"]}

    def _init_from(self, run_dir: Path) -> None:
        """Start from another run's weights (its EMA weights when saved): same method and shapes."""
        if not ckpt_io.candidates(run_dir):
            raise CheckpointError(f"train.init_from: {run_dir} has no checkpoint")

        def read(ckpt: Path, meta: dict) -> dict:
            if meta["method"] != self.method.name:
                raise CheckpointError(f"train.init_from: {run_dir} holds a {meta['method']!r} run, "
                                      f"this run is {self.method.name!r}")
            name = ckpt_io.EMA if ckpt_io.EMA in meta["files"] else ckpt_io.MODEL
            return ckpt_io.read_weights(ckpt / name, self.method.state_dict(), self.device)

        self.method.load_state_dict(ckpt_io.load_newest(run_dir, read)[1])

    def _restore(self, state: dict) -> None:
        self.method.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema = state["ema"]
        st = state["trainer"]
        self.opt.load_state_dict(st["optimizer"])
        self.step = self.resumed_from = int(st["step"])
        # checkpoints written before `tokens_seen` was kept: every step is a full batch
        self.tokens_seen = int(st.get("tokens_seen", self.step * self.cfg.train.batch_size * self.dataset.seq_len))
        self.budget_used = float(st.get("budget_s", 0.0))  # max_minutes counts the whole run, resumes included
        self.recent.extend(st.get("recent_losses", []))
        self.first_loss = st.get("first_loss")  # None in checkpoints written before it was kept
        torch.set_rng_state(st["rng_cpu"])
        gens = st["rng_gen"]
        if self.rank < len(gens):
            self.gen.set_state(gens[self.rank].to(self.gen.get_state().device))
        if self.device.type == "cuda" and "rng_cuda" in st:
            torch.cuda.set_rng_state(st["rng_cuda"])
        best = ckpt_io.best_dir(self.run_dir)
        if best is not None:
            try:
                self.best_val = next(iter(ckpt_io.read_meta(best).get("val", {}).values()), None)
            except ckpt_io.Corrupt:  # a new best replaces it
                pass

    def save(self, name: str | None = None, val: dict | None = None) -> None:
        """Checkpoint the current state: checkpoints/step-<step> (the last train.keep_checkpoints
        kept), or checkpoints/<name> (best, with its validation record)."""
        gens = [self.gen.get_state().cpu()]
        if self.world > 1:  # every rank's noise generator state, gathered on rank 0
            gathered = [None] * self.world
            dist.all_gather_object(gathered, gens[0])
            gens = gathered
        if not self.is_main:
            return
        state = {"optimizer": self.opt.state_dict(), "step": self.step, "rng_cpu": torch.get_rng_state(),
                 "rng_gen": gens, "recent_losses": list(self.recent), "first_loss": self.first_loss,
                 "tokens_seen": self.tokens_seen, "budget_s": self.budget_s()}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        meta = {"config": self.cfg.to_dict(), "dataset": self.dataset.state(), "method": self.method.name,
                "vocab_size": self.dataset.vocab_size, "seq_len": self.dataset.seq_len}
        if val is not None:
            meta["val"] = val
        with self._writing(f"checkpoint {name or f'step {self.step}'}"):
            ckpt_io.save_checkpoint(self.run_dir, step=self.step, method=self.method, ema=self.ema,
                                    trainer_state=state, meta=meta, name=name,
                                    keep=None if name else self.cfg.train.keep_checkpoints)

    def _kept(self, before: int | None = None) -> str:
        """Which checkpoint the run keeps (the newest, or the newest before step `before`)."""
        steps = [d for d in ckpt_io.step_dirs(self.run_dir) if before is None or ckpt_io.step_of(d) < before]
        if not steps:
            return "no checkpoint had been saved " + ("yet" if before is None else "before it")
        which = "the last checkpoint" + ("" if before is None else " before it")
        return f"{which}, {ckpt_io.label(steps[0])}, is kept in {steps[0]}"

    @contextmanager
    def _writing(self, what: str):
        """An OSError while writing run files (a full disk, a folder made read-only) stops the run in one line."""
        try:
            yield
        except OSError as e:
            raise TrainingError(f"cannot write {what} in {self.run_dir} ({_write_failure(e)}); "
                                f"stopped at step {self.step}, {self._kept()}") from None

    # ---- loop -------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self.is_main:
            with self._writing("metrics.jsonl"), open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.tb is not None:
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)):
                        self.tb.add_scalar(k, v, record["step"])
            # a resumed W&B run holds the steps logged before the checkpoint's and takes no earlier ones
            if self.wandb is not None and record["step"] >= self.wandb_from:
                self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def _say(self, record: dict, note: str = "") -> None:
        """The plain log line of a record (see `log_line`), when the log is not a terminal."""
        if self.plain:
            print(log_line(record, self.cfg.train.max_steps) + note, file=sys.stderr, flush=True)

    def _probe(self, n: int = 256) -> Probe | None:
        """The held-out batch of the method's diagnostics (first n validation rows), with each row's
        true latent class where the dataset has a single one (`mixture`: its component)."""
        if not (self.method.uses_probe and self.is_main):
            return None
        x = self.dataset.head("val", n)
        return Probe(x.to(self.device), self.dataset.latent_labels(x))

    def _start_wandb(self):
        """wandb.init for this run (rank 0): project train.wandb, named after the run folder, files in
        RUN/wandb/. The W&B run id is kept in RUN/wandb_id.txt, so that --resume continues that run."""
        wandb = wandb_module()
        id_file = self.run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if self.resumed_from is not None and id_file.is_file() else ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run_id):  # a new run (or a damaged file): a new id
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            with self._writing("wandb_id.txt"):
                id_file.write_text(run_id + "\n")
        name = self.run_dir.resolve().name
        if re.fullmatch(r"stage\d+", name):  # an earlier stage of a multi-stage run: RUN-stage1
            name = f"{self.run_dir.resolve().parent.name}-{name}"
        try:
            run = wandb.init(project=self.cfg.train.wandb, name=name, dir=str(self.run_dir), id=run_id,
                             resume="allow", config=json.loads(json.dumps(self.cfg.to_dict())))
        except Exception as e:  # wandb raises its own types (no API key, no network, ...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise TrainingError(f"train.wandb: Weights & Biases did not start ({first}); "
                                "WANDB_MODE=offline logs without network, `wandb sync` uploads later") from None
        self.wandb_from = int(getattr(run, "starting_step", 0) or 0)
        return run

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        # warm-up of the decay (as in timm/EMA libraries): early averages do not drag the
        # random initialisation along, so short runs are evaluated on trained weights
        d = min(self.cfg.train.ema, (1 + self.step) / (10 + self.step))
        for k, v in self.method.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].lerp_(v.float(), 1.0 - d)
            else:
                self.ema[k].copy_(v)

    @torch.no_grad()
    def validate(self) -> dict:
        """Held-out NELBO on a few validation batches (bits per token), fixed noise seed."""
        self.method.eval()
        bs = self.cfg.train.batch_size
        val = self.dataset.head("val", self.cfg.train.eval_batches * bs)  # a large corpus is read no further
        g = torch.Generator(device=self.device).manual_seed(12345)
        tot, n = 0.0, 0
        score = self.method.nelbo if self.method.has_likelihood else self.method.validation_loss
        for i in range(min(self.cfg.train.eval_batches, math.ceil(len(val) / bs))):
            x = self.dataset.batch(val[i * bs:(i + 1) * bs]).to(self.device)
            with self.autocast:
                tot += float(score(x, g).sum())
            n += len(x)
        self.method.train()
        if not self.method.has_likelihood:
            return {"val_loss": tot / max(n, 1)}
        return {"val_bits_per_token": tot / max(n, 1) / self.dataset.seq_len / math.log(2)}

    def _rank0(self, value: float) -> float:
        """Rank 0's value on every rank, so that every rank takes the same branch."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def _validate_and_log(self) -> dict:
        """Validate (once per step), log, and checkpoint as `best` when the bound is the lowest so far."""
        if self.last_val[0] == self.step:
            return self.last_val[1]
        val = self.validate()
        self.last_val = (self.step, val)
        self._log({"step": self.step, **val})
        bound = self._rank0(next(iter(val.values())))
        best = math.isfinite(bound) and (self.best_val is None or bound < self.best_val)
        self._say({"step": self.step, **val}, "  (best)" if best else "")
        if best:
            self.best_val = bound
            self.save(name=ckpt_io.BEST, val=val)
        return val

    def _divergence(self, loss: float) -> str | None:
        """Why `loss` (this step's, mean over ranks) means divergence, or None. A loss far above the
        running median but not above the run's first loss is not one: a model that has learned a
        task to a near-zero loss (the copy task: median 8e-4) meets an occasional hard batch (0.13),
        while a diverging run leaves the untrained model's level behind within a few steps."""
        if not math.isfinite(loss):
            return "non-finite loss"
        factor = self.cfg.train.divergence_factor
        median = statistics.median(self.recent) if self.recent else 0.0
        above_first = self.first_loss is None or loss > self.first_loss
        if factor > 0 and median > 0 and loss > factor * median and above_first:  # a median <= 0 is not compared
            first = "" if self.first_loss is None else f" and the first loss {self.first_loss:.4g}"
            return f"loss {loss:.4g} above {factor:g} × the running median {median:.4g}{first}"
        return None

    def _diverged(self, why: str):
        """Stop: the weights of this step diverged, so a checkpoint of this step (written at the end
        of the previous one) goes; the newest one before it is kept and named."""
        if self.is_main:
            for d in ckpt_io.step_dirs(self.run_dir):
                if ckpt_io.step_of(d) >= self.step:
                    shutil.rmtree(d)
        raise TrainingError(f"{why} at step {self.step}; stopped, {self._kept(before=self.step)}")

    def _mean_over_ranks(self, loss: torch.Tensor) -> float:
        value = loss.detach().float().reshape(1)
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)  # sum; a non-finite loss on any rank makes it non-finite
            value /= self.world
        return float(value.item())

    def fit(self, until_step: int | None = None) -> dict:
        """Train to train.max_steps; `until_step` pauses earlier (checkpointed, status "paused")
        exactly as an interruption would, so the run can be resumed.

        With train.progress (rank 0) it names the run folder and the config's changes from the
        defaults, then shows a progress bar on a terminal, or else one plain line per logged record."""
        self.tb = self.wandb = None
        ok = False
        try:
            summary = self._fit(until_step)
            ok = True
            return summary
        finally:
            if self.wandb is not None:  # also on an error or a second Ctrl-C
                run, self.wandb = self.wandb, None
                try:
                    run.finish(exit_code=0 if ok else 1)
                except Exception as e:  # the run's own outcome (or error) matters more than W&B's
                    ckpt_io.warn(f"Weights & Biases did not finish the run cleanly ({type(e).__name__}: {e})")

    def _fit(self, until_step: int | None) -> dict:
        tc = self.cfg.train
        with self._writing("the run's files"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.is_main:
                save_config(self.cfg, self.run_dir / "config.yaml")
                (self.run_dir / "dataset.json").write_text(json.dumps(self.dataset.state()))
                truncate_metrics(self.run_dir / "metrics.jsonl", self.resumed_from)
        progress = tc.progress and self.is_main
        self.plain = progress and not sys.stderr.isatty()
        if progress:
            print("\n".join(start_lines(self.cfg, self.method.name, self.resumed_from)), file=sys.stderr, flush=True)
        if tc.tensorboard and self.is_main:
            self.tb = summary_writer()(str(self.run_dir / "tb"))
        if tc.wandb and self.is_main:
            self.wandb = self._start_wandb()
        local_bs = tc.batch_size // self.world
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not progress or self.plain,
                   desc=f"train {self.method.name}", dynamic_ncols=True, mininterval=1.0)
        t0, tokens, last_ckpt_step = time.time(), 0, self.step
        clock = time.process_time if tc.budget_clock == "cpu" else time.time
        budget_t0 = clock() - self.budget_used  # the budget spent before a resume counts
        self.budget_s = lambda: clock() - budget_t0
        status = "done"
        probe = self._probe()
        if self.step == 0 and self.is_main:
            init = self.method.diagnostics(probe)  # e.g. the embedding spread before any update
            if init:
                self._log({"step": 0, **init})
        self.method.train()
        try:
            with _Interrupt() as interrupt:
                while self.step < tc.max_steps:
                    batch = self.dataset.batch(self.dataset.train_batch(self.step, local_bs, self.rank, self.world))
                    batch = batch.to(self.device)
                    lr = lr_at(self.step, tc, self.budget_s())
                    for group in self.opt.param_groups:
                        group["lr"] = lr
                    with self.autocast:
                        out = self.model(batch, self.gen)
                    loss = out.loss
                    loss_value = self._mean_over_ranks(loss)  # the same on every rank: one decision
                    why = self._divergence(loss_value)
                    if why:
                        self._diverged(why)
                    self.opt.zero_grad(set_to_none=True)
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                        self.scaler.unscale_(self.opt)
                    else:
                        loss.backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), tc.grad_clip or float("inf"))
                    # DDP averaged the gradients: the norm is the same on every rank. With fp16 loss
                    # scaling a non-finite norm only makes the scaler skip the step.
                    if self.scaler is None and not math.isfinite(float(gnorm)):
                        self._diverged("non-finite gradient norm")
                    if self.scaler is not None:
                        self.scaler.step(self.opt)
                        self.scaler.update()
                    else:
                        self.opt.step()
                    self._update_ema()
                    self.recent.append(loss_value)
                    if self.step == 0:  # a resume from a checkpoint without it keeps None: the ratio alone
                        self.first_loss = loss_value
                    self.step += 1
                    tokens += batch.tokens.numel() * self.world
                    self.tokens_seen += batch.tokens.numel() * self.world
                    bar.update(1)
                    if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                        elapsed = time.time() - t0
                        rec = {"step": self.step, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(gnorm),
                               "tokens": self.tokens_seen, "tokens_per_s": tokens / max(elapsed, 1e-9),
                               "elapsed_s": elapsed, "budget_s": clock() - budget_t0}
                        if out.nll is not None:  # methods whose training loss is not a bound leave it None
                            rec["bits_per_token"] = float(out.nll.mean()) / self.dataset.seq_len / math.log(2)
                        rec.update({k: float(v) for k, v in out.metrics.items()})
                        rec.update(self.method.diagnostics(probe))
                        self._log(rec)
                        self._say(rec)
                        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                    if tc.eval_every and self.step % tc.eval_every == 0:
                        self._validate_and_log()
                    stop_time = tc.max_minutes > 0 and (clock() - budget_t0) > 60 * tc.max_minutes
                    paused = until_step is not None and self.step >= until_step
                    flag = torch.tensor(float(interrupt.hit or stop_time or paused))
                    if self.world > 1:
                        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    if self.step % tc.ckpt_every == 0 or flag.item() > 0:
                        self.save()
                        last_ckpt_step = self.step
                    if flag.item() > 0:
                        status = "interrupted" if interrupt.hit else ("time limit" if stop_time else "paused")
                        break
            bar.close()
            if status == "done" and last_ckpt_step != self.step:
                self.save()
            summary = {"status": status, "step": self.step, "elapsed_s": time.time() - t0,
                       "budget_s": clock() - budget_t0, "tokens_per_s": tokens / max(time.time() - t0, 1e-9)}
            if status not in ("interrupted", "paused"):
                summary.update(self._validate_and_log())
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.close()
        return summary


def summary_writer():
    """TensorBoard's SummaryWriter class; MissingExtra naming the extra when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingExtra("train.tensorboard=true needs TensorBoard: pip install 'catdiff[tb]'") from None
    return SummaryWriter


def wandb_module():
    """The wandb package; MissingExtra naming the extra when Weights & Biases is not installed."""
    try:
        import wandb
    except ImportError:
        raise MissingExtra("train.wandb needs Weights & Biases: pip install 'catdiff[wandb]'") from None
    return wandb


def train(cfg: Config | dict, resume: bool = False, force: bool = False) -> dict:
    """Train `cfg` (a Config or a raw mapping) and return a summary; see `Trainer`. A method that
    declares several stages (`Method.stages`) with `method.stage = 0` runs them all: `train_stages`.

    The run folder (train.out_dir) is locked for the whole run (rundir.RunLock; rank 0 holds it
    under torchrun) and checked before anything is written in it: a checkpoint there needs `resume`
    (continue it) or `force`; anything else but a run of this config that never checkpointed (it
    starts over) needs `force`, which moves catdiff's files of the earlier run into replaced-<time>/
    and leaves every other file where it is."""
    if isinstance(cfg, dict):
        cfg = build_config(cfg)
    if resume and force:
        raise ConfigError("--resume continues the run in train.out_dir and --force starts a new one there: "
                          "give one of them")
    if cfg.train.tensorboard:
        summary_writer()  # fails before the run folder is created
    if cfg.train.wandb:
        wandb_module()
    runs = stage_configs(cfg)
    world, rank, _ = _distributed(cfg.train)
    lock = rundir.RunLock(cfg.train.out_dir)

    def hold_and_check():
        lock.acquire()
        _claim(runs, resume, force)

    try:
        _on_rank0(hold_and_check, world, rank)
        summary = Trainer(cfg, resume=resume).fit() if len(runs) == 1 else train_stages(runs, resume)
        if world > 1:  # no rank tears down its gloo connections while another may still read from them:
            dist.barrier()  # CI once saw rank 1 of a finished run die by SIGABRT (the cause is a guess)
        return summary
    finally:
        lock.release()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _on_rank0(fn, world: int, rank: int) -> None:
    """Run `fn` on rank 0 alone; its CatdiffError is raised on every rank, so all of them stop."""
    error = None
    if rank == 0:
        try:
            fn()
        except CatdiffError as e:
            error = e
    if world > 1:
        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            error = TrainingError(box[0])
    if error is not None:
        raise error


def _claim(runs: list[Config], resume: bool, force: bool) -> None:
    """Check the run folder before anything is written in it (the lock is held); see `train`."""
    out = Path(runs[-1].train.out_dir)
    folders = [Path(sc.train.out_dir) for sc in runs]
    saved = [f for f in folders if ckpt_io.candidates(f)]
    own, other = rundir.contents(out)
    if resume:
        if not saved:
            raise CheckpointError(f"--resume given but {out} has no checkpoint")
        return
    if force:
        if own:
            ckpt_io.warn(f"--force: moved the earlier run's files ({', '.join(own)}) to {rundir.set_aside(out, own)}")
        return
    if saved:
        raise CheckpointError(f"{saved[0]} already holds a checkpoint: pass --resume to continue it, --force to start "
                              f"a new run there (the earlier run's files go to {out}/replaced-<time>/), "
                              "or choose another train.out_dir")
    advice = ("choose another train.out_dir, or pass --force to start the run there (catdiff's files of an "
              "earlier run are moved to replaced-<time>/, no other file is touched)")
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise ConfigError(f"train.out_dir {out} is not empty ({shown}) and is not a catdiff run of this config: "
                          f"{advice}")
    for folder, sc in zip(folders, runs, strict=True):
        why = _other_run(folder, sc, folders)
        if why:
            raise ConfigError(f"train.out_dir {out} holds another catdiff run ({why}): {advice}")


def _other_run(folder: Path, cfg: Config, folders: list[Path]) -> str | None:
    """Why the catdiff files in `folder` (a run without checkpoint) are not this run's, or None."""
    if not [n for n in rundir.contents(folder)[0] if folder / n not in folders]:
        return None
    path = folder / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return f"{folder} has catdiff files but no config.yaml"
    except (OSError, ValueError, yaml.YAMLError):
        return f"{path} is unreadable"
    if not isinstance(saved, dict):
        return f"{path} is not a catdiff config"
    diff = config_changes(saved, cfg)
    return f"config key '{diff[0]}' differs in {path}" if diff else None


def method_stages(cfg: Config):
    """The training stages the configured method declares (Method.stages)."""
    cls, options = method_options(cfg)
    return cls.stages(options)


def stage_configs(cfg: Config) -> list[Config]:
    """The config of each stage to train: just `cfg`, unless the method declares several stages
    and method.stage = 0. Then stage k (method.stage = k) trains into OUT/stage<k>, the last one
    into OUT, each initialised from the previous one and trained for its Stage.steps_key option
    (or train.max_steps)."""
    stages = method_stages(cfg)
    if len(stages) <= 1 or cfg.method.get("stage", 0) != 0:
        return [cfg]
    out, configs = Path(cfg.train.out_dir), []
    for k, stage in enumerate(stages, 1):
        sc = copy.deepcopy(cfg)
        sc.method["stage"] = k
        sc.train.out_dir = str(out if k == len(stages) else out / f"stage{k}")
        if configs:
            sc.train.init_from = configs[-1].train.out_dir
        if stage.steps_key:
            sc.train.max_steps = cfg.method[stage.steps_key]
        configs.append(sc)
    return configs


def train_stages(configs: list[Config], resume: bool = False) -> dict:
    """Every stage of `stage_configs` in order (the caller holds the run folder). Each stage resumes
    on its own: with `resume`, a stage whose checkpoint exists continues (a finished one returns at
    once). Returns the last stage's summary with the earlier ones under "stage<k>"."""
    summaries = {}
    for k, sc in enumerate(configs, 1):
        summary = Trainer(sc, resume=resume and bool(ckpt_io.candidates(sc.train.out_dir))).fit()
        if summary["status"] in ("interrupted", "paused") or k == len(configs):
            return {**summary, **summaries}
        summaries[f"stage{k}"] = summary


__all__ = ["Trainer", "train", "train_stages", "stage_configs", "lr_at"]
