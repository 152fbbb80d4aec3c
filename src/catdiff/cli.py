"""The `catdiff` command line: train | prepare | sample | export | push | eval | diagnose | plot | list.
Parses arguments and reports every error in one line on stderr with exit code 2 (a traceback only
with CATDIFF_DEBUG=1); all work is delegated to the library."""

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
    from .trainer import train

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
    from .pipeline import load

    pipe = load(args.run, args.device, use_ema=not args.no_ema)
    opts = pipe.sample_options(**_sample_overrides(args))
    out, sec = pipe.draw(opts.num_samples, opts, pipe.condition(args.prompt, args.infill))
    x, dataset = out.samples, pipe.dataset
    if dataset.kind == "image" or hasattr(dataset, "save_grid"):
        name = f"samples_steps{getattr(opts, 'steps', 'all')}_seed{opts.seed}.png"
        local = Path(args.run)
        path = Path(args.out) if args.out else (local / name if local.is_dir() else Path(name))
        dataset.save_grid(x, path)
        print(f"wrote {len(x)} samples to {path}")
    else:
        text = "\n".join(pipe.decode(x))
        if args.out:
            Path(args.out).write_text(text + "\n")
            print(f"wrote {len(x)} samples to {args.out}")
        else:
            print(text)
    print(f"steps={getattr(opts, 'steps', None)} nfe={out.nfe} sec/sample={sec:.4g}", file=sys.stderr)
    return 0


def _cmd_export(args) -> int:
    from .pipeline import export_run

    out = export_run(args.run, args.out, use_ema=not args.no_ema, license=args.license, device=args.device)
    print(f"exported {args.run} to {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


def _cmd_push(args) -> int:
    from .pipeline import push

    url = push(args.run, args.repo_id, private=args.private or None, license=args.license, device=args.device)
    print(f"pushed {args.run} to {args.repo_id}: {url}")
    return 0


def _cmd_eval(args) -> int:
    from .evaluate import evaluate_run, render
    from .export import output_dir

    try:
        steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    except ValueError:
        raise ConfigError(f"--steps takes comma-separated integers, e.g. 1,4,16; got {args.steps!r}") from None
    overrides = _sample_overrides(args, exclude=EVAL_OWN)
    res = evaluate_run(args.run, steps, args.num_samples, args.seed, args.device, args.judge,
                       progress=not args.quiet, length_beam=args.length_beam, noise_beam=args.noise_beam,
                       rerank_dir=args.rerank, infill_frac=args.infill_frac, sample_overrides=overrides,
                       allow_changed_data=args.allow_changed_data, mauve=args.mauve,
                       mauve_encoder=args.mauve_encoder)
    print(render(res))
    print(f"wrote {output_dir(args.run) / 'eval.json'} and eval.md", file=sys.stderr)
    return 0


def _cmd_diagnose(args) -> int:
    from .diagnose import diagnose_run
    from .export import output_dir

    res = diagnose_run(args.run, n_t=args.points, max_examples=args.max_examples, seed=args.seed, device=args.device)
    if "curvature" in res:  # EDM / DisCo-Diff
        print(f"{res['method']}: mean curvature {sum(k for _, k in res['curvature']) / len(res['curvature']):.4g}")
        print("E|dG/dx|^2 by sigma: " + "  ".join(f"{s:.3g}:{j:.3g}" for s, j in res["jacobian"]))
        print(f"wrote {output_dir(args.run) / 'diagnostics.json'} and diagnostics.png", file=sys.stderr)
        return 0
    f = res["final"]
    print(f"{res['method']}: pairwise {f['emb_pairwise']:.4g}  norm {f['emb_norm']:.4g}  rank {f['emb_rank']:.3g}  "
          f"decodable {f['emb_decodable']:.3g}")
    print("CE(t) nats/token: " + "  ".join(f"{t:.2f}:{c:.3f}" for t, c in zip(res["t"], res["ce"], strict=True)))
    print(f"wrote {output_dir(args.run) / 'diagnostics.json'} and diagnostics.png", file=sys.stderr)
    return 0


def _cmd_plot(args) -> int:
    from .plot import plot_runs

    out = plot_runs(args.runs, args.out, x=args.x)
    print(f"wrote {out}", file=sys.stderr)
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


RUN_HELP = ("a run folder (train.out_dir), one of its checkpoint folders, a folder written by `catdiff export`, "
            "or a hub model hf://owner/name")
DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"
EVAL_OWN = {"steps", "num_samples", "seed", "batch_size"}  # eval's own flags of those names (a list of steps, ...)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="catdiff", description="Diffusion models on categorical data.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                   help="print catdiff's version and exit")
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

    s = sub.add_parser("sample", help="draw samples from a trained run, an exported folder or a hub model")
    s.add_argument("run", help=RUN_HELP)
    _add_sampler_flags(s, exclude=set())
    s.add_argument("--no-ema", action="store_true", help="use raw weights instead of the EMA (runs only)")
    s.add_argument("--prompt", default=None, help="fixed prefix (text, or space-separated token ids); "
                                                  "for seq2seq runs the source")
    s.add_argument("--infill", default=None, help="template with '_' for each free position, e.g. 'The ___ of ___'")
    s.add_argument("--out", default=None, help="output file (text, or PNG for images)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.set_defaults(func=_cmd_sample)

    x = sub.add_parser("export", help="export a run as a shareable folder: config.json, model.safetensors, "
                                      "tokenizer, README.md model card")
    x.add_argument("run", help=RUN_HELP)
    x.add_argument("out", help="new (or empty) folder to write")
    x.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    x.add_argument("--license", default="mit", help="license of the weights named in the model card (default: mit)")
    x.add_argument("--device", default="auto", help=DEVICE_HELP)
    x.set_defaults(func=_cmd_export)

    u = sub.add_parser("push", help="export a run and upload it to a Hugging Face hub repository (needs the network "
                                    "and a login: `hf auth login`)")
    u.add_argument("run", help=RUN_HELP)
    u.add_argument("repo_id", help="hub repository, e.g. your-name/mdlm-kjv (created if it does not exist)")
    u.add_argument("--private", action="store_true", help="create the repository as private")
    u.add_argument("--license", default="mit", help="license of the weights named in the model card (default: mit)")
    u.add_argument("--device", default="auto", help=DEVICE_HELP)
    u.set_defaults(func=_cmd_push)

    e = sub.add_parser("eval", help="likelihood bound and sample metrics of a trained run")
    e.add_argument("run", help=RUN_HELP)
    e.add_argument("--steps", default=None, help="comma-separated step counts, e.g. 1,4,16,64")
    e.add_argument("--num-samples", type=int, default=None,
                   help="samples drawn per step count (default: the run's eval.num_samples)")
    e.add_argument("--seed", type=int, default=0, help="seed of the likelihood's noise draws and of the samples")
    e.add_argument("--judge", default=None,
                   help="a catdiff AR run directory, or hf:NAME_OR_PATH for a Hugging Face causal LM "
                        "(gen-PPL; optional extra catdiff[judge])")
    e.add_argument("--mauve", action="store_true",
                   help="text runs: MAUVE between the samples and as many held-out test texts "
                        "(optional extra catdiff[judge])")
    e.add_argument("--mauve-encoder", default="hf:gpt2-large",
                   help="hf:NAME_OR_PATH of the model whose last hidden state at a text's final token is its "
                        "MAUVE feature (default hf:gpt2-large, as in the MAUVE paper)")
    e.add_argument("--length-beam", type=int, default=0, help="seq2seq: decode this many predicted target lengths")
    e.add_argument("--noise-beam", type=int, default=1, help="seq2seq: draws per length (with --length-beam)")
    e.add_argument("--rerank", default=None, help="seq2seq: AR run that reranks the beam's candidates")
    e.add_argument("--infill-frac", type=float, default=0.0,
                   help="mixture/hmm: also score infilling with this fraction of positions fixed (exact likelihood)")
    _add_sampler_flags(e, exclude=EVAL_OWN)
    e.add_argument("--device", default="auto", help=DEVICE_HELP)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate on the run's corpus as it is now, even if it changed since training")
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser("diagnose", help="diagnostics (JSON + PNG): embedding collapse of an embedding-diffusion run, "
                                            "ODE curvature/Jacobian/loss(σ) of an EDM or DisCo-Diff run")
    d.add_argument("run", help=RUN_HELP)
    d.add_argument("--points", type=int, default=21, help="number of t values for CE(t)")
    d.add_argument("--max-examples", type=int, default=256, help="held-out examples the diagnostics average over")
    d.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    d.add_argument("--device", default="auto", help=DEVICE_HELP)
    d.set_defaults(func=_cmd_diagnose)

    pl = sub.add_parser("plot", help="training curves (loss, validation bits, learning rate, gradient norm, "
                                     "tokens/s) of one or more runs, overlaid, as an image")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders (train.out_dir) holding metrics.jsonl")
    pl.add_argument("--out", required=True, help="image file to write: .png (or .pdf, .svg)")
    pl.add_argument("--x", choices=["step", "tokens"], default="step",
                    help="x axis: optimizer steps (default) or tokens seen")
    pl.set_defaults(func=_cmd_plot)

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
        try:
            args = _parse(argv)
        except SystemExit as e:  # argparse's --version action printed the version and exits 0
            if e.code == 0 and "--version" in (sys.argv[1:] if argv is None else argv):
                return 0
            raise
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
