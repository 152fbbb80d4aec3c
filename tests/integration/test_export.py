"""Issue 17, sharing: `catdiff export` → `catdiff.load` in a fresh process gives the run's samples
and NELBO; exported folders and hub names work wherever a run does; push is tested up to the
library's upload call; bad exports fail in one line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, folder_state

from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.preset=tiny", "train.max_steps=30", "train.batch_size=16", "train.progress=false", "train.log_every=10",
        "eval.max_examples=32", "eval.nelbo_passes=1"]
VERSES = [f"{i}: and god said let there be {'light' if i % 2 else 'water'} and there was\n" for i in range(300)]


def fresh_process(code: str, **env) -> dict:
    """Run `code` in a new interpreter (nothing shared with this one); it prints one JSON line."""
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny MDLM, a tiny Difformer (embedding diffusion) and a tiny BPE text run, each exported."""
    base = tmp_path_factory.mktemp("export")
    text = base / "verses.txt"
    text.write_text("".join(VERSES))
    specs = {"mdlm": ("configs/mdlm/mixture.yaml", []), "difformer": ("configs/difformer/mixture.yaml", []),
             "text": ("configs/mdlm/kjv.yaml", [f"data.path={text}", "data.tokenizer=bpe", "data.bpe_vocab_size=300",
                                                "data.seq_len=32"])}
    out = {}
    for name, (cfg, extra) in specs.items():
        run, exp = base / name, base / f"{name}-export"
        assert main(["train", str(ROOT / cfg), *TINY, *extra, f"train.out_dir={run}"]) == 0
        assert main(["export", str(run), str(exp)]) == 0
        out[name] = (run, exp)
    return out


@pytest.mark.parametrize("name,steps", [("mdlm", 8), ("difformer", 9)])
def test_export_then_load_in_a_fresh_process_gives_the_runs_samples_and_nelbo(runs, capsys, name, steps):
    run, exp = runs[name]
    assert {p.name for p in exp.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    capsys.readouterr()
    assert main(["sample", str(run), "--steps", str(steps), "--seed", "3", "--num-samples", "5"]) == 0
    cli_text = capsys.readouterr().out.strip().splitlines()
    from catdiff import pipeline

    ids = pipeline.load(run).sample(5, steps=steps, seed=3)  # the batch both sides score
    here = pipeline.load(run).likelihood(ids, passes=2, seed=7).tolist()
    there = fresh_process(
        "import json, torch, catdiff\n"
        f"pipe = catdiff.load({str(exp)!r})\n"
        f"x = pipe.sample(5, steps={steps}, seed=3)\n"
        f"ids = torch.tensor({ids.tolist()})\n"
        "print(json.dumps({'text': pipe.decode(x), 'nelbo': pipe.likelihood(ids, passes=2, seed=7).tolist()}))")
    assert there["text"] == cli_text  # the same samples as `catdiff sample RUN` for the same seed and steps
    assert there["nelbo"] == here  # the same weights score the same batch identically (same draws)
    capsys.readouterr()
    assert main(["sample", str(exp), "--steps", str(steps), "--seed", "3", "--num-samples", "5"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == cli_text  # `catdiff sample DIR` from the CLI


def test_text_export_carries_its_tokenizer_and_a_model_card(runs, capsys):
    from tokenizers import Tokenizer

    from catdiff import pipeline

    run, exp = runs["text"]
    pipe = pipeline.load(exp)
    tok = Tokenizer.from_file(str(exp / "tokenizer.json"))  # other tools read the tokenizer file
    line = "and god said let there be light"
    assert tok.encode(line).ids == pipe.dataset.encode(line).tolist()
    card = (exp / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: catdiff\nlicense: mit\n")
    for needle in ("arXiv:2406.07524", "tokenizer `bpe`", "steps: 30", "## Samples", "## License"):
        assert needle in card, needle
    meta = json.loads((exp / "config.json").read_text())
    assert meta["format"] == "catdiff-export" and meta["weights"] == "ema" and meta["step"] == 30
    x = pipe.sample(2, steps=4, seed=0, prompt="and god")  # a prompt through the pipeline
    assert all(t.startswith("and god") for t in pipe.decode(x))
    bits = pipe.likelihood(["".join(VERSES[:3]), "".join(VERSES[3:9])])  # texts: L-token windows
    assert bits.shape == (2,) and bool((bits > 0).all())
    with pytest.raises(Exception, match="at least that length"):  # packing=wrap: full windows only
        pipe.likelihood(["god"])
    # eval with the exported folder's model card table after `catdiff eval RUN` + re-export
    assert main(["eval", str(run), "--steps", "2", "--num-samples", "4", "--quiet"]) == 0
    exp2 = run.parent / "text-export-2"
    assert main(["export", str(run), str(exp2), "--license", "apache-2.0"]) == 0
    card2 = (exp2 / "README.md").read_text()
    assert "license: apache-2.0" in card2 and "bits" in card2.split("## Evaluation")[1]


def test_save_pretrained_and_from_pretrained_through_the_hub_mixin(runs, tmp_path):
    from catdiff.pipeline import Pipeline, load

    pipe = load(runs["mdlm"][0])
    pipe.save_pretrained(tmp_path / "saved")
    again = Pipeline.from_pretrained(str(tmp_path / "saved"))
    assert torch.equal(pipe.sample(4, steps=6, seed=1), again.sample(4, steps=6, seed=1))
    assert again.to("cpu") is again and again.device.type == "cpu"


def test_a_hub_name_loads_from_the_local_cache_offline(runs, tmp_path, capsys, monkeypatch):
    """hf://owner/name resolves through huggingface_hub's cache (built here as the hub lays it out)."""
    _, exp = runs["mdlm"]
    cache = tmp_path / "hub"
    snap = cache / "models--someone--tiny-mdlm" / "snapshots" / ("a" * 40)
    shutil.copytree(exp, snap)
    (cache / "models--someone--tiny-mdlm" / "refs").mkdir()
    (cache / "models--someone--tiny-mdlm" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    capsys.readouterr()
    assert main(["sample", "hf://someone/tiny-mdlm", "--steps", "4", "--seed", "2", "--num-samples", "2"]) == 0
    hub = capsys.readouterr().out
    assert main(["sample", str(exp), "--steps", "4", "--seed", "2", "--num-samples", "2"]) == 0
    assert capsys.readouterr().out == hub
    monkeypatch.chdir(tmp_path)  # eval of a hub model writes to ./owner--name, never into the cache
    assert main(["eval", "hf://someone/tiny-mdlm", "--steps", "2", "--num-samples", "4", "--quiet"]) == 0
    assert (tmp_path / "someone--tiny-mdlm" / "eval.json").is_file() and not (snap / "eval.json").exists()
    capsys.readouterr()
    assert main(["sample", "hf://someone/not-cached"]) == 2
    assert_one_line_error(capsys.readouterr().err, "hf://someone/not-cached is not in the local Hugging Face cache")


def test_push_uploads_the_export_through_huggingface_hub(runs, monkeypatch, capsys):
    """Tested up to the network: the library's create_repo/upload_folder receive the export."""
    import huggingface_hub

    seen = {}

    def create_repo(self, repo_id, **kw):
        seen["created"] = repo_id
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kw):
        seen.update(repo=repo_id, files=sorted(p.name for p in Path(folder_path).iterdir()),
                    config=json.loads((Path(folder_path) / "config.json").read_text()))
        return "https://huggingface.co/someone/tiny/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert main(["push", str(runs["mdlm"][0]), "someone/tiny"]) == 0
    assert seen["created"] == seen["repo"] == "someone/tiny"
    assert seen["files"] == ["README.md", "config.json", "model.safetensors"]
    assert seen["config"]["method"] == "mdlm" and seen["config"]["step"] == 30
    assert "pushed" in capsys.readouterr().out


def test_bad_exports_fail_in_one_line_and_change_nothing(runs, tmp_path, capsys):
    run, exp = runs["mdlm"]
    before = folder_state(exp)
    capsys.readouterr()
    assert main(["export", str(run), str(exp)]) == 2  # not empty
    assert_one_line_error(capsys.readouterr().err, "is not empty")
    assert main(["sample", str(exp), "--no-ema"]) == 2
    assert_one_line_error(capsys.readouterr().err, "EMA weights only")
    assert folder_state(exp) == before
    bad = tmp_path / "bad"
    shutil.copytree(exp, bad)
    blob = bytearray((bad / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(blob))
    assert main(["sample", str(bad)]) == 2
    assert_one_line_error(capsys.readouterr().err, "model.safetensors is corrupt")
    newer = tmp_path / "newer"
    shutil.copytree(exp, newer)
    meta = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**meta, "format_version": 99}))
    assert main(["sample", str(newer)]) == 2
    assert_one_line_error(capsys.readouterr().err, "upgrade catdiff")
