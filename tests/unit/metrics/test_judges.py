"""The standard text judges (catdiff.judges): gen-PPL under a Hugging Face causal LM checked against
a hand computation from the judge's logits (strided windows past its context), independent of the
batch size; MAUVE features as mauve-text computes them; unusable names and missing packages refused
in one line. Every model is a tiny GPT-2 built and saved here (no downloads)."""

import math
import sys

import numpy as np
import pytest
import torch

from catdiff import judges
from catdiff.errors import ConfigError, DataError, MissingExtra

SENTENCES = ["and god said let there be light and there was light",
             "in the beginning was the word and the word was with god",
             "the earth was without form and void and darkness was upon the face of the deep"]
CONTEXT = 16  # n_positions of the tiny judge: most texts below are longer, so striding is exercised


def tiny_gpt2(folder, n_positions: int = CONTEXT, seed: int = 0):
    """A 2-layer GPT-2 with a byte-level BPE tokenizer (EOS = BOS = <|endoftext|>), saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    hf_tok = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                               unk_token="<|endoftext|>")
    torch.manual_seed(seed)
    eos = hf_tok.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(hf_tok), n_layer=2, n_embd=32, n_head=2,
                                       n_positions=n_positions, bos_token_id=eos, eos_token_id=eos))
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def judge(folder):
    return judges.load_causal_lm(f"hf:{folder}", device="cpu")


TEXTS = ["light", "and god said let there be light",
         "in the beginning was the word and the word was with god and god said let there be light",
         SENTENCES[2] * 2, "", "x"]


def hand_nll(model, ids: list[int], context: int) -> tuple[float, int]:
    """Σ -log p(token | window) in float64 by the HF guide's loop (labels -100 outside each window's
    new tokens; https://huggingface.co/docs/transformers/perplexity), and the number scored."""
    stride, n = context // 2, len(ids)
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        trg_len = end - prev_end
        x = torch.tensor([ids[begin:end]])
        labels = x.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=x).logits.double(), -1)[0, :-1]  # predicts 1..
        target = labels[0, 1:]
        keep = target != -100
        total -= float(logp[keep].gather(-1, target[keep, None]).sum())
        count += int(keep.sum())
        prev_end = end
        if end == n:
            break
    return total, count


@pytest.mark.parametrize("n", [0, 1, 2, 5, 15, 16, 17, 31, 32, 33, 100])
@pytest.mark.parametrize("context", [2, 3, 16])
def test_windows_score_every_token_once_within_the_context(n, context):
    seen = []
    for begin, end, first in judges.windows(n, context):
        assert 0 <= begin < first < end <= n and end - begin <= context
        seen += range(first, end)
    assert seen == list(range(1, n))


def test_gen_ppl_matches_a_hand_computation_from_the_judges_logits(judge):
    """The acceptance test: NLL summed over strided windows equals the float64 hand computation."""
    model, tok = judge.model, judge.tokenizer
    assert judge.context == CONTEXT and judge.prefix_id == tok.eos_token_id
    total, count = 0.0, 0
    for text in TEXTS:
        ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
        t, c = hand_nll(model, ids, CONTEXT)
        total, count = total + t, count + c
    assert max(len(tok(t)["input_ids"]) for t in TEXTS) > 2 * CONTEXT  # several windows
    res = judge.score(TEXTS)
    assert res["n_tokens"] == count == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    rel = abs(res["nll_per_token"] - total / count) / (total / count)
    assert rel < 1e-5, rel
    assert abs(res["gen_ppl"] - math.exp(total / count)) / math.exp(total / count) < 1e-5
    nll, cnt = judge.nll(TEXTS)  # per text too
    for text, t_nll, t_cnt in zip(TEXTS, nll, cnt, strict=True):
        ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
        h, c = hand_nll(model, ids, CONTEXT)
        assert t_cnt == c and abs(t_nll - h) <= 1e-5 * max(1.0, abs(h))


def test_padding_does_not_change_the_numbers(judge):
    a = judge.score(TEXTS, batch_size=1)
    b = judge.score(TEXTS, batch_size=3)
    c = judge.score(TEXTS[::-1], batch_size=64)
    assert a["n_tokens"] == b["n_tokens"] == c["n_tokens"]
    for r in (b, c):
        assert abs(r["nll_per_token"] - a["nll_per_token"]) / a["nll_per_token"] < 1e-6
        assert abs(r["gen_ppl"] - a["gen_ppl"]) / a["gen_ppl"] < 1e-6


def test_no_text_scores_nothing(judge):
    res = judge.score(["", ""])
    assert res["n_tokens"] == 0 and math.isnan(res["gen_ppl"])


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated")  # mauve-text's featurizer, not ours
def test_mauve_features_are_mauve_texts_and_the_score_lies_in_0_1(folder):
    from mauve.utils import featurize_tokens_from_model

    enc = judges.load_encoder(f"hf:{folder}", device="cpu", batch_size=3)
    texts = [s[: 7 * (i + 1)] for i, s in enumerate(SENTENCES * 3)]
    ours = enc.features(texts)
    assert enc.max_tokens == CONTEXT  # mauve-text's max_text_length, capped by the encoder's context
    ids = [enc.tokenizer.encode(t, return_tensors="pt", truncation=True, max_length=CONTEXT) for t in texts]
    theirs = featurize_tokens_from_model(enc.model, ids, batch_size=1).numpy()
    assert ours.shape == theirs.shape == (9, 32)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(16, 32)), rng.normal(size=(16, 32)) + 1.0
    m = judges.mauve_score(p, q)
    assert 0 < m <= 1 and m == judges.mauve_score(p, q)  # seeded
    with pytest.raises(ConfigError, match=f"at least {judges.MAUVE_MIN_SAMPLES}"):
        judges.mauve_score(p[:2], q)


def test_unknown_names_and_missing_packages_are_one_line_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="judge 'hf:not-a-model-xyz' is not in the local Hugging Face cache and "
                                        "the hub is not reachable") as e:
        judges.load_causal_lm("hf:not-a-model-xyz", device="cpu")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such folder"):
        judges.load_causal_lm(f"hf:{tmp_path / 'missing'}", device="cpu")
    with pytest.raises(DataError, match="cannot load"):  # a folder that holds no model
        judges.load_causal_lm(f"hf:{tmp_path}", device="cpu")
    with pytest.raises(ConfigError, match="hf:NAME"):
        judges.load_causal_lm("hf:", device="cpu")
    with pytest.raises(ConfigError, match="hf:NAME_OR_PATH"):
        judges.load_encoder(str(tmp_path), device="cpu")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    with pytest.raises(MissingExtra, match=r"catdiff\[judge\]"):
        judges.load_causal_lm("hf:gpt2", device="cpu")
    monkeypatch.setitem(sys.modules, "mauve", None)
    with pytest.raises(MissingExtra, match=r"catdiff\[judge\]"):
        judges.mauve_score(np.zeros((8, 2)), np.ones((8, 2)))
