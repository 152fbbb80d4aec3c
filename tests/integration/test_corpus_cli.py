"""Issue 16 from the command line: a GPT-2 style BPE `tokenizer.json` corpus prepared, trained,
sampled and evaluated; a run that stands on its own when its corpus moves; a changed corpus
refused in one line."""

import json
import shutil
from pathlib import Path

import numpy as np
from helpers import assert_one_line_error

from catdiff.cli import main
from catdiff.data.tokenizers import load_pretrained

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=8", "train.progress=false",
        "train.log_every=5", "eval.max_examples=32", "eval.nelbo_passes=1"]
VERSES = [f"{i}: and god said let there be {'light' if i % 2 else 'water'} and there was\n" for i in range(600)]


def gpt2_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(VERSES, trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         show_progress=False))
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def test_gpt2_style_bpe_corpus_prepares_trains_samples_and_evaluates(tmp_path, capsys):
    tok_path = gpt2_tokenizer(tmp_path)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": "".join(VERSES[i:i + 5])}) + "\n" for i in range(0, 600, 5)))
    data = [f"data.path={docs}", f"data.tokenizer={tok_path}", "data.seq_len=32"]
    cfg = str(ROOT / "configs/mdlm/kjv.yaml")
    assert main(["prepare", cfg, *data, "--quiet"]) == 0
    prep = json.loads(capsys.readouterr().out)
    assert prep["n_docs"] == 120 and prep["vocab_size"] == 320 and prep["n_tokens"] > 0
    run = tmp_path / "run"
    assert main(["train", cfg, *TINY, *data, "train.max_steps=20", f"train.out_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--steps", "4", "--num-samples", "3", "--out", str(tmp_path / "s.txt")]) == 0
    assert main(["eval", str(run), "--steps", "2", "--num-samples", "8", "--quiet"]) == 0
    assert json.loads((run / "eval.json").read_text())["likelihood"]["bits_per_token"] > 0
    tok = load_pretrained(str(tok_path))
    from catdiff.build import load_run

    _, method, ds = load_run(run)
    x = method.sample(4, method.sample_options(steps=4)).samples
    for row in x:  # decoding is lossless: the text of a sample re-encodes to ids that decode to it
        text = ds.decode(row)
        assert tok.decode(tok.encode(text)) == text
    # a held-out document re-encodes to exactly its ids (canonical tokenizations round-trip)
    first = "".join(VERSES[595:600])
    assert np.array_equal(tok.encode(tok.decode(tok.encode(first))), tok.encode(first))


def test_a_run_stands_on_its_own_and_a_changed_corpus_is_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(VERSES))
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    assert main(["train", str(ROOT / "configs/mdlm/kjv.yaml"), *TINY, f"data.path={corpus}", "data.seq_len=32",
                 f"data.token_cache={cache}", "train.max_steps=3", f"train.out_dir={run}"]) == 0
    moved = tmp_path / "elsewhere.txt"
    corpus.rename(moved)  # the corpus is gone: sampling needs only the run, eval reads the cache
    capsys.readouterr()
    assert main(["sample", str(run), "--steps", "2", "--num-samples", "2"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["eval", str(run), "--steps", "2", "--num-samples", "4", "--quiet"]) == 0
    moved.rename(corpus)
    corpus.write_text("".join(VERSES).replace("light", "night"))  # changed, and the cache removed
    shutil.rmtree(cache)
    capsys.readouterr()
    before = (run / "eval.json").read_bytes()
    assert main(["eval", str(run), "--steps", "2", "--num-samples", "4", "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err, "its content changed since it was prepared", "--allow-changed-data")
    assert (run / "eval.json").read_bytes() == before
    assert main(["eval", str(run), "--steps", "2", "--num-samples", "4", "--quiet", "--allow-changed-data"]) == 0
