"""One readable training loop for every method: AdamW, warm-up + cosine, clipping, EMA, AMP on
GPU, DDP under torchrun, atomic checkpoints, exact resume, NaN and Ctrl-C handling.

It knows the Method contract (forward → LossOutput) and the dataset contract (train_batch), not
what any method computes. Resume is exact because batches are a pure function of (seed, step,
rank), the learning rate is a pure function of step, and every RNG state is checkpointed.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkpoint as ckpt_io
from .build import build_dataset, build_method, method_options, rebuild_dataset
from .config import Config, build_config, save_config
from .errors import CheckpointError, ConfigError, TrainingError
from .runtime import resolve_device

# keys that may differ between a run and its resumption (a run directory may be moved or copied:
# out_dir, and init_from, used only when a run starts, do not bind it); a method's stage step
# counts (Stage.steps_key) may change too, like train.max_steps
RESUMABLE_CHANGES = {"train.max_steps", "train.ckpt_every", "train.log_every", "train.eval_every",
                     "train.progress", "train.max_minutes", "train.budget_clock", "train.device", "train.tensorboard",
                     "train.eval_batches", "sample", "eval", "train.out_dir", "train.init_from"}


def lr_at(step: int, cfg) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
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


class Trainer:
    def __init__(self, cfg: Config, resume: bool = False):
        self.cfg = cfg
        tc = cfg.train
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(tc.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if tc.batch_size % self.world:
            raise ConfigError(f"train.batch_size ({tc.batch_size}) must be divisible by the world size ({self.world})")
        self.run_dir = Path(tc.out_dir)
        self.is_main = self.rank == 0

        existing = ckpt_io.checkpoint_dir(self.run_dir)
        if existing is not None and not resume:
            raise CheckpointError(f"{self.run_dir} already holds a checkpoint: pass --resume to continue it, "
                                  "or choose another train.out_dir")
        if resume and existing is None:
            raise CheckpointError(f"--resume given but {self.run_dir} has no checkpoint")
        self.meta = ckpt_io.read_meta(existing) if existing else None
        if self.meta is not None:
            self._check_compatible(self.meta["config"])

        self.dataset = rebuild_dataset(self.meta["dataset"]) if self.meta else build_dataset(cfg.data)
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        self.method = build_method(cfg, self.dataset).to(self.device)
        if tc.init_from and existing is None:
            self._init_from(Path(tc.init_from))
        if cfg.model.compile:
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
        if existing is not None:
            self._load(existing)
        self.model = self.method
        if self.world > 1:
            ddp_kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = torch.nn.parallel.DistributedDataParallel(self.method, **ddp_kwargs)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.amp)
        self.autocast = (torch.autocast("cuda", dtype=amp) if amp and self.device.type == "cuda" else nullcontext())
        self.scaler = torch.amp.GradScaler("cuda") if tc.amp == "fp16" and self.device.type == "cuda" else None

    # ---- state ------------------------------------------------------------------------
    def _check_compatible(self, saved: dict) -> None:
        free = RESUMABLE_CHANGES | {f"method.{s.steps_key}" for s in method_stages(self.cfg) if s.steps_key}
        diff = [k for k in flat_diff(saved, self.cfg.to_dict())
                if k not in free and k.split(".")[0] not in free and ".".join(k.split(".")[:2]) not in free]
        if diff:
            raise CheckpointError(f"config key '{diff[0]}' differs from the checkpoint in {self.run_dir}; "
                                  "only train.max_steps and logging keys may change on --resume")

    def _init_from(self, run_dir: Path) -> None:
        """Start from another run's weights (its EMA weights when saved): same method and shapes."""
        ckpt = ckpt_io.checkpoint_dir(run_dir)
        if ckpt is None:
            raise CheckpointError(f"train.init_from: {run_dir} has no checkpoint")
        meta = ckpt_io.read_meta(ckpt)
        if meta["method"] != self.method.name:
            raise CheckpointError(f"train.init_from: {run_dir} holds a {meta['method']!r} run, "
                                  f"this run is {self.method.name!r}")
        ema = ckpt / "ema.safetensors"
        ckpt_io.load_weights(self.method, ema if ema.is_file() else ckpt / "model.safetensors", self.device)

    def _load(self, ckpt: Path) -> None:
        ckpt_io.load_weights(self.method, ckpt / "model.safetensors", self.device)
        st = ckpt_io.load_trainer_state(ckpt)
        if self.ema is not None:
            ema_mod = {k: torch.empty_like(v) for k, v in self.ema.items()}
            from safetensors.torch import load_file
            loaded = load_file(str(ckpt / "ema.safetensors"), device=str(self.device))
            ema_mod.update(loaded)
            self.ema = ema_mod
        self.opt.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        torch.set_rng_state(st["rng_cpu"])
        gens = st["rng_gen"]
        if self.rank < len(gens):
            self.gen.set_state(gens[self.rank].to(self.gen.get_state().device))
        if self.device.type == "cuda" and "rng_cuda" in st:
            torch.cuda.set_rng_state(st["rng_cuda"])

    def save(self) -> None:
        gens = [self.gen.get_state().cpu()]
        if self.world > 1:  # every rank's noise generator state, gathered on rank 0
            gathered = [None] * self.world
            dist.all_gather_object(gathered, gens[0])
            gens = gathered
        if not self.is_main:
            return
        state = {"optimizer": self.opt.state_dict(), "step": self.step, "rng_cpu": torch.get_rng_state(),
                 "rng_gen": gens}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        meta = {"config": self.cfg.to_dict(), "dataset": self.dataset.state(), "method": self.method.name,
                "vocab_size": self.dataset.vocab_size, "seq_len": self.dataset.seq_len}
        ckpt_io.save_checkpoint(self.run_dir, step=self.step, method=self.method, ema=self.ema,
                                trainer_state=state, meta=meta)

    # ---- loop -------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.tb is not None:
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)):
                        self.tb.add_scalar(k, v, record["step"])

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
        val = self.dataset.split("val")
        bs = self.cfg.train.batch_size
        g = torch.Generator(device=self.device).manual_seed(12345)
        tot, n = 0.0, 0
        score = self.method.nelbo if self.method.has_likelihood else self.method.validation_loss
        for i in range(min(self.cfg.train.eval_batches, math.ceil(len(val) / bs))):
            x = self.dataset.batch(val[i * bs:(i + 1) * bs]).to(self.device)
            tot += float(score(x, g).sum())
            n += len(x)
        self.method.train()
        if not self.method.has_likelihood:
            return {"val_loss": tot / max(n, 1)}
        return {"val_bits_per_token": tot / max(n, 1) / self.dataset.seq_len / math.log(2)}

    def fit(self, until_step: int | None = None) -> dict:
        """Train to train.max_steps; `until_step` pauses earlier (checkpointed, status "paused")
        exactly as an interruption would, so the run can be resumed."""
        tc = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            (self.run_dir / "dataset.json").write_text(json.dumps(self.dataset.state()))
        self.tb = None
        if tc.tensorboard and self.is_main:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.run_dir / "tb"))
        local_bs = tc.batch_size // self.world
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not (tc.progress and self.is_main),
                   desc=f"train {self.method.name}", dynamic_ncols=True, mininterval=1.0)
        t0, tokens, last_ckpt_step = time.time(), 0, self.step
        clock = time.process_time if tc.budget_clock == "cpu" else time.time
        budget_t0 = clock()
        status = "done"
        if self.step == 0 and self.is_main:
            init = self.method.diagnostics()  # e.g. the embedding spread before any update
            if init:
                self._log({"step": 0, **init})
        self.method.train()
        with _Interrupt() as interrupt:
            while self.step < tc.max_steps:
                batch = self.dataset.batch(self.dataset.train_batch(self.step, local_bs, self.rank, self.world))
                batch = batch.to(self.device)
                lr = lr_at(self.step, tc)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                with self.autocast:
                    out = self.model(batch, self.gen)
                loss = out.loss
                finite = torch.isfinite(loss.detach()).float()
                if self.world > 1:
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                if finite.item() < 1:
                    raise TrainingError(f"non-finite loss at step {self.step}; stopped, the last good checkpoint "
                                        f"(step {last_ckpt_step}) is kept in {self.run_dir}")
                self.opt.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.opt)
                else:
                    loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), tc.grad_clip or float("inf"))
                if self.scaler is not None:
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    self.opt.step()
                self._update_ema()
                self.step += 1
                tokens += batch.tokens.numel() * self.world
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    elapsed = time.time() - t0
                    rec = {"step": self.step, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(gnorm),
                           "tokens_per_s": tokens / max(elapsed, 1e-9), "elapsed_s": elapsed,
                           "budget_s": clock() - budget_t0}
                    if out.nll is not None:  # methods whose training loss is not a bound leave it None
                        rec["bits_per_token"] = float(out.nll.mean()) / self.dataset.seq_len / math.log(2)
                    rec.update({k: float(v) for k, v in out.metrics.items()})
                    rec.update(self.method.diagnostics())
                    self._log(rec)
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                if tc.eval_every and self.step % tc.eval_every == 0:
                    self._log({"step": self.step, **self.validate()})
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
        summary = {"status": status, "step": self.step, "elapsed_s": time.time() - t0, "budget_s": clock() - budget_t0,
                   "tokens_per_s": tokens / max(time.time() - t0, 1e-9)}
        if status not in ("interrupted", "paused"):
            summary.update(self.validate())
            self._log({"step": self.step, **{k: v for k, v in summary.items() if k.startswith("val")}})
        if self.tb is not None:
            self.tb.close()
        return summary


def train(cfg: Config | dict, resume: bool = False) -> dict:
    """Train `cfg` (a Config or a raw mapping) and return a summary; see `Trainer`. A method that
    declares several stages (`Method.stages`) with `method.stage = 0` runs them all: `train_stages`."""
    if isinstance(cfg, dict):
        cfg = build_config(cfg)
    stages = method_stages(cfg)
    if len(stages) > 1 and cfg.method.get("stage", 0) == 0:
        return train_stages(cfg, stages, resume)
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def method_stages(cfg: Config):
    """The training stages the configured method declares (Method.stages)."""
    cls, options = method_options(cfg)
    return cls.stages(options)


def train_stages(cfg: Config, stages, resume: bool = False) -> dict:
    """Every stage in order: stage k (method.stage = k) into OUT/stage<k>, the last one into OUT,
    each initialised from the previous one and trained for its Stage.steps_key option (or
    train.max_steps). Each stage resumes on its own: with `resume`, a stage whose checkpoint
    exists continues (a finished one returns at once). Returns the last stage's summary with the
    earlier ones under "stage<k>"."""
    out = Path(cfg.train.out_dir)
    summaries, prev = {}, None
    for k, stage in enumerate(stages, 1):
        sc = copy.deepcopy(cfg)
        sc.method["stage"] = k
        sc.train.out_dir = str(out if k == len(stages) else out / f"stage{k}")
        if prev is not None:
            sc.train.init_from = prev
        if stage.steps_key:
            sc.train.max_steps = cfg.method[stage.steps_key]
        summary = train(sc, resume=resume and ckpt_io.checkpoint_dir(Path(sc.train.out_dir)) is not None)
        if summary["status"] in ("interrupted", "paused") or k == len(stages):
            return {**summary, **summaries}
        summaries[f"stage{k}"], prev = summary, sc.train.out_dir


__all__ = ["Trainer", "train", "train_stages", "lr_at"]
