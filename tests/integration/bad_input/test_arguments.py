"""Bad arguments and config values (issue 15, items 3, 4, 5, 9 and 10): each gets one line on
stderr, exit code 2, and the run it was given is left exactly as it was. Run-folder, checkpoint
and divergence probes live beside this file."""

from pathlib import Path

import pytest
from helpers import assert_one_line_error, folder_state, train_mixture_runs

from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=8", "train.progress=false",
        "train.max_steps=3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs: masked (mdlm), embedding (difformer), autoregressive (ar), text (mdlm on a corpus)."""
    base = tmp_path_factory.mktemp("runs")
    out = train_mixture_runs(base, TINY)
    corpus = base / "corpus.txt"
    corpus.write_text("in the beginning was the word and the word was with god\n" * 80)
    out["text"] = base / "text"
    assert main(["train", str(ROOT / "configs/mdlm/kjv.yaml"), *TINY, f"data.path={corpus}", "data.seq_len=32",
                 f"train.out_dir={out['text']}"]) == 0
    out["corpus"] = corpus
    return out


def refused(capsys, folder, argv, *needles):
    """`catdiff argv` exits 2 with one error line holding the needles, and `folder` is unchanged."""
    capsys.readouterr()
    before = folder_state(folder) if folder is not None and Path(folder).exists() else None
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, *needles)
    if before is not None:
        assert folder_state(folder) == before


def test_3_negative_grad_clip_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    refused(capsys, None, ["train", str(ROOT / "configs/mdlm/mixture.yaml"), *TINY, "train.grad_clip=-1",
                           f"train.out_dir={out}"], "train.grad_clip must be >= 0")
    assert not out.exists()


def test_4_top_p_zero_is_refused(runs, capsys):
    refused(capsys, runs["mdlm"], ["sample", str(runs["mdlm"]), "--top-p", "0"], "sample.top_p must be in (0, 1]")


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "0"], "sample.steps must be in [1, 100000], got 0"),
    (["--num-samples", "0"], "sample.num_samples must be >= 1, got 0"),
    (["--temperature", "-1"], "sample.temperature must be >= 0 (0 = greedy)"),
])
def test_5_zero_and_negative_values_are_refused_not_replaced(runs, capsys, argv, needle):
    refused(capsys, runs["mdlm"], ["sample", str(runs["mdlm"]), *argv], needle)


def test_5_an_ar_run_refuses_a_step_budget(runs, capsys):
    refused(capsys, runs["ar"], ["sample", str(runs["ar"]), "--steps", "-3"], "--steps does not apply to ar runs")


def test_5_zero_temperature_is_documented_greedy_and_deterministic(runs, capsys):
    capsys.readouterr()
    outs = []
    for seed in ("1", "2"):
        assert main(["sample", str(runs["ar"]), "--temperature", "0", "--num-samples", "3", "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]  # greedy: the seed does not matter


@pytest.mark.parametrize("override, needle", [
    ("train.lr=nan", "train.lr: expected a finite number, got nan"),
    ("train.lr=inf", "train.lr: expected a finite number"),
    ("train.ckpt_every=0", "train.ckpt_every must be >= 1"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("model.dropout=2", "model.dropout must be in [0.0, 1.0)"),
    ("train.device=tpu", "train.device must be auto, cpu, cuda, cuda:N or mps"),
    ("train.ema=1", "train.ema must be in [0.0, 1.0)"),
    ("train.betas=[0.9,1.5]", "train.betas must each be in [0, 1)"),
    ("eval.steps=[4,0]", "eval.steps must all be >= 1"),
    ("sample.steps=0", "sample.steps must be in [1, 100000]"),
    ("sample.clamp=true", "unknown config key 'sample.clamp'"),
])
def test_9_bad_config_values_fail_before_any_file_is_written(tmp_path, capsys, override, needle):
    out = tmp_path / "run"
    refused(capsys, None, ["train", str(ROOT / "configs/mdlm/mixture.yaml"), *TINY, override,
                           f"train.out_dir={out}"], needle)
    assert not out.exists()


def test_9_a_binary_config_file(tmp_path, capsys):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    refused(capsys, tmp_path, ["train", str(binary)], "not a text file")


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "-3"], "sample.steps must be in [1, 100000], got -3"),
    (["--num-samples", "-2"], "sample.num_samples must be >= 1, got -2"),
    (["--top-k", "0"], "sample.top_k must be >= 1, got 0"),
    (["--top-k", "-1"], "sample.top_k must be >= 1, got -1"),
    (["--infill", "3 _ 99"], "fixed tokens must lie in [0, 8)"),
    (["--prompt", "-1 2"], "fixed tokens must lie in [0, 8)"),
    (["--prompt", "1 x"], "cannot read the condition"),
    (["--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_9_bad_sample_arguments(runs, capsys, argv, needle):
    refused(capsys, runs["mdlm"], ["sample", str(runs["mdlm"]), *argv], needle)


@pytest.mark.parametrize("steps, needle", [
    ("0", "sample.steps must be in [1, 100000], got 0"),
    ("4,-3", "sample.steps must be in [1, 100000], got -3"),
    ("abc", "--steps takes comma-separated integers"),
])
def test_9_bad_eval_steps_fail_before_any_work(runs, capsys, steps, needle):
    refused(capsys, runs["mdlm"], ["eval", str(runs["mdlm"]), "--steps", steps, "--quiet"], needle)


def test_9_an_unknown_sampler_of_an_embedding_run(runs, capsys):
    refused(capsys, runs["difformer"], ["sample", str(runs["difformer"]), "--sampler", "foo"],
            "argument --sampler: invalid choice: 'foo'")


def test_9_a_corpus_changed_since_training(runs, capsys):
    """A run evaluates from its prepared cache; once the cache is gone, a corpus edited since
    training (here: new characters) is refused in one line rather than silently re-read."""
    import json
    import shutil

    original = runs["corpus"].read_text()
    folder = json.loads((runs["text"] / "dataset.json").read_text())["kwargs"]["manifest"]["folder"]
    try:
        runs["corpus"].write_text(original + "§ new characters ü\n")
        shutil.rmtree(folder)
        refused(capsys, runs["text"], ["eval", str(runs["text"]), "--steps", "2", "--quiet"],
                "its content changed since it was prepared", "--allow-changed-data")
    finally:
        runs["corpus"].write_text(original)


def test_9_hub_text_offline_names_the_local_copy_key(tmp_path, capsys, monkeypatch):
    from catdiff.data import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    out = tmp_path / "run"
    refused(capsys, None, ["train", str(ROOT / "configs/mdlm/mixture.yaml"), *TINY, "data.name=hub_text",
                           "data.corpus=text8", f"train.out_dir={out}"], "cannot reach huggingface.co",
            "data.local_dir=DIR")
    assert not out.exists()


@pytest.mark.parametrize("run, argv, needle", [
    ("mdlm", ["--sampler", "heun"], "--sampler does not apply to mdlm runs"),
    ("mdlm", ["--guidance", "1.0"], "--guidance does not apply to mdlm runs"),
    ("mdlm", ["--clamp"], "--clamp does not apply to mdlm runs"),
    ("ar", ["--order", "confidence"], "--order does not apply to ar runs"),
    ("difformer", ["--latent-steps", "2"], "--latent-steps does not apply to difformer runs"),
    ("mdlm", ["--steps", "1000000000"], "sample.steps must be in [1, 100000], got 1000000000"),
])
def test_10_flags_that_do_not_apply_and_unbounded_budgets(runs, capsys, run, argv, needle):
    refused(capsys, runs[run], ["sample", str(runs[run]), *argv], needle)


def test_10_eval_refuses_flags_of_another_family(runs, capsys):
    refused(capsys, runs["mdlm"], ["eval", str(runs["mdlm"]), "--clamp", "--quiet"], "--clamp does not apply")


def test_an_internal_error_is_one_line_and_a_traceback_only_on_demand(runs, capsys, monkeypatch):
    import catdiff.pipeline

    def boom(*a, **k):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(catdiff.pipeline.Pipeline, "draw", boom)
    capsys.readouterr()
    assert main(["sample", str(runs["mdlm"])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: planted bug" in err and "Traceback" not in err
    monkeypatch.setenv("CATDIFF_DEBUG", "1")
    with pytest.raises(RuntimeError, match="planted bug"):
        main(["sample", str(runs["mdlm"])])
