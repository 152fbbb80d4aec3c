"""benchmarks/few_step.py's arithmetic over training seeds: mean ± SE of every numeric field, the
"below the factorized oracle" rule (excess below it and coverage no worse), method specs with
overrides, and a page that renders from aggregated records."""

from __future__ import annotations

import math

import pytest
from helpers import load_benchmark


@pytest.fixture(scope="module")
def fs():
    return load_benchmark("few_step")


def record(fs, method, seed, excess, kl):
    samples = [{"steps": k, "nfe": k, "excess": excess + k * 0.0, "component_kl": kl, "coherence": 0.5,
                "component_entropy": 2.0, "component_entropy_true": 2.7, "sec_per_sample": 0.01} for k in fs.STEPS]
    return {"method": method, "seed": seed, "samples": samples,
            "train": {"steps": 100 + seed, "cpu_s": 60.0, "tokens_per_s": 1e4},
            "likelihood": {"bits_per_token": 1.0 + 0.1 * seed, "nelbo_nats": 1.0, "nelbo_nats_se": 0.01},
            "latent": {"y0_var": 30.0, "y0_between_share": 0.9}}


def test_mean_and_se_over_seeds(fs):
    agg = fs.aggregate([record(fs, "m", s, 1.0 + s, 0.1) for s in range(3)])
    row = agg["samples"][2]
    assert row["excess"] == pytest.approx(2.0)
    assert row["excess_se"] == pytest.approx(1.0 / math.sqrt(3))  # sd 1 over 3 seeds
    assert agg["likelihood"]["bits_per_token"] == pytest.approx(1.1)
    assert agg["train"]["steps"] == pytest.approx(101.0) and agg["seeds"] == [0, 1, 2]
    assert math.isnan(fs.aggregate([record(fs, "m", 0, 1.0, 0.1)])["samples"][0]["excess_se"])  # one seed


def test_below_the_oracle_needs_coverage_too(fs):
    oracle = {"excess": 0.8, "component_kl": 0.05, "component_kl_se": 0.0}
    assert fs.below_oracle({"excess": 0.5, "component_kl": 0.04}, oracle, "component_kl")
    assert not fs.below_oracle({"excess": 0.9, "component_kl": 0.04}, oracle, "component_kl")
    # mode-seeking: low excess bought with a collapsed component histogram does not count
    assert not fs.below_oracle({"excess": -0.1, "component_kl": 1.5}, oracle, "component_kl")
    # within 2 SE of the difference counts as "no worse"
    assert fs.below_oracle({"excess": 0.5, "component_kl": 0.07, "component_kl_se": 0.01}, oracle, "component_kl")
    assert fs.below_oracle({"excess": 0.5}, oracle, "component_kl") is None


def test_specs_and_page(fs, tmp_path):
    assert fs.parse_spec("lddm-fuji+method.lead=2+method.standardize=true") == (
        "lddm-fuji", ["method.lead=2", "method.standardize=true"])
    res = {"dataset": "mixture", "budget": {"preset": "tiny", "minutes": 1.0, "seeds": [0, 1]},
           "methods": [fs.aggregate([record(fs, "mdlm", s, 1.0, 0.1) for s in (0, 1)])],
           "oracle": fs.aggregate([record(fs, fs.ORACLE, s, 0.8, 0.1) for s in (0, 1)])}
    page = fs.report(res)
    assert "## Below the factorized oracle" in page and "truth 2.7" in page
    fs.plot(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_resume_finishes_an_interrupted_run_and_keeps_a_finished_one(fs, tmp_path):
    import json

    args = fs.argparse.Namespace(dataset="mixture", preset="tiny", batch_size=8, steps=4, minutes=5.0, seed=0,
                                 progress=False, lr=1e-3, overrides=["train.log_every=1"], runs=str(tmp_path),
                                 resume=False, ckpt_every=2, tag="")
    fs.train_one("mdlm", 0, args)
    rd = fs.run_dir(args, 0, "mdlm")
    assert fs.finished(rd) and sorted(p.name for p in (rd / "checkpoints").glob("step-*"))[-1] == "step-00000004"
    args.resume = True
    before = (rd / "metrics.jsonl").read_text()
    assert fs.train_one("mdlm", 0, args)["steps"] == 4 and (rd / "metrics.jsonl").read_text() == before  # kept
    # interrupted (no closing validation): resumed from its newest checkpoint and run to the new cap
    args.steps = 6
    lines = before.splitlines()
    (rd / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    info = fs.train_one("mdlm", 0, args)
    assert info["steps"] == 6 and fs.finished(rd)
    steps = [json.loads(x).get("step") for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6 and 5 in steps


@pytest.mark.parametrize("name", ["lddm-seq", "lddm-fuji"])
def test_data_latent_feeds_encoded_rows_in_order_to_the_token_chain(fs, name):
    import torch

    from catdiff.build import build_dataset, build_method
    from catdiff.config import load_config

    cfg = load_config(f"configs/{name}/mixture.yaml")
    ds = build_dataset(cfg.data)
    m = build_method(cfg, ds).eval()
    x = ds.head("test", 6)
    y = fs.encode(m, x)  # (6, P, dp)
    wrapped = fs.DataLatent(m, y)
    opts = type(m).SampleOptions(steps=2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        seen = [wrapped.sample(n, opts, g).info for n in (4, 2, 3)]
    assert torch.equal(seen[0]["latent"], y[:4]) and torch.equal(seen[1]["latent"], y[4:6])
    assert torch.equal(seen[2]["latent"], y[:3])  # spent: from the top again
    assert all(s["latent_calls"] == 0 and s["token_calls"] == 2 for s in seen)


def test_reuse_merges_an_earlier_pages_seeds_without_their_run_folders(fs, tmp_path, capsys):
    import json

    config = {"dataset": "binsaw", "preset": "tiny", "minutes": 1.0, "batch_size": 64, "lr": 1e-3,
              "overrides": [], "num_samples": 512, "passes": 2, "max_examples": 1024, "latent_grid": [1, 2, 4, 16],
              "judge": None, "data_latent": True}
    fuji = [record(fs, "lddm-fuji", 0, 1.0, 0.1), record(fs, "lddm-fuji (latent first)", 0, 0.5, 0.1)]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"envelope": {"config": config, "commit": "abc1234def", "date": "2026-12-01"},
                                   "results": {"runs": [record(fs, "mdlm", 0, 2.0, 0.1), *fuji]}}))
    common = ["--dataset", "binsaw", "--minutes", "1", "--eval-only", "--reuse", str(earlier),
              "--runs", str(tmp_path / "no-runs"), "--out", str(tmp_path / "out")]
    # every (method, seed) pair is on the earlier page: nothing is evaluated (there are no run folders)
    assert fs.main([*common, "--seeds", "0", "--methods", "mdlm,lddm-fuji"]) == 0
    res = json.loads((tmp_path / "out" / "few_step_binsaw.json").read_text())["results"]
    assert [r["method"] for r in res["runs"]] == ["mdlm", "lddm-fuji", "lddm-fuji (latent first)"]
    assert [m["method"] for m in res["methods"]] == ["mdlm", "lddm-fuji", "lddm-fuji (latent first)"]
    assert res["methods"][0]["samples"][0]["excess"] == 2.0
    page = (tmp_path / "out" / "few_step_binsaw.md").read_text()
    assert "Records of lddm-fuji seed 0, mdlm seed 0 reused from" in page and "abc1234" in page
    def refused(argv, why):  # one line on stderr, exit 2
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            fs.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and why in err[-1] and "Traceback" not in "".join(err)

    # a pair the page lacks is evaluated from its run folder (here: none, so a clear error)
    refused([*common, "--seeds", "0,1", "--methods", "mdlm"], "no finished run of mdlm seed 1")
    # another budget or evaluation setting is refused, not mixed in
    for other, key in ((["--minutes", "2"], "minutes"), (["--num-samples", "256"], "num_samples"),
                       (["--no-data-latent"], "data_latent")):
        refused([*common, "--seeds", "0", "--methods", "mdlm", *other], key)
    refused([*common, "--reuse", str(tmp_path / "gone.json"), "--seeds", "0", "--methods", "mdlm"],
            "no such result file")
    refused([*common, "--seeds", "0,one", "--methods", "mdlm"], "comma-separated integers")
