"""Standard judges of text samples: generative perplexity under a pretrained Hugging Face causal LM
(strided sliding window past its context) and MAUVE against held-out text on an encoder's features.

It knows text and `transformers` (and `mauve-text`), not methods, processes or training: it takes
strings (a run's samples, decoded by its dataset) and returns numbers. It is written here because
transformers has no helper for the generative perplexity of a list of samples that strides over
sequences longer than the judge's context, and mauve-text's own featurizer accepts only models whose
name contains 'gpt2' or 'bert'.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .data.tokenizers import hub_reachable, offline_mode
from .errors import ConfigError, DataError, MissingExtra
from .runtime import resolve_device

__all__ = ["HF_PREFIX", "MAUVE_MIN_SAMPLES", "HFEncoder", "HFJudge", "is_hf_spec", "load_causal_lm",
           "load_encoder", "mauve_score", "windows"]

HF_PREFIX = "hf:"
MAUVE_MIN_SAMPLES = 4  # two k-means buckets with two texts each, per side; the MAUVE paper uses 5000
MAUVE_MAX_TOKENS = 1024  # mauve-text truncates each text to this many tokens before featurizing


def is_hf_spec(spec) -> bool:
    """True for 'hf:NAME_OR_PATH' (a Hugging Face model), False for a catdiff run directory or a
    catdiff model on the hub ('hf://owner/name', loaded as a run)."""
    return isinstance(spec, str) and spec.startswith(HF_PREFIX) and not spec.startswith("hf://")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingExtra("hf: judges and --mauve need transformers: pip install 'catdiff[judge]'") from None
    return transformers


def _load(spec: str, what: str, model_class: str, progress: bool):
    """(tokenizer, model) of 'hf:NAME_OR_PATH' (AutoTokenizer + transformers.<model_class>, float32):
    an existing path from disk; otherwise a hub name, from the local Hugging Face cache only when
    HF_HUB_OFFLINE is set or the hub is unreachable. Any failure is one DataError line."""
    name = spec[len(HF_PREFIX):].strip()
    if not name:
        raise ConfigError(f"{what} {spec!r}: give hf:NAME (a hub model, e.g. hf:gpt2-large) or hf:/path/to/folder")
    transformers = _transformers()
    if not progress:
        transformers.utils.logging.disable_progress_bar()
    auto_model = getattr(transformers, model_class)

    def loader(where: str, **kw):
        return (transformers.AutoTokenizer.from_pretrained(where, **kw),
                auto_model.from_pretrained(where, dtype=torch.float32, **kw))

    path = Path(name).expanduser()
    if path.exists():
        try:
            return loader(str(path))
        except Exception as e:
            raise DataError(f"{what} {spec!r}: cannot load a Hugging Face model from {path} "
                            f"({type(e).__name__}: {e})") from None
    if name.startswith((".", "/", "~")) or "\\" in name:
        raise DataError(f"{what} {spec!r}: no such folder {path}")
    local_only = offline_mode() or not hub_reachable()
    try:
        return loader(name, local_files_only=True) if local_only else loader(name)
    except Exception as e:
        if local_only:
            why = " (HF_HUB_OFFLINE is set)" if offline_mode() else ""
            raise DataError(f"{what} {spec!r} is not in the local Hugging Face cache and the hub is not "
                            f"reachable{why}; give a local folder instead: hf:/path/to/folder (saved with "
                            "save_pretrained: config.json, weights and tokenizer files)") from None
        raise DataError(f"{what} {spec!r} could not be loaded from the Hugging Face hub "
                        f"({type(e).__name__}: {e}); give a local folder instead: hf:/path/to/folder") from None


def windows(n: int, context: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """Strided sliding windows over a sequence of n tokens for a model of `context` positions,
    as (begin, end, first) triples: the window is ids[begin:end] and it scores the tokens at
    positions first..end-1, each from all the tokens before it inside the window. Every position
    1..n-1 is scored exactly once (position 0 has no context); stride = context // 2 by default.

    The recipe of the Hugging Face guide "Perplexity of fixed-length models"
    (https://huggingface.co/docs/transformers/perplexity): windows of `context` tokens start every
    `stride` tokens, and each scores only the tokens the previous window did not reach, so every
    token but those of the first window has at least context - stride tokens of left context.
    """
    if context < 2:
        raise ValueError(f"context must be >= 2, got {context}")
    stride = max(1, context // 2) if stride is None else stride
    if not 1 <= stride <= context:
        raise ValueError(f"stride must lie in [1, {context}], got {stride}")
    out, prev_end = [], 0
    for begin in range(0, max(n, 1), stride):
        end = min(begin + context, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return [w for w in out if w[2] < w[1]]


def _context_length(config, tokenizer) -> int:
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 1:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    if isinstance(v, int) and 1 < v < 10**7:
        return v
    raise ConfigError(f"cannot tell the context length of judge {getattr(config, 'name_or_path', '')!r} "
                      "(its config has neither n_positions nor max_position_embeddings)")


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Lmax) ids padded on the right and the (B, Lmax) attention mask (1 on real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


class HFJudge:
    """A pretrained causal LM scoring texts: gen-PPL = exp(total NLL / total judge tokens).

    Each text is tokenized by the judge's own tokenizer (no special tokens) and the tokenizer's BOS
    token (else its EOS token; GPT-2: <|endoftext|>) is put in front, as a document boundary, so
    that the first token of every sample is scored too, conditioned on "a new document starts";
    the prefix itself is not scored. A tokenizer with neither leaves the first token of each text
    unscored (n_tokens counts the scored tokens either way). Texts longer than the judge's context
    are scored with strided sliding windows (`windows`). Windows are batched right-padded with an
    attention mask: causal attention never lets a real token see the padding, so the numbers do
    not depend on the batch size.
    """

    def __init__(self, model, tokenizer, name: str = "", device="cpu", batch_size: int = 8,
                 progress: bool = False, stride: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.context = _context_length(model.config, tokenizer)
        self.stride = stride
        self.prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_id = next((i for i in (tokenizer.pad_token_id, self.prefix_id) if i is not None), 0)

    def encode(self, text: str) -> list[int]:
        """The judge's ids of `text`, with the BOS/EOS prefix when the tokenizer has one."""
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return ([self.prefix_id] if self.prefix_id is not None else []) + list(ids)

    @torch.no_grad()
    def nll(self, texts: list[str], batch_size: int | None = None,
            progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per text: the summed NLL in nats (float64) and the number of judge tokens scored."""
        from tqdm.auto import tqdm

        batch_size = batch_size or self.batch_size
        progress = self.progress if progress is None else progress
        seqs = [self.encode(t) for t in texts]
        work = [(i, s[b:e], f - b)  # (text, window ids, first scored position in the window)
                for i, s in enumerate(seqs) for b, e, f in windows(len(s), self.context, self.stride)]
        work.sort(key=lambda w: -len(w[1]))  # similar lengths share a batch: little padding
        nll = np.zeros(len(texts), dtype=np.float64)
        count = np.zeros(len(texts), dtype=np.int64)
        for s in tqdm(range(0, len(work), batch_size), desc=f"judge {self.name}", disable=not progress):
            chunk = work[s:s + batch_size]
            ids, mask = _right_pad([w[1] for w in chunk], self.pad_id)
            # a target at window position p is predicted by the logits at p - 1
            scored = torch.zeros_like(mask[:, 1:], dtype=torch.bool)
            for r, (_, seg, first) in enumerate(chunk):
                scored[r, first - 1:len(seg) - 1] = True
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits[:, :-1]
            logits = logits.float()
            tgt = ids[:, 1:].to(self.device)
            tok_nll = torch.logsumexp(logits, -1) - logits.gather(-1, tgt[..., None])[..., 0]
            tok_nll = torch.where(scored.to(self.device), tok_nll, 0.0).double().sum(1).cpu().numpy()
            for r, (i, _, _) in enumerate(chunk):
                nll[i] += tok_nll[r]
                count[i] += int(scored[r].sum())
        return nll, count

    def score(self, texts: list[str], batch_size: int | None = None, progress: bool | None = None) -> dict:
        """{gen_ppl, nll_per_token (nats), n_tokens (judge tokens scored)} of the texts, pooled:
        exp(Σ NLL / Σ tokens), so long texts weigh by their length."""
        nll, count = self.nll(texts, batch_size, progress)
        n = int(count.sum())
        per = float(nll.sum()) / n if n else math.nan
        return {"gen_ppl": math.exp(per) if n else math.nan, "nll_per_token": per, "n_tokens": n}


class HFEncoder:
    """Text features for MAUVE: the last layer's hidden state at the final token of each text, the
    features of Pillutla et al. 2021 ("MAUVE: Measuring the Gap Between Neural Text and Human Text
    using Divergence Frontiers", NeurIPS; GPT-2 large by default) and of mauve-text's featurizer
    (`featurize_tokens_from_model`: texts truncated to 1024 tokens, or the encoder's context if
    shorter; no special tokens added)."""

    def __init__(self, model, tokenizer, name: str = "", device="cpu", batch_size: int = 8, progress: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.max_tokens = min(MAUVE_MAX_TOKENS, _context_length(model.config, tokenizer))

    @torch.no_grad()
    def features(self, texts: list[str]) -> np.ndarray:
        """(n, d) float32 features of the non-empty texts (mauve-text drops empty ones too)."""
        from tqdm.auto import tqdm

        ids = [self.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"][:self.max_tokens]
               for t in texts]
        ids = [r for r in ids if r]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list = [None] * len(ids)
        pad = next((i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if i is not None), 0)
        for s in tqdm(range(0, len(order), self.batch_size), desc=f"features {self.name}", disable=not self.progress):
            idx = order[s:s + self.batch_size]
            x, mask = _right_pad([ids[i] for i in idx], pad)
            h = self.model(input_ids=x.to(self.device), attention_mask=mask.to(self.device),
                           output_hidden_states=True).hidden_states[-1]
            last = mask.sum(1) - 1
            for r, i in enumerate(idx):
                out[i] = h[r, int(last[r])].float().cpu().numpy()
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(out)


def load_causal_lm(spec: str, device: str = "auto", batch_size: int = 8, progress: bool = False) -> HFJudge:
    """The judge 'hf:NAME_OR_PATH' (AutoTokenizer + AutoModelForCausalLM, float32, eval mode)."""
    dev = resolve_device(device)
    tok, model = _load(spec, "judge", "AutoModelForCausalLM", progress)
    return HFJudge(model.to(dev), tok, spec, dev, batch_size, progress)


def load_encoder(spec: str, device: str = "auto", batch_size: int = 8, progress: bool = False) -> HFEncoder:
    """The MAUVE feature encoder 'hf:NAME_OR_PATH' (AutoTokenizer + AutoModel, float32, eval mode)."""
    if not is_hf_spec(spec):
        raise ConfigError(f"--mauve-encoder takes hf:NAME_OR_PATH (e.g. hf:gpt2-large), got {spec!r}")
    dev = resolve_device(device)
    tok, model = _load(spec, "MAUVE encoder", "AutoModel", progress)
    return HFEncoder(model.to(dev), tok, spec, dev, batch_size, progress)


def mauve_score(p_features: np.ndarray, q_features: np.ndarray, seed: int = 25, num_buckets="auto") -> float:
    """MAUVE (mauve-text's `compute_mauve`) between samples p and references q given as features;
    num_buckets='auto' is max(2, n/10) k-means buckets, `seed` fixes the clustering (mauve-text's
    default). Needs MAUVE_MIN_SAMPLES texts a side."""
    try:
        import mauve
    except ImportError:
        raise MissingExtra("--mauve needs the mauve-text package: pip install 'catdiff[judge]'") from None
    n = min(len(p_features), len(q_features))
    if n < MAUVE_MIN_SAMPLES:
        raise ConfigError(f"MAUVE needs at least {MAUVE_MIN_SAMPLES} non-empty samples and held-out texts; "
                          f"got {len(p_features)} and {len(q_features)} (raise --num-samples)")
    try:
        out = mauve.compute_mauve(p_features=np.asarray(p_features), q_features=np.asarray(q_features),
                                  num_buckets=num_buckets, seed=seed, verbose=False)
    except Exception as e:  # e.g. k-means on degenerate features
        raise ConfigError(f"MAUVE failed on {len(p_features)} samples and {len(q_features)} held-out texts "
                          f"({type(e).__name__}: {e}); it needs more, varied samples") from None
    return float(out.mauve)
