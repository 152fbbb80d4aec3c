"""Likelihood and sample evaluation of a trained run, seed-addressable and written as JSON + Markdown.

It knows the Method and dataset contracts and the metrics module, not how runs were trained.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from . import export, judges, metrics
from .build import load_run
from .conditioning import Condition
from .config import override_sample_options
from .errors import CheckpointError, ConfigError
from .runtime import autocast
from .structs import SampleOutput


@torch.no_grad()
def likelihood(method, dataset, split: str = "test", passes: int = 4, max_examples: int = 2048,
               batch_size: int = 256, seed: int = 0, amp: str = "off") -> dict:
    """NELBO (or exact NLL) on a held-out split, float64-accumulated, with its standard error.

    Each example's bound is averaged over `passes` Monte-Carlo draws of (t, mask) first. `amp`:
    the network's matmul precision (runtime.autocast); log-probabilities and sums stay fp32/float64.
    """
    x_all = dataset.head(split, max_examples)
    passes = 1 if method.exact_likelihood else passes
    g = torch.Generator(device=method.device).manual_seed(seed)
    acc = metrics.MeanAccumulator()
    score = method.nelbo if method.has_likelihood else method.validation_loss
    for i in range(0, len(x_all), batch_size):
        x = dataset.batch(x_all[i:i + batch_size]).to(method.device)
        with autocast(amp, method.device):
            per = torch.stack([score(x, g).double() for _ in range(passes)]).mean(0)  # (B,)
        acc.update(per.double().cpu())
    if not method.has_likelihood:  # no bound: the held-out training loss, for reference
        return {"split": split, "n": int(acc.count), "loss": acc.mean, "loss_se": acc.stderr}
    L = dataset.seq_len - getattr(dataset, "cond_len", 0)  # seq2seq: bits per target token
    out = {"split": split, "n": int(acc.count), "nelbo_nats": acc.mean, "nelbo_nats_se": acc.stderr,
           "bits_per_token": metrics.bits_per_token(acc.mean, L), "ppl_bound": metrics.perplexity_bound(acc.mean, L)}
    if dataset.exact:
        H, H_se = dataset.entropy()
        out.update({"entropy_nats": H, "entropy_nats_se": H_se, "nelbo_gap": metrics.nelbo_gap(acc.mean, H)})
    return out


@torch.no_grad()
def draw_samples(method, n: int, cfg, condition: Condition | None = None,
                 generator: torch.Generator | None = None) -> tuple[SampleOutput, float]:
    """n samples in batches of cfg.batch_size from one generator (`generator`, else one seeded by
    cfg.seed); returns the samples and the wall time per sample in seconds. `condition`: one row
    for all samples, or n rows (one per sample, e.g. seq2seq sources)."""
    g = generator if generator is not None else torch.Generator(device=method.device).manual_seed(cfg.seed)
    outs, nfe = [], 0
    t0 = time.perf_counter()
    for i in range(0, n, cfg.batch_size):
        b = min(cfg.batch_size, n - i)
        c = condition
        if c is not None and c.values.shape[0] > 1:
            c = c.rows(i, i + b)
        with torch.inference_mode(), autocast(cfg.amp, method.device):  # no autograd bookkeeping at all
            o = method.sample(b, cfg, g, condition=c)
        outs.append(o.samples.cpu().clone())  # a normal tensor again: usable as input of a trained step
        nfe = max(nfe, o.nfe)
    dt = time.perf_counter() - t0
    return SampleOutput(samples=torch.cat(outs), nfe=nfe), dt / n


def sample_report(samples: torch.Tensor, dataset, judge=None, mauve=None) -> dict:
    """Sample metrics suited to the dataset: exact ones on synthetic data, FD on digits and on
    8×8 grey `images` (their levels mapped to the digits' 0..16), gen-PPL (if a judge is given)
    + entropy + distinct-n on everything. A `judges.HFJudge` scores the samples' text (decoded by
    the dataset), a catdiff AR judge their tokens; `mauve`: a callable texts -> MAUVE against
    held-out text. The unigram entropy (bits, over the catdiff tokens) is always reported beside
    gen-PPL."""
    if dataset.kind == "vector":  # continuous data: FD on images, else exact W2 to held-out points
        real = dataset.split("test")
        if hasattr(dataset, "to_tokens"):  # FD to the test split, and to the (8× larger) training split,
            # the reference EDM's FID uses: a smaller estimator floor, and it rewards memorisation
            tokens = dataset.to_tokens(samples)
            return {"n_samples": len(samples), "fd_digits": metrics.fd_digits(tokens, dataset.to_tokens(real)),
                    "fd_digits_train": metrics.fd_digits(tokens, dataset.to_tokens(dataset.split("train")))}
        return {"n_samples": len(samples), "w2": metrics.wasserstein2(samples, real[:len(samples)])}
    if dataset.exact:
        return metrics.sample_metrics(samples, dataset)
    out = metrics.sample_metrics(samples, dataset)
    if dataset.kind == "image" and dataset.name == "digits":
        out["fd_digits"] = metrics.fd_digits(samples, dataset.split("test"))
    elif dataset.kind == "image" and getattr(dataset, "fd_digits_applies", False):  # 8×8 grey images
        real = dataset.split("test")
        if len(samples) >= 2 and len(real) >= 2:  # a covariance needs two points a side
            out["fd_digits"] = metrics.fd_digits(dataset.digit_levels(samples), dataset.digit_levels(real))
    if isinstance(judge, judges.HFJudge) or mauve is not None:
        texts = [dataset.decode(row) for row in samples]
        if isinstance(judge, judges.HFJudge):
            out.update(judge.score(texts))
        if mauve is not None:
            out["mauve"] = mauve(texts)
    elif judge is not None:
        out.update(metrics.generative_perplexity(samples, judge))
    if "gen_ppl" in out and "unigram_entropy" not in out:
        out["unigram_entropy"] = metrics.unigram_entropy(samples, getattr(dataset, "vocab_size", None))
    return out


def seq2seq_report(method, dataset, cfg, n: int, split: str = "test", beams: dict | None = None) -> dict:
    """Targets for the first n held-out sources (the source + separator fixed): exact match of the
    whole target segment (padding included, so the length must be right too), token accuracy,
    length accuracy, and corpus BLEU / chrF of the rendered targets (sacrebleu). `beams`: keyword
    arguments of length.beam_decode (length_model, length_beam, noise_beam, rerank) to decode with
    length × noise beams instead of one draw."""
    x = dataset.split(split)[:n]
    blind = x.clone()
    blind[:, dataset.cond_len:] = dataset.pad_id  # the references never reach the sampler
    if beams:
        from .length import beam_decode

        g = torch.Generator(device=method.device).manual_seed(cfg.seed)
        t0, parts, nfe = time.perf_counter(), [], 0
        for i in range(0, len(x), cfg.batch_size):
            r = beam_decode(method, dataset, blind[i:i + cfg.batch_size].to(method.device), cfg, generator=g, **beams)
            parts.append(r["samples"].cpu())
            nfe = max(nfe, r["nfe"])
        out, sec = SampleOutput(samples=torch.cat(parts), nfe=nfe), (time.perf_counter() - t0) / len(x)
    else:
        out, sec = draw_samples(method, len(x), cfg, Condition.leading(blind, dataset.cond_len))
    hyp, ref = dataset.target(out.samples), dataset.target(x)
    # BLEU/chrF strings: detokenized text, or the symbols as space-separated words (synthetic tasks)
    render = getattr(dataset, "detokenize", None) or (lambda seq: " ".join(map(str, dataset.symbols(seq))))
    hyp_s, ref_s = [render(r) for r in hyp], [render(r) for r in ref]
    return {"steps": getattr(cfg, "steps", None), "nfe": out.nfe, "sec_per_sample": sec, "n_samples": len(x),
            "exact_match": float((hyp == ref).all(1).float().mean()),
            "token_accuracy": float((hyp == ref).float().mean()),
            "length_accuracy": float((dataset.target_length(out.samples) == dataset.target_length(x)).float().mean()),
            "bleu": metrics.bleu(hyp_s, ref_s), "chrf": metrics.chrf(hyp_s, ref_s),
            "examples": [f"{dataset.decode(a)}   [ref {r}]" for a, r in zip(out.samples[:3], ref_s[:3], strict=False)]}


def infill_report(method, dataset, cfg, n: int, fixed_frac: float = 0.5, seed: int = 0) -> dict:
    """Infilling on a dataset with exact conditionals (mixture, hmm): for n held-out rows, a random
    fixed_frac of positions is fixed and the method fills the rest. Reports the exact
    -log p(infill | fixed) of its infills (nats per sequence), the exact conditional entropy
    (the same for exact infills; its standard error) and the excess (0 for a perfect sampler)."""
    g = torch.Generator().manual_seed(seed)
    x = dataset.split("test")[:n]
    fixed = torch.rand(x.shape, generator=g) < fixed_frac
    out, sec = draw_samples(method, len(x), cfg, Condition(x, fixed))
    nll = -metrics.infill_log_prob(dataset, out.samples, fixed)
    ref = -metrics.infill_log_prob(dataset, metrics.exact_infills(dataset, x, fixed, g), fixed)
    return {"steps": getattr(cfg, "steps", None), "nfe": out.nfe, "sec_per_sample": sec, "n_samples": len(x),
            "fixed_frac": fixed_frac,
            "infill_nll": float(nll.mean()), "infill_entropy": float(ref.mean()),
            "infill_entropy_se": float(ref.std() / len(ref) ** 0.5), "infill_excess": float(nll.mean() - ref.mean())}


def with_steps(cfg, steps: int | None):
    """The sampler options `cfg` with the network-call budget `steps` (None: as they are, e.g. AR)."""
    return cfg if steps is None else replace(cfg, steps=int(steps))


def step_sweep(method, dataset, steps_list, cfg, num_samples: int, judge=None,
               progress: bool = True, beams: dict | None = None, mauve=None) -> list[dict]:
    """One row of sample metrics per step count (the few-step curve of DESIGN.md §4); a step count
    of None samples with `cfg` as it is (methods without a step budget: AR). `judge`, `mauve`: as
    in `sample_report`."""
    from tqdm.auto import tqdm

    rows = []
    for steps in tqdm(list(steps_list), desc="sampling", disable=not progress):
        if dataset.kind == "seq2seq":  # targets generated for held-out sources
            rows.append(seq2seq_report(method, dataset, with_steps(cfg, steps), num_samples, beams=beams))
            continue
        out, sec = draw_samples(method, num_samples, with_steps(cfg, steps))
        row = {"steps": steps, "nfe": out.nfe, "sec_per_sample": sec}
        row.update(sample_report(out.samples, dataset, judge, mauve))
        rows.append(row)
    return rows


def load_judge(spec: str | Path, device: str = "auto", progress: bool = False):
    """A judge for gen-PPL. 'hf:NAME_OR_PATH': a Hugging Face causal LM scoring the samples' text
    (`judges.HFJudge`; the optional extra catdiff[judge]). Otherwise an AR run directory: a callable
    x (N, L) -> (N,) log p in nats over catdiff tokens."""
    if judges.is_hf_spec(spec):
        return judges.load_causal_lm(str(spec), device, progress=progress)
    run_dir = spec
    _, judge, _ = load_run(run_dir, device)
    if not hasattr(judge, "log_prob"):
        raise CheckpointError(f"judge run {run_dir} is not an autoregressive model")

    def score(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([judge.log_prob(x[i:i + 256].to(judge.device)).cpu() for i in range(0, len(x), 256)])

    return score


def evaluate_run(run_dir: str | Path, steps_list=None, num_samples: int | None = None, seed: int = 0,
                 device: str = "auto", judge_dir: str | None = None, out_name: str = "eval",
                 progress: bool = True, length_beam: int = 0, noise_beam: int = 1,
                 rerank_dir: str | None = None, infill_frac: float = 0.0, sample_overrides: dict | None = None,
                 allow_changed_data: bool = False, mauve: bool = False,
                 mauve_encoder: str = "hf:gpt2-large") -> dict:
    """Likelihood bound and sample metrics of a run → RUN/eval.{json,md} (a hub model's:
    ./owner--name/). Seq2seq runs: targets for held-out sources; length_beam > 0 decodes
    length_beam × noise_beam candidates per source (a length predictor is fitted once and kept
    in RUN/length.pt), reranked by the AR run `rerank_dir` when given. infill_frac > 0 (mixture,
    hmm): also infilling with that fraction of positions fixed, scored by the exact conditional
    likelihood (infill_report). `sample_overrides` replaces fields of the run's sampler options
    (checked against the method's SampleOptions). `allow_changed_data` evaluates on a corpus
    that changed since training (refused otherwise). A judge 'hf:NAME_OR_PATH' (text runs)
    scores the decoded samples under a Hugging Face causal LM; `mauve` adds MAUVE between the
    decoded samples and as many held-out test rows, on the features of `mauve_encoder`
    (judges.HFEncoder)."""
    cfg, method, dataset = load_run(run_dir, device, allow_changed_data=allow_changed_data)
    out_dir = export.output_dir(run_dir)  # a hub model's results go to ./owner--name
    ec = cfg.eval
    # every argument is checked before any work is done
    has_steps = hasattr(cfg.sample, "steps")
    if steps_list and not has_steps:
        raise ConfigError(f"--steps does not apply to {method.name} runs (its sampler has no step budget)")
    steps_list = steps_list or (list(ec.steps) if has_steps else [None])
    scfg = override_sample_options(cfg, {**(sample_overrides or {}), "seed": seed}, method.name)
    for k in steps_list:
        with_steps(scfg, k)  # each budget within the sampler's range
    num_samples = ec.num_samples if num_samples is None else num_samples
    if num_samples < 1 or length_beam < 0 or noise_beam < 1 or not 0.0 <= infill_frac < 1.0:
        raise ConfigError("need --num-samples >= 1, --length-beam >= 0, --noise-beam >= 1 and --infill-frac in "
                          f"[0, 1); got {num_samples}, {length_beam}, {noise_beam}, {infill_frac}")
    if length_beam > 0 and dataset.kind != "seq2seq":
        raise ConfigError("length and noise beams apply to seq2seq runs only")
    if infill_frac > 0 and dataset.name not in ("mixture", "hmm"):
        raise ConfigError("infilling is scored on datasets with exact conditionals (mixture, hmm)")
    judge_spec = judge_dir or ec.judge
    if judges.is_hf_spec(rerank_dir):
        raise ConfigError(f"--rerank takes a catdiff AR run directory, not {rerank_dir!r}")
    for flag, used in (("--judge hf:", judges.is_hf_spec(judge_spec)), ("--mauve", mauve)):
        if used and dataset.kind != "text":
            raise ConfigError(f"{flag} scores text samples; {dataset.name!r} runs are {dataset.kind}, not text "
                              "(a catdiff AR run directory can judge them: --judge RUN_DIR)")
    if mauve and num_samples < judges.MAUVE_MIN_SAMPLES:
        raise ConfigError(f"--mauve needs --num-samples >= {judges.MAUVE_MIN_SAMPLES}; got {num_samples}")
    beams = None
    if length_beam > 0:
        beams = {"length_model": length_predictor(out_dir, dataset, method.device), "length_beam": length_beam,
                 "noise_beam": noise_beam, "rerank": load_judge(rerank_dir, device) if rerank_dir else None}
    judge = load_judge(judge_spec, device, progress) if judge_spec else None
    mauve_fn = mauve_scorer(dataset, num_samples, mauve_encoder, device, progress) if mauve else None
    result = {"run": str(run_dir), "method": method.name, "dataset": dataset.name,
              "likelihood": likelihood(method, dataset, "test", ec.nelbo_passes, ec.max_examples, ec.batch_size,
                                        seed=seed, amp=ec.amp)}
    if judge_spec:
        result["judge"] = str(judge_spec)
    if mauve:
        result["mauve_encoder"] = mauve_encoder
    result["samples"] = step_sweep(method, dataset, steps_list, scfg, num_samples, judge, progress, beams, mauve_fn)
    if beams:
        result["beams"] = {"length_beam": length_beam, "noise_beam": noise_beam, "rerank": rerank_dir}
    if infill_frac > 0:
        result["infill"] = [infill_report(method, dataset, with_steps(scfg, k), num_samples, infill_frac, seed)
                            for k in steps_list]
    Path(out_dir, f"{out_name}.json").write_text(json.dumps(result, indent=1))
    Path(out_dir, f"{out_name}.md").write_text(render(result))
    return result


def mauve_scorer(dataset, n: int, encoder: str = "hf:gpt2-large", device: str = "auto", progress: bool = False):
    """A callable texts -> MAUVE against the first n rows of the test split (decoded), whose
    features are computed once by the `encoder` (judges.HFEncoder)."""
    refs = [dataset.decode(row) for row in dataset.head("test", n)]
    if len(refs) < judges.MAUVE_MIN_SAMPLES:
        raise ConfigError(f"--mauve needs at least {judges.MAUVE_MIN_SAMPLES} held-out rows; the test split of "
                          f"{dataset.name!r} has {len(refs)}")
    enc = judges.load_encoder(encoder, device, progress=progress)
    q = enc.features(refs)
    return lambda texts: judges.mauve_score(enc.features(texts), q)


def length_predictor(run_dir: str | Path, dataset, device):
    """RUN/length.pt, fitted on the run's dataset the first time it is asked for."""
    from .length import LengthPredictor, fit_length_predictor

    path = Path(run_dir) / "length.pt"
    if path.is_file():
        model = LengthPredictor.load(path).to(device)
        if model.shape["src_len"] != dataset.src_len or model.shape["tgt_len"] != dataset.tgt_len:
            raise CheckpointError(f"{path} was fitted on another canvas; delete it to refit")
        return model.eval()
    model, acc = fit_length_predictor(dataset, device=device)
    model.save(path)
    print(f"fitted a length predictor (validation accuracy {acc:.3f}) → {path}", file=sys.stderr)
    return model


def render(result: dict) -> str:
    lik = result["likelihood"]
    lines = [f"# {result['method']} on {result['dataset']}", "",
             metrics.format_table([lik], [k for k in ("n", "nelbo_nats", "nelbo_nats_se", "bits_per_token",
                                                      "ppl_bound", "nelbo_gap", "loss", "loss_se") if k in lik]), ""]
    rows = result["samples"]
    if rows:
        cols = ["steps", "nfe"] + [k for k in ("w2", "sample_nll", "excess", "coherence", "component_kl",
                                              "component_entropy", "state_kl", "state_entropy", "shift_kl",
                                              "shift_entropy", "fd_digits",
                                              "fd_digits_train", "gen_ppl", "unigram_entropy", "mauve", "distinct_2",
                                              "exact_match", "token_accuracy", "length_accuracy", "bleu",
                                              "chrf") if k in rows[0]]
        lines.append(metrics.format_table(rows, cols + ["sec_per_sample"]))
    if result.get("infill"):
        lines += ["", "Infilling (exact -log p(infill | fixed), nats per sequence):", "",
                  metrics.format_table(result["infill"], ["steps", "nfe", "fixed_frac", "infill_nll", "infill_entropy",
                                                          "infill_entropy_se", "infill_excess"])]
    return "\n".join(lines) + "\n"


__all__ = ["load_run", "likelihood", "draw_samples", "step_sweep", "evaluate_run", "render", "load_judge"]
