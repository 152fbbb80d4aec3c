"""A trained model as one object to use and to share: `catdiff.load(PATH | hf://owner/name)` gives a
`Pipeline` that samples, decodes, scores and saves itself in the hub's layout (export.py); it knows
the Method and dataset contracts and the export format, nothing of training loops or the command line.

The shareable unit is the pipeline, not the bare `Method`: a method without its tokenizer, data
state and config cannot decode or be rebuilt, so `huggingface_hub.ModelHubMixin` sits here, as a
diffusers pipeline holds its model and scheduler. `Pipeline.from_pretrained(x).method` is the Method.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from huggingface_hub import ModelHubMixin

from . import export
from .build import load_run
from .conditioning import Condition, from_template, template
from .config import Config, override_sample_options
from .errors import ConfigError
from .evaluate import draw_samples
from .runtime import resolve_device
from .structs import SampleOutput


class Pipeline(ModelHubMixin, library_name="catdiff", tags=["catdiff", "diffusion"]):
    """A loaded model: `method` (a catdiff Method in eval mode), `dataset` (its tokenizer and data
    state) and `config` (the run's resolved config). `info`: step, weights ("ema"/"model"),
    training facts and the eval table, carried into exports and model cards."""

    def __init__(self, model, data, run_config: Config, info: dict | None = None):
        self.method, self.dataset, self.config = model, data, run_config
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return (f"Pipeline({self.method.name} on {self.dataset.name}: K={self.method.vocab_size}, "
                f"L={self.method.seq_len}, step {self.info.get('step')}, {self.device})")

    @property
    def device(self) -> torch.device:
        return self.method.device

    def to(self, device) -> Pipeline:
        """Move the model to `device` ("auto", "cpu", "cuda", a torch.device); returns self."""
        self.method.to(resolve_device(device) if isinstance(device, str) else device)
        return self

    # ---- sampling -------------------------------------------------------------------------
    def sample_options(self, **overrides):
        """The run's sampler options (its `sample:` section) with `overrides` (None values are
        ignored): an option the method's sampler does not take fails naming those it does."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return override_sample_options(self.config, given, self.method.name)

    def condition(self, prompt: str | Sequence | None = None, infill: str | None = None) -> Condition | None:
        """A Condition from a prompt (a prefix; a seq2seq run's source) or an infill template whose
        '_' are free positions. Text runs encode strings with their tokenizer; token runs read
        space-separated ids (or take a sequence of ints); vector runs numbers."""
        if prompt is None and infill is None:
            return None
        if prompt is not None and infill is not None:
            raise ConfigError("give a prompt or an infill template, not both")
        ds, L = self.dataset, self.method.seq_len
        try:
            if ds.kind == "seq2seq":
                if infill is not None:
                    raise ConfigError("a seq2seq run takes its source as the prompt")
                return Condition.leading(ds.prompt_canvas(prompt)[None], ds.cond_len)
            if ds.kind == "text":
                encode = ds.encode
            elif ds.kind == "vector":
                def encode(seg):
                    return [float(v) for v in seg.split()]
            else:
                def encode(seg):
                    return [int(v) for v in seg.split()]
            if prompt is not None:
                tokens = encode(prompt) if isinstance(prompt, str) else prompt
                cond = from_template([v.item() if hasattr(v, "item") else v for v in tokens], L)
            else:
                cond = template(infill, encode, L)
            cond.check(L, None if ds.kind == "vector" else ds.vocab_size)
            return cond
        except (ValueError, KeyError) as e:
            raise ConfigError(f"cannot read the condition: {e}") from None

    @torch.no_grad()
    def draw(self, n: int, options, condition: Condition | None = None,
             generator: torch.Generator | None = None) -> tuple[SampleOutput, float]:
        """(samples and network calls, seconds per sample) under sampler `options` — what
        `catdiff sample` runs; `sample` is the short form."""
        return draw_samples(self.method, n, options, condition, generator)

    def sample(self, n: int | None = None, *, steps: int | None = None, sampler: str | None = None,
               seed: int | None = None, generator: torch.Generator | None = None, prompt=None,
               infill: str | None = None, condition: Condition | None = None, **options) -> torch.Tensor:
        """(n, L) samples (token ids; values for vector data). `steps` is the network-call budget,
        `sampler` the family's kind (e.g. "ddim", "heun"; masked: "ancestral"), `seed` seeds one
        generator for all n (the same seed and steps give `catdiff sample`'s samples), or pass
        `generator`. Other options by name: temperature, top_k, top_p, order, guidance, ...
        `n` defaults to the run's sample.num_samples."""
        if sampler is not None:
            options["sampler"] = sampler
        opts = self.sample_options(steps=steps, seed=seed, **options)
        if condition is None:
            condition = self.condition(prompt, infill)
        elif prompt is not None or infill is not None:
            raise ConfigError("give a condition, a prompt or an infill template, not several")
        return self.draw(n or opts.num_samples, opts, condition, generator)[0].samples

    def decode(self, ids) -> str | list[str]:
        """Text of one sequence (1-D ids), or a list of texts for (N, L) ids."""
        x = torch.as_tensor(ids)
        if x.dim() == 1:
            return self.dataset.decode(x)
        return [self.dataset.decode(row) for row in x]

    # ---- scoring --------------------------------------------------------------------------
    def rows(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, L) rows to score and (R,) the index of the input each row belongs to. Ids (N, L)
        are rows as they are. A text is encoded and cut into L-token windows, the last one padded
        with the run's PAD when it was trained with padding (packing=pad); a stream-trained run
        (packing=wrap) scores full windows only, so a text shorter than L tokens is refused."""
        L = self.method.seq_len
        if isinstance(data, torch.Tensor) or (len(data) and not isinstance(data[0], str)):
            x = torch.as_tensor(data, dtype=torch.long)
            if x.dim() == 1:
                x = x[None]
            if x.dim() != 2 or x.shape[1] != L:
                raise ConfigError(f"ids must be (N, {L}) for this model, got {tuple(x.shape)}")
            return x, torch.arange(len(x))
        if getattr(self.dataset, "kind", None) != "text":
            raise ConfigError(f"texts can be scored by text runs only; this run's data is {self.dataset.name!r}: "
                              "give token ids")
        pad = getattr(self.dataset, "pad_id", None)
        out, owner = [], []
        for i, text in enumerate(data):
            ids = self.dataset.encode(text)
            n_full, rest = divmod(len(ids), L)
            windows = [ids[k * L:(k + 1) * L] for k in range(n_full)]
            if rest and pad is not None:
                windows.append(torch.cat([ids[n_full * L:], torch.full((L - rest,), pad, dtype=torch.long)]))
            if not windows:
                raise ConfigError(f"text {i} has {len(ids)} tokens; this run was trained on {L}-token windows of "
                                  "a packed stream (data.packing=wrap), so it scores texts of at least that length")
            out += windows
            owner += [i] * len(windows)
        return torch.stack(out).long(), torch.tensor(owner)

    @torch.no_grad()
    def likelihood(self, data, passes: int = 4, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
        """(N,) NELBO in bits per token of each input (texts or (N, L) ids; see `rows`), averaged
        over `passes` Monte-Carlo draws of the bound (one for exact likelihoods, e.g. AR) from a
        generator seeded by `seed`. Float64."""
        if not self.method.has_likelihood:
            raise ConfigError(f"{self.method.name} has no likelihood bound")
        x, owner = self.rows(data)
        passes = 1 if self.method.exact_likelihood else passes
        g = torch.Generator(device=self.device).manual_seed(seed)
        nats = []
        for i in range(0, len(x), batch_size):
            b = self.dataset.batch(x[i:i + batch_size]).to(self.device)
            nats.append(torch.stack([self.method.nelbo(b, g) for _ in range(passes)]).double().mean(0).cpu())
        per_row = torch.cat(nats)
        tokens = float(self.method.seq_len - getattr(self.dataset, "cond_len", 0))
        n = int(owner.max()) + 1
        total = torch.zeros(n, dtype=torch.float64).index_add_(0, owner, per_row)
        count = torch.zeros(n, dtype=torch.float64).index_add_(0, owner, torch.ones_like(per_row))
        return total / (count * tokens * math.log(2))

    # ---- sharing --------------------------------------------------------------------------
    def export_meta(self) -> dict:
        """config.json's fields (export.write adds format, version and the weights' hash); a run's
        training facts and eval table are read from its folder now."""
        run = self.info.get("run")
        if run is not None and "training" not in self.info:
            self.info["training"] = _training_facts(run, self.config, self.info.get("step"), self.method.seq_len)
            eval_md = run / "eval.md"
            self.info["eval_md"] = eval_md.read_text() if eval_md.is_file() else None
        return {"method": self.method.name, "vocab_size": self.method.vocab_size, "seq_len": self.method.seq_len,
                "step": self.info.get("step"), "weights": self.info.get("weights", "ema"),
                "config": self.config.to_dict(), "dataset": self.dataset.state(),
                "training": self.info.get("training", {}), "eval_md": self.info.get("eval_md")}

    def _save_pretrained(self, save_directory: Path) -> None:
        """The export layout (export.py) with a model card: ModelHubMixin's save_pretrained and
        push_to_hub call this."""
        from safetensors.torch import save as safetensors_bytes

        from .checkpoint import _state_for_save

        meta = self.export_meta()
        excerpt = self.info.get("excerpt")
        if excerpt is None and self.dataset.kind not in ("image", "vector", "seq2seq"):
            excerpt = self.decode(self.sample(2, seed=0))
        n_params = sum(p.numel() for p in self.method.parameters())
        card = export.card(method=self.method.name, meta=meta, dataset=meta["dataset"], n_params=n_params,
                           training=meta["training"], eval_md=meta["eval_md"], excerpt=excerpt or [],
                           license=self.info.get("license", "mit"))
        tok = getattr(self.dataset, "tokenizer", None)
        export.write(save_directory, state_bytes=safetensors_bytes(_state_for_save(self.method)), meta=meta,
                     tokenizer_state=tok.state() if tok is not None else None, card=card)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, device: str = "auto", **_hub) -> Pipeline:
        """ModelHubMixin's loader: a local folder, or a hub repo id fetched through export.resolve."""
        name = model_id if Path(model_id).exists() or model_id.startswith(export.HUB_PREFIX) \
            else export.HUB_PREFIX + model_id
        return load(export.resolve(name, revision), device=device)


def _training_facts(run: Path, cfg: Config, step: int | None, seq_len: int) -> dict:
    """Steps, tokens and wall clock of a run, from its config and the last record of metrics.jsonl."""
    facts = {"steps": step}
    if step is not None:
        facts["tokens (steps × batch × length)"] = f"{step * cfg.train.batch_size * seq_len:,}"
    last = None
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "elapsed_s" in rec:
                last = rec
    if last is not None:
        facts["wall clock of the last session (s)"] = round(last["elapsed_s"], 1)
        facts["tokens/s"] = round(last.get("tokens_per_s", 0.0))
    facts["device"] = cfg.train.device
    facts["batch size"] = cfg.train.batch_size
    facts["optimizer"] = f"AdamW, lr {cfg.train.lr}, {cfg.train.max_steps} steps planned"
    return facts


def load(path: str | Path, device: str = "auto", use_ema: bool = True, allow_changed_data: bool = False) -> Pipeline:
    """A Pipeline from a run folder (its newest verified checkpoint), a checkpoint folder, an
    exported folder or a hub model (`hf://owner/name`; offline only from the local cache)."""
    cfg, method, dataset, meta = load_run(path, device, use_ema, allow_changed_data, with_meta=True)
    info = {"step": meta.get("step"), "weights": meta.get("weights", "ema")}
    if export.is_export(meta["folder"]):  # an export keeps its card's facts for the next export or push
        info.update({"training": meta.get("training", {}), "eval_md": meta.get("eval_md")})
    else:  # the run folder: its facts are read when the pipeline is exported
        folder = Path(meta["folder"])
        info["run"] = folder.parent.parent if folder.parent.name == "checkpoints" else folder
    return Pipeline(method, dataset, cfg, info)


def export_run(run: str | Path, out: str | Path, use_ema: bool = True, license: str = "mit",
               device: str = "auto") -> Path:
    """Export a run (or re-export a loaded export) into `out`: config.json, model.safetensors,
    tokenizer file, README.md model card. `out` must not hold another export unless it is empty."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: export into a new folder")
    pipe = load(run, device, use_ema)
    pipe.info["license"] = license
    pipe.save_pretrained(out)
    return out


def push(run: str | Path, repo_id: str, private: bool | None = None, token: str | None = None,
         license: str = "mit", device: str = "auto") -> str:
    """Export `run` and upload it to the hub repository `repo_id` (created if needed) through
    huggingface_hub (ModelHubMixin.push_to_hub); returns the commit URL. Needs the network."""
    pipe = load(run, device)
    pipe.info["license"] = license
    return pipe.push_to_hub(repo_id, private=private, token=token,
                            commit_message=f"catdiff {pipe.method.name}, step {pipe.info.get('step')}")
