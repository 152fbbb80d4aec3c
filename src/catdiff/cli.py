"""The `catdiff` command line: train | sample | eval | diagnose | list. Parses arguments and reports every
error in one line on stderr with exit code 2 (a traceback only with CATDIFF_DEBUG=1); all work is
delegated to the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from .errors import CatdiffError, ConfigError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130


class UsageError(CatdiffError):
    """A command line argparse refuses (unknown flag, bad value, missing argument)."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing its usage block and exiting, so that a
    bad argument gets the same one-line error as every other mistake."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _cmd_train(args) -> int:
    from .config import load_config
    from .train import train

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.out_dir is not None:
        overrides.append(f"train.out_dir={args.out_dir}")
    cfg = load_config(args.config, overrides)
    summary = train(cfg, resume=args.resume, force=args.force)
    print(json.dumps(summary))
    if summary["status"] == "interrupted":
        print(f"catdiff: interrupted at step {summary['step']}; checkpoint saved in {cfg.train.out_dir}, "
              "continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _sampler_fields() -> dict[str, dataclasses.Field]:
    """Every sampler option of every family (samplers/<family>.py), by name, in a stable order."""
    from . import registry
    from .samplers.base import SampleOptions

    out: dict[str, dataclasses.Field] = {}
    for family in registry.SAMPLERS:
        for obj in vars(registry.sampler_family(family)).values():
            if isinstance(obj, type) and issubclass(obj, SampleOptions):
                for f in dataclasses.fields(obj):
                    out.setdefault(f.name, f)
    return out


def _add_sampler_flags(parser, exclude: set[str]) -> None:
    """One flag per sampler option (help, type and choices from the options dataclasses); a flag
    that is not given stays out of the namespace, so only what the user typed overrides the run."""
    for name, f in _sampler_fields().items():
        if name in exclude or not f.metadata.get("cli", True):
            continue
        flag = "--" + name.replace("_", "-")
        kw = {"default": argparse.SUPPRESS, "help": f.metadata.get("help"), "dest": name}
        tp = f.type if isinstance(f.type, type) else str(f.type)
        if "bool" in str(tp):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = int if "int" in str(tp) else float if "float" in str(tp) else str
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kw)


def _sample_overrides(args, exclude: set[str] = frozenset()) -> dict:
    """The sampler flags the user gave (config.override_sample_options checks that they apply)."""
    return {k: getattr(args, k) for k in _sampler_fields() if k not in exclude and hasattr(args, k)}


def _cmd_prepare(args) -> int:
    """Tokenize a text config's corpus into its memory-mapped cache (what `train` does when the
    cache is missing), with a progress bar; prints the manifest's figures as JSON."""
    from .config import load_config
    from .data.corpus import prepare

    cfg = load_config(args.config, list(args.overrides))
    d = cfg.data
    if d["name"] == "hub_text":  # every split of a hub corpus (or its local copy) into the cache
        from .build import build_dataset

        ds = build_dataset(d)
        print(json.dumps({k: {f: m[f] for f in ("folder", "vocab_size", "n_tokens", "n_docs", "seconds")}
                          for k, m in ds.manifests.items()}))
        return 0
    if d["name"] != "text":
        raise ConfigError(f"catdiff prepare tokenizes text corpora (data.name=text or hub_text); "
                          f"{d['name']!r} needs no preparing")
    corpus = prepare(d["path"], d["tokenizer"], tokenizer_state=d.get("tokenizer_state"), cache_dir=d["token_cache"],
                     text_field=d["text_field"], max_chars=d["max_chars"], bpe_vocab_size=d["bpe_vocab_size"],
                     progress=not args.quiet)
    m = corpus.manifest
    mb = sum(f["size"] for f in m["source"]["identity"]) / 1e6
    print(json.dumps({"folder": str(corpus.folder), "vocab_size": m["vocab_size"], "dtype": m["dtype"],
                      "n_tokens": m["n_tokens"], "n_docs": m["n_docs"], "source_mb": round(mb, 3),
                      "seconds": round(m["seconds"], 3), "mb_per_s": round(mb / max(m["seconds"], 1e-9), 3),
                      "tokens_per_s": round(m["n_tokens"] / max(m["seconds"], 1e-9))}))
    return 0


def _cmd_sample(args) -> int:
    from .build import load_run
    from .config import override_sample_options
    from .evaluate import draw_samples

    overrides = _sample_overrides(args)
    cfg, method, dataset = load_run(args.run, args.device, use_ema=not args.no_ema)
    sc = override_sample_options(cfg, overrides, method.name)
    condition = _condition_from_args(args, dataset, method.seq_len)
    out, sec = draw_samples(method, sc.num_samples, sc, condition)
    x = out.samples
    if dataset.kind == "image" or hasattr(dataset, "save_grid"):
        path = Path(args.out or Path(args.run) / f"samples_steps{getattr(sc, 'steps', 'all')}_seed{sc.seed}.png")
        dataset.save_grid(x, path)
        print(f"wrote {len(x)} samples to {path}")
    else:
        text = "\n".join(dataset.decode(row) for row in x)
        if args.out:
            Path(args.out).write_text(text + "\n")
            print(f"wrote {len(x)} samples to {args.out}")
        else:
            print(text)
    print(f"steps={getattr(sc, 'steps', None)} nfe={out.nfe} sec/sample={sec:.4g}", file=sys.stderr)
    return 0


def _condition_from_args(args, dataset, seq_len: int):
    """--prompt (a prefix; for seq2seq runs, the source) or --infill (a template whose '_' are free
    positions) as a Condition; text datasets encode with their tokenizer, token datasets read
    space-separated ids, vector datasets numbers."""
    from .conditioning import Condition, from_template, template
    from .errors import ConfigError

    if args.prompt is None and args.infill is None:
        return None
    if args.prompt is not None and args.infill is not None:
        raise ConfigError("give --prompt or --infill, not both")
    try:
        if dataset.kind == "seq2seq":
            if args.infill is not None:
                raise ConfigError("a seq2seq run takes its source as --prompt")
            return Condition.leading(dataset.prompt_canvas(args.prompt)[None], dataset.cond_len)
        if dataset.kind == "text":
            encode = dataset.encode
        elif dataset.kind == "vector":
            def encode(seg):
                return [float(v) for v in seg.split()]
        else:
            def encode(seg):
                return [int(v) for v in seg.split()]
        cond = from_template(list(encode(args.prompt)), seq_len) if args.prompt is not None \
            else template(args.infill, encode, seq_len)
        cond.check(seq_len, None if dataset.kind == "vector" else dataset.vocab_size)
        return cond
    except (ValueError, KeyError) as e:
        raise ConfigError(f"cannot read the condition: {e}") from None


def _cmd_eval(args) -> int:
    from .evaluate import evaluate_run, render

    try:
        steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    except ValueError:
        raise ConfigError(f"--steps takes comma-separated integers, e.g. 1,4,16; got {args.steps!r}") from None
    overrides = _sample_overrides(args, exclude=EVAL_OWN)
    res = evaluate_run(args.run, steps, args.num_samples, args.seed, args.device, args.judge,
                       progress=not args.quiet, length_beam=args.length_beam, noise_beam=args.noise_beam,
                       rerank_dir=args.rerank, infill_frac=args.infill_frac, sample_overrides=overrides,
                       allow_changed_data=args.allow_changed_data)
    print(render(res))
    print(f"wrote {Path(args.run) / 'eval.json'} and eval.md", file=sys.stderr)
    return 0


def _cmd_diagnose(args) -> int:
    from .diagnose import diagnose_run

    res = diagnose_run(args.run, n_t=args.points, max_examples=args.max_examples, seed=args.seed, device=args.device)
    if "curvature" in res:  # EDM / DisCo-Diff
        print(f"{res['method']}: mean curvature {sum(k for _, k in res['curvature']) / len(res['curvature']):.4g}")
        print("E|dG/dx|^2 by sigma: " + "  ".join(f"{s:.3g}:{j:.3g}" for s, j in res["jacobian"]))
        print(f"wrote {Path(args.run) / 'diagnostics.json'} and diagnostics.png", file=sys.stderr)
        return 0
    f = res["final"]
    print(f"{res['method']}: pairwise {f['emb_pairwise']:.4g}  norm {f['emb_norm']:.4g}  rank {f['emb_rank']:.3g}  "
          f"decodable {f['emb_decodable']:.3g}")
    print("CE(t) nats/token: " + "  ".join(f"{t:.2f}:{c:.3f}" for t, c in zip(res["t"], res["ce"], strict=True)))
    print(f"wrote {Path(args.run) / 'diagnostics.json'} and diagnostics.png", file=sys.stderr)
    return 0


def _cmd_list(args) -> int:
    from . import registry
    from .models.transformer import PRESETS

    print("methods:  " + ", ".join(sorted(registry.METHODS)))
    print("datasets: " + ", ".join(sorted(registry.DATASETS)))
    print("samplers (family: kinds):")
    for family in registry.SAMPLERS:
        print(f"  {family}: {', '.join(registry.sampler_family(family).KINDS)}")
    print("presets:  " + ", ".join(f"{k} {v}" for k, v in PRESETS.items()))
    return 0


EVAL_OWN = {"steps", "num_samples", "seed", "batch_size"}  # eval's own flags of those names (a list of steps, ...)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="catdiff", description="Diffusion models on categorical data.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config and key=value overrides")
    t.add_argument("config", help="YAML config, e.g. configs/mdlm/mixture.yaml")
    t.add_argument("overrides", nargs="*", help="overrides like train.max_steps=100 model.preset=small")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in train.out_dir")
    t.add_argument("--force", action="store_true",
                   help="start a new run in a non-empty train.out_dir (its catdiff files moved aside, never deleted)")
    t.add_argument("--max-steps", type=int, default=None, help="shortcut for train.max_steps=N")
    t.add_argument("--out-dir", default=None, help="shortcut for train.out_dir=PATH")
    t.set_defaults(func=_cmd_train)

    pr = sub.add_parser("prepare", help="tokenize a text config's corpus once into its memory-mapped cache")
    pr.add_argument("config", help="YAML config with data.name=text, e.g. configs/mdlm/kjv.yaml")
    pr.add_argument("overrides", nargs="*", help="overrides like data.tokenizer=gpt2 data.path=corpus.txt")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="run directory (train.out_dir)")
    _add_sampler_flags(s, exclude=set())
    s.add_argument("--no-ema", action="store_true", help="use raw weights instead of the EMA")
    s.add_argument("--prompt", default=None, help="fixed prefix (text, or space-separated token ids); "
                                                  "for seq2seq runs the source")
    s.add_argument("--infill", default=None, help="template with '_' for each free position, e.g. 'The ___ of ___'")
    s.add_argument("--out", default=None, help="output file (text, or PNG for images)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=_cmd_sample)

    e = sub.add_parser("eval", help="likelihood bound and sample metrics of a trained run")
    e.add_argument("run")
    e.add_argument("--steps", default=None, help="comma-separated step counts, e.g. 1,4,16,64")
    e.add_argument("--num-samples", type=int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--judge", default=None, help="run directory of an AR judge for gen-PPL")
    e.add_argument("--length-beam", type=int, default=0, help="seq2seq: decode this many predicted target lengths")
    e.add_argument("--noise-beam", type=int, default=1, help="seq2seq: draws per length (with --length-beam)")
    e.add_argument("--rerank", default=None, help="seq2seq: AR run that reranks the beam's candidates")
    e.add_argument("--infill-frac", type=float, default=0.0,
                   help="mixture/hmm: also score infilling with this fraction of positions fixed (exact likelihood)")
    _add_sampler_flags(e, exclude=EVAL_OWN)
    e.add_argument("--device", default="auto")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate on the run's corpus as it is now, even if it changed since training")
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser("diagnose", help="diagnostics (JSON + PNG): embedding collapse of an embedding-diffusion run, "
                                            "ODE curvature/Jacobian/loss(σ) of an EDM or DisCo-Diff run")
    d.add_argument("run")
    d.add_argument("--points", type=int, default=21, help="number of t values for CE(t)")
    d.add_argument("--max-examples", type=int, default=256)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.set_defaults(func=_cmd_diagnose)

    ls = sub.add_parser("list", help="list methods, datasets, samplers and presets")
    ls.set_defaults(func=_cmd_list)
    return p


def _parse(argv):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`train cfg --max-steps 5 model.preset=small`)
    is_override = [("=" in a and not a.startswith("-")) for a in extra]
    if extra and getattr(args, "overrides", None) is not None and all(is_override):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    return args


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr: exit 2 for a user's mistake or an
    unusable environment (files, disk), 1 for a catdiff bug, 130 when interrupted."""
    debug = os.environ.get("CATDIFF_DEBUG", "") not in ("", "0")
    try:
        args = _parse(argv)
        return args.func(args)
    except KeyboardInterrupt:
        print("catdiff: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CatdiffError, OSError) as e:
        if debug:
            raise
        if isinstance(e, OSError) and e.strerror:
            where = f": {e.filename}" if e.filename else ""
            msg = f"{e.strerror}{where}"
        else:
            msg = str(e)
        print(f"catdiff: error: {_one_line(msg)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:  # a bug of ours: one line, the traceback on demand
        if debug:
            raise
        print(f"catdiff: internal error: {type(e).__name__}: {_one_line(e)} "
              "(CATDIFF_DEBUG=1 shows the traceback; please report it)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
