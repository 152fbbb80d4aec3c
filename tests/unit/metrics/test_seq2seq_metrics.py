import math

import pytest
import torch

from catdiff.metrics import bleu, chrf, exact_match

REFS = ["the quick brown fox jumps over the lazy dog", "a small boat drifted past the old lighthouse"]


def test_bleu_of_identical_corpora_is_100():
    assert bleu(REFS, REFS) == pytest.approx(100.0)
    assert bleu(REFS, REFS, tokenize="char") == pytest.approx(100.0)


def test_bleu_of_disjoint_corpora_is_about_0():
    hyps = ["zebra quartz violin", "mellow purple engines hum"]
    assert 0.0 <= bleu(hyps, REFS) < 1.0


def test_bleu_of_a_hypothesis_missing_one_word_matches_the_hand_computation():
    ref = REFS[0]  # 9 words
    hyp = "the quick brown fox jumps over the dog"  # 8 words: "lazy" is missing
    # clipped n-gram precisions: 8/8, 6/7 ("the dog" is new), 5/6, 4/5; brevity penalty exp(1 - 9/8)
    expected = 100 * math.exp(1 - 9 / 8) * (1 * 6 / 7 * 5 / 6 * 4 / 5) ** 0.25
    got = bleu([hyp], [ref])
    assert got == pytest.approx(expected, abs=1e-6)  # ≈ 76.73
    assert 0 < got < 100
    assert got < bleu([ref], [ref])
    assert bleu(["the quick brown fox"], [ref]) < got  # fewer words: lower still


def test_chrf():
    assert chrf(REFS, REFS) == pytest.approx(100.0)
    assert 0 < chrf(["the quick brown fox jumps over the dog"], REFS[:1]) < 100
    assert chrf(REFS, REFS, word_order=2) == pytest.approx(100.0)


def test_exact_match_on_strings_and_rows():
    assert exact_match(["a b", "c", "d"], ["a b", "c ", "d"]) == pytest.approx(2 / 3)
    x = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]])
    y = x.clone()
    y[1, 2] = 0
    assert exact_match(x, y) == 0.75
    assert exact_match(list(x), y) == 0.75


def test_bad_input_fails_clearly():
    with pytest.raises(ValueError, match="same length"):
        bleu(REFS, REFS[:1])
    with pytest.raises(ValueError, match="list of strings"):
        bleu("a string", "another")
    with pytest.raises(ValueError, match="at least one"):
        exact_match([], [])
    with pytest.raises(ValueError, match="same length"):
        exact_match(["a"], ["a", "b"])
