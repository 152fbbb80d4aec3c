"""Command line: --help of every command, `list`, and every shipped config loads and builds."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from catdiff import registry
from catdiff.build import build_dataset, build_method
from catdiff.cli import build_parser, main
from catdiff.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))
COMMANDS = [a for a in build_parser()._subparsers._group_actions[0].choices]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: catdiff " + command in capsys.readouterr().out


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "catdiff", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "sample" in r.stdout


def test_list_names_every_registered_thing(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in list(registry.METHODS) + list(registry.DATASETS) + list(registry.SAMPLERS):
        assert name in out


@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_loads_and_builds(path, tmp_path):
    overrides = []
    cfg = load_config(ROOT / path, overrides)
    section = dict(cfg.data)
    if section["name"] == "text":  # shipped text configs point at the dev corpus; build on a stand-in
        (tmp_path / "t.txt").write_text("in the beginning was a small test corpus.\n" * 200)
        section["path"] = str(tmp_path / "t.txt")
    if section["name"] == "tokens":  # bring-your-own-data configs name a placeholder path
        (np.arange(4096) % 50).astype(section["dtype"]).tofile(tmp_path / "ids.bin")
        section["path"] = str(tmp_path / "ids.bin")
    if section["name"] == "images":
        np.save(tmp_path / "im.npy", np.random.default_rng(0).random((64, 12, 12)))
        section["path"] = str(tmp_path / "im.npy")
    if section["name"] == "hub_text":  # the field's recipes: built on stand-ins by tests/integration/test_recipes.py
        assert cfg.data["corpus"] in ("text8", "lm1b", "openwebtext") and cfg.train.amp == "bf16"
        return
    ds = build_dataset(section)
    method = build_method(cfg, ds)
    assert method.name == cfg.method["name"]
    assert sum(p.numel() for p in method.parameters()) > 0


def test_config_errors_name_the_key():
    from catdiff.errors import ConfigError

    with pytest.raises(ConfigError, match="method.schedule"):
        load_config(ROOT / "configs/mdlm/mixture.yaml", ["method.schedule=1"])
    with pytest.raises(ConfigError, match="unknown masking schedule"):
        load_config(ROOT / "configs/mdlm/mixture.yaml", ["method.schedule=cubic"])
    with pytest.raises(ConfigError, match="data.num_components"):
        load_config(ROOT / "configs/mdlm/mixture.yaml", ["data.num_components=many"])
    with pytest.raises(ConfigError, match="model.preset"):
        load_config(ROOT / "configs/mdlm/mixture.yaml", ["model.preset=huge"])
    with pytest.raises(ConfigError, match="'data.colour'"):
        load_config(ROOT / "configs/mdlm/mixture.yaml", ["data.colour=red"])
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_config(ROOT / "configs/mdlm/mixture.yaml", ["train.max_steps=0"])
    with pytest.raises(ConfigError, match="sample.order"):
        load_config(ROOT / "configs/mdlm/mixture.yaml", ["sample.order=greedy"])


def test_train_sample_eval_from_the_cli_on_digits_and_text(tmp_path, capsys):
    """The three user commands end to end: digits give a PNG grid and FD-digits, text prints."""
    from matplotlib.image import imread

    run = tmp_path / "digits"
    tiny = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=16",
            "train.progress=false", "train.max_steps=3"]
    assert main(["train", str(ROOT / "configs/mdlm/digits.yaml"), *tiny, f"train.out_dir={run}"]) == 0
    assert main(["sample", str(run), "--steps", "4", "--num-samples", "6", "--out", str(tmp_path / "g.png")]) == 0
    assert imread(tmp_path / "g.png").ndim >= 2
    assert main(["eval", str(run), "--steps", "2", "--num-samples", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "FD-digits" in out and "bits/token" in out
    (tmp_path / "c.txt").write_text("and god said let there be light and there was light\n" * 100)
    run = tmp_path / "text"
    assert main(["train", str(ROOT / "configs/ar/kjv.yaml"), *tiny, f"data.path={tmp_path / 'c.txt'}",
                 "data.seq_len=32", "model.preset=tiny", f"train.out_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--num-samples", "2", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 2 and all(set(line) <= set("and god said let there be light was\n ") for line in lines)
