"""benchmarks/throughput.py at a toy size (preset tiny, L = 32, batch 4, one round): every field of
its result, finite MFUs and the headline ratios; the reference's FLOP count; and `report.finish`'s
contended rule, which allows for the run's own threads at the end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import load_benchmark

from catdiff.metrics import report
from catdiff.models.transformer import TransformerConfig, flops_per_token


@pytest.fixture(scope="module")
def tp():
    return load_benchmark("throughput")


@pytest.fixture(scope="module")
def result(tp, tmp_path_factory):
    out = tmp_path_factory.mktemp("throughput")
    budget = tp.Budget(rounds=1, steps_per_round=1, warmup=1, sizes=(64, 128), peak_seconds=0.0, sample_steps=4,
                       sampling_rounds=1)
    tp.run(preset="tiny", seq_len=32, batch_size=4, budget=budget, compile=False, out=out,
           command=["python", "benchmarks/throughput.py", "--preset", "tiny"], log=lambda *a: None)
    return out


def test_the_result_holds_every_field(result):
    d = json.loads((result / "throughput.json").read_text())
    env, res = d["envelope"], d["results"]
    assert set(d) == {"envelope", "results"}
    # load and machine
    load = env["load"]
    assert len(load["start"]) == len(load["end"]) == 3 and isinstance(load["contended"], bool)
    assert load["own_threads"] == torch.get_num_threads() == res["setting"]["threads"]
    m = env["machine"]
    assert {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"} <= set(m["cpu_flags"])
    assert m["cpu"] and m["torch"] == torch.__version__ and m["threads"] == torch.get_num_threads()
    # peaks
    pk = res["peaks"]
    for d_ in ("fp32", "bf16"):
        assert pk[d_]["max"] >= pk[d_]["median"] > 0 and len(pk[d_]["per_round"]) == 2  # start + one round
        assert set(pk[d_]["by_size_max"]) == {"64", "128"}
    assert set(pk["bf16_over_fp32"]) == {"max", "median"}
    assert res["amp_auto"]["picked"] in ("fp32", "bf16") and res["amp_auto"]["bf16_speedup_probe"] > 0
    # training
    st = res["setting"]
    assert (st["preset"], st["vocab_size"], st["seq_len"], st["batch_size"]) == ("tiny", 75, 32, 4)
    assert st["local_mix"] == 3 and st["method"]["name"] == "mdlm" and st["method"]["schedule"] == "loglinear"
    tr = res["training"]
    assert list(tr["modes"]) == ["catdiff_fp32", "catdiff_bf16", "catdiff_auto", "reference_fp32", "reference_bf16"]
    for name, r in tr["modes"].items():
        for key in ("tokens_per_s_median", "tokens_per_s_best", "mfu", "mfu_best", "ratio_to_reference_fp32",
                    "flops_per_token", "dtype", "amp", "step_s"):
            assert key in r, (name, key)
        assert math.isfinite(r["mfu"]) and r["mfu"] > 0 and math.isfinite(r["mfu_best"])
        assert r["tokens_per_s_best"] >= r["tokens_per_s_median"] > 0 and len(r["step_s"]["times"]) == 1
        if name != "catdiff_auto":
            assert r["dtype"] == name.split("_")[1]
    assert tr["modes"]["catdiff_auto"]["dtype"] == res["amp_auto"]["picked"]
    assert tr["modes"]["reference_fp32"]["ratio_to_reference_fp32"] == 1.0
    assert set(tr["ratios"]) == {"catdiff_fp32/reference_fp32", "catdiff_auto/reference_fp32",
                                 "catdiff_bf16/reference_bf16"}
    assert all(math.isfinite(v) and v > 0 for v in tr["ratios"].values())
    # sampling
    sm = res["sampling"]
    assert set(sm["paths"]) == {"old", "new"} and set(sm["ratios"]) == {"new/old"}
    assert sm["paths"]["old"]["options"]["amp"] == "off" and sm["paths"]["new"]["options"]["amp"] == "auto"
    assert sm["paths"]["old"]["how"] == "amp off"  # the shipped config is the issue-start network
    for r in sm["paths"].values():
        assert r["samples_per_s"] > 0 and 1 <= r["nfe"] <= 4 and r["options"]["steps"] == 4
        assert math.isfinite(r["network_mfu"])
    page = (result / "throughput.md").read_text()
    for part in ("Load (1/5/15 min)", "## Matmul peaks", "## Training step", "## Sampling", "reference fp32",
                 "python benchmarks/throughput.py --preset tiny"):
        assert part in page


def test_the_reference_flop_count_is_catdiffs_for_a_plain_transformer(tp):
    K, L, D, n = 75, 32, 128, 2
    plain = TransformerConfig(vocab_size=K + 1, out_size=K, seq_len=L, d_model=D, n_layers=n, n_heads=4,
                              time_cond=False)
    assert tp.reference_flops_per_token(K, L, D, n) == flops_per_token(plain, L, training=True)
    model = tp.Reference(K, L, D, n, 4)
    weights = sum(mod.weight.numel() for mod in model.modules() if isinstance(mod, torch.nn.Linear))
    assert tp.reference_flops_per_token(K, L, D, n) == 6 * weights + 12 * n * L * D


def test_finish_allows_for_the_runs_own_threads(monkeypatch):
    def contended(start, end, **kw):
        monkeypatch.setattr(report, "_loadavg", lambda: end)
        load = report.finish({"load": {"start": start}}, **kw)["load"]
        assert load["own_threads"] == kw.get("own_threads", 0)
        return load["contended"]

    quiet, busy = [0.1, 0.1, 0.1], [0.5, 0.1, 0.1]
    assert contended(quiet, [2.2, 1.0, 0.5], own_threads=2) is False  # our two threads, nothing else
    assert contended(quiet, [2.5, 1.0, 0.5], own_threads=2) is True  # and another job
    assert contended(busy, [0.1, 0.1, 0.1], own_threads=2) is True  # the start precedes our threads
    assert contended(quiet, [2.2, 1.0, 0.5]) is True  # default: no allowance
    assert contended(quiet, [0.2, 3.0, 3.0]) is False  # 5- and 15-minute averages do not count
    assert contended(None, [2.2, 1.0, 0.5], own_threads=2) is False
    assert contended(None, None, own_threads=2) is None


def test_the_compiled_and_issue_start_rows(tp, tmp_path, monkeypatch):
    """The compiled modes' bookkeeping (compilation itself is too slow for the suite: the network
    stays eager here, so only the rows, ratios and the one-off cost field are checked); and, for a
    config without time conditioning, the "adaln" row and the old sampling path on the issue-start
    network (model.time_cond=true)."""
    compiled = []
    monkeypatch.setattr(tp, "maybe_compile", lambda net, on: compiled.append(on) or net)
    config = tmp_path / "kjv_no_time.yaml"
    text = tp.KJV_CONFIG.read_text()
    config.write_text(text.replace("model: {preset: small, local_mix: 3}", "model: {preset: small, local_mix: 3, "
                                   "time_cond: false}"))
    assert config.read_text() != text
    budget = tp.Budget(rounds=1, steps_per_round=1, warmup=1, sizes=(64,), peak_seconds=0.0, sample_steps=2,
                       sampling_rounds=1)
    full = tp.run(preset="tiny", seq_len=16, batch_size=2, budget=budget, compile=True, config=config, out=tmp_path,
                  command=["python", "benchmarks/throughput.py"], log=lambda *a: None)["results"]
    res, sm = full["training"], full["sampling"]
    assert compiled == [True, True, True]  # the two compiled training modes and the compiled sampling path
    assert res["modes"]["adaln_fp32"]["params"] > res["modes"]["catdiff_fp32"]["params"]  # adaLN weights
    assert {"adaln_fp32/reference_fp32", "catdiff_fp32/adaln_fp32"} <= set(res["ratios"])
    assert "model.time_cond=true (issue start)" in sm["paths"]["old"]["how"]
    assert sm["paths"]["old"]["options"]["amp"] == "off"
    assert list(res["modes"]) == ["catdiff_fp32", "catdiff_bf16", "catdiff_auto", "adaln_fp32", "compiled_fp32",
                                  "compiled_bf16", "reference_fp32", "reference_bf16"]
    for k in ("compiled_fp32", "compiled_bf16"):
        row = res["modes"][k]
        assert row["compile_s"] == row["step_s"]["warmup"][0] - row["step_s"]["median"]
    tps = {k: v["tokens_per_s_median"] for k, v in res["modes"].items()}
    assert res["ratios"]["compiled_fp32/catdiff_fp32"] == pytest.approx(tps["compiled_fp32"] / tps["catdiff_fp32"])
    assert "compilation" in (tmp_path / "throughput.md").read_text()
