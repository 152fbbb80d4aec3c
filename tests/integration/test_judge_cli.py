"""`catdiff eval --judge hf:... --mauve` from the command line: a tiny text run judged by a tiny GPT-2
saved to a folder (gen-PPL beside the unigram entropy, and MAUVE against held-out text); a name that
is neither a folder nor in the local cache, and an hf judge on a non-text run, refused in one line."""

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error

from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=8", "train.progress=false",
        "train.log_every=5", "eval.max_examples=32", "eval.nelbo_passes=1"]
VERSES = [f"{i}: and god said let there be {'light' if i % 2 else 'water'} and there was\n" for i in range(600)]


def tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 (16 positions) with a byte-level BPE tokenizer, saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(VERSES, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    hf_tok = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                               unk_token="<|endoftext|>")
    torch.manual_seed(0)
    eos = hf_tok.eos_token_id
    GPT2LMHeadModel(GPT2Config(vocab_size=len(hf_tok), n_layer=2, n_embd=32, n_head=2, n_positions=16,
                               bos_token_id=eos, eos_token_id=eos)).save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("judge-cli")
    (base / "corpus.txt").write_text("".join(VERSES))
    run = base / "run"
    assert main(["train", str(ROOT / "configs/mdlm/kjv.yaml"), *TINY, f"data.path={base / 'corpus.txt'}",
                 "data.seq_len=32", "data.test_frac=0.05", "train.max_steps=5", f"train.out_dir={run}"]) == 0
    return run


def test_eval_with_an_hf_judge_and_mauve(text_run, tmp_path, capsys):
    judge = tiny_gpt2(tmp_path / "gpt2")
    capsys.readouterr()
    assert main(["eval", str(text_run), "--judge", f"hf:{judge}", "--mauve", "--mauve-encoder", f"hf:{judge}",
                 "--steps", "4", "--num-samples", "16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "gen-PPL" in out and "unigram entropy (bits)" in out and "MAUVE" in out
    res = json.loads((text_run / "eval.json").read_text())
    assert res["judge"] == f"hf:{judge}" and res["mauve_encoder"] == f"hf:{judge}"
    (row,) = res["samples"]
    assert row["gen_ppl"] > 1 and row["n_tokens"] > 0 and row["nll_per_token"] > 0
    assert 0 < row["unigram_entropy"] and 0 < row["mauve"] <= 1


def test_unusable_hf_judges_are_one_line_errors(text_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    assert main(["eval", str(text_run), "--judge", "hf:not-a-model-xyz", "--steps", "2", "--num-samples", "4",
                 "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err, "hf:not-a-model-xyz", "not in the local Hugging Face cache",
                          "hub is not reachable")
    assert main(["eval", str(text_run), "--mauve", "--mauve-encoder", "hf:not-a-model-xyz", "--steps", "2",
                 "--num-samples", "4", "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err, "MAUVE encoder", "not in the local Hugging Face cache")
    assert main(["eval", str(text_run), "--mauve", "--steps", "2", "--num-samples", "2", "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--num-samples >= 4")
    digits = tmp_path / "digits"
    assert main(["train", str(ROOT / "configs/mdlm/digits.yaml"), "model.d_model=32", "model.n_layers=1",
                 "model.n_heads=2", "train.batch_size=16", "train.progress=false", "train.max_steps=1",
                 f"train.out_dir={digits}"]) == 0
    capsys.readouterr()
    for extra in (["--judge", "hf:gpt2"], ["--mauve"]):
        assert main(["eval", str(digits), *extra, "--steps", "2", "--num-samples", "4", "--quiet"]) == 2
        assert_one_line_error(capsys.readouterr().err, "not text", "digits")


def test_a_catdiff_ar_run_still_judges_token_samples(text_run, tmp_path, capsys):
    ar = tmp_path / "ar"
    assert main(["train", str(ROOT / "configs/ar/kjv.yaml"), *TINY, f"data.path={text_run.parent / 'corpus.txt'}",
                 "data.seq_len=32", "data.test_frac=0.05", "train.max_steps=3", f"train.out_dir={ar}"]) == 0
    capsys.readouterr()
    assert main(["eval", str(text_run), "--judge", str(ar), "--steps", "2", "--num-samples", "4", "--quiet"]) == 0
    (row,) = json.loads((text_run / "eval.json").read_text())["samples"]
    assert row["gen_ppl"] > 1 and row["n_tokens"] == 4 * 32 and row["unigram_entropy"] > 0 and "mauve" not in row
