"""The exported-model format: a folder as the Hugging Face hub shares models, written from a loaded
run and read back by `build.load_run`; it knows file layouts and the hub's repository names, and
nothing of how a model samples, trains or is evaluated.

A folder (or hub repository) holds
    config.json        what catdiff loads: format version, catdiff version, method, K, L, training
                       step, which weights (EMA or raw), the run's resolved config, the dataset state
                       (tokenizer included, so nothing else is needed) and the sha256 of the weights
    model.safetensors  the method's weights (EMA by default)
    tokenizer.json     the tokenizer for other tools (`tokenizers.Tokenizer.from_file`, or
                       `PreTrainedTokenizerFast(tokenizer_file=...)`); character vocabularies: vocab.json
    README.md          the model card (YAML front matter for the hub, then method, paper, data,
                       training, evaluation, a sample excerpt, license)

Hub access goes through `huggingface_hub` (snapshot_download); nothing is downloaded unless a user
names a hub repository, and offline only the local cache is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import __version__
from .checkpoint import sha256_file
from .errors import CheckpointError, DataError

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
FORMAT = "catdiff-export"
FORMAT_VERSION = 1
HUB_PREFIX = "hf://"

# the paper of each method, for the model card (METHODS.md gives the equations and choices)
PAPERS = {
    "mdlm": "Sahoo et al. 2024, Simple and Effective Masked Diffusion Language Models (arXiv:2406.07524)",
    "ar": "autoregressive transformer baseline (causal, exact likelihood)",
    "embed-naive": "embedding diffusion without anti-collapse terms (baseline of arXiv:2410.14758)",
    "diffusion-lm": "Li et al. 2022, Diffusion-LM Improves Controllable Text Generation (arXiv:2205.14217)",
    "cdcd": "Dieleman et al. 2022, Continuous diffusion for categorical data (arXiv:2211.15089)",
    "difformer": "Gao et al. 2024, Empowering Diffusion Models on the Embedding Space for Text Generation "
                 "(NAACL 2024, arXiv:2212.09412)",
    "catdm": "Nguyen, Lai et al. 2024, Mitigating Embedding Collapse in Diffusion Models for Categorical Data "
             "(arXiv:2410.14758)",
    "lddm-fuji": "Shariatian, Durmus, Peluchetti 2025, latent discrete diffusion, FUJI variant (arXiv:2510.18114)",
    "lddm-seq": "Shariatian, Durmus, Peluchetti 2025, latent discrete diffusion, SEQ variant (arXiv:2510.18114)",
    "edm": "Karras et al. 2022, Elucidating the Design Space of Diffusion-Based Generative Models (arXiv:2206.00364)",
    "discodiff": "Xu et al. 2024, DisCo-Diff: Enhancing Continuous Diffusion Models with Discrete Latents "
                 "(ICML 2024, arXiv:2407.03300)",
}


def is_export(folder: str | Path) -> bool:
    """True for a folder in the exported layout (config.json of this format + weights)."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        return False
    try:
        return json.loads((folder / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read(folder: str | Path) -> dict:
    """config.json of an exported folder once the weights' sha256 matches; CheckpointError if not."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG} is unreadable or not JSON ({e})") from None
    need = ("format_version", "method", "config", "dataset", "vocab_size", "seq_len", "files")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in need):
        raise CheckpointError(f"{folder} is not a catdiff export ({CONFIG} lacks {', '.join(need)})")
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{folder} was exported in format {meta['format_version']} by catdiff "
                              f"{meta.get('catdiff_version')}; this catdiff ({__version__}) reads format "
                              f"{FORMAT_VERSION}: upgrade catdiff")
    if sha256_file(folder / WEIGHTS) != meta["files"].get(WEIGHTS):
        raise CheckpointError(f"{folder / WEIGHTS} is corrupt (its sha256 differs from the one in {CONFIG})")
    return meta


def write(folder: str | Path, *, state_bytes: bytes, meta: dict, tokenizer_state: dict | None, card: str) -> Path:
    """Write the exported layout into `folder` (created; files of these names are replaced)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WEIGHTS).write_bytes(state_bytes)
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "catdiff_version": __version__, **meta,
              "files": {WEIGHTS: hashlib.sha256(state_bytes).hexdigest()}}
    if tokenizer_state is not None:
        if "json" in tokenizer_state:  # byte-level BPE and standard tokenizers: the tokenizers library's file
            (folder / "tokenizer.json").write_text(tokenizer_state["json"])
        elif tokenizer_state.get("type") == "char":
            (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(tokenizer_state["chars"])},
                                                          ensure_ascii=False))
    (folder / CONFIG).write_text(json.dumps(record, indent=1))
    (folder / CARD).write_text(card)
    return folder


def card(*, method: str, meta: dict, dataset: dict, n_params: int, training: dict, eval_md: str | None,
         excerpt: list[str], license: str = "mit") -> str:
    """The model card: YAML front matter (library, tags, license) and the facts of the run."""
    data = dataset.get("name", "?")
    tok = (dataset.get("kwargs", {}).get("tokenizer_state") or {}).get("type") or dataset.get("kwargs", {}).get(
        "tokenizer")
    lines = ["---", "library_name: catdiff", f"license: {license}", "tags:", "- catdiff", "- diffusion",
             f"- {method}", "---", "", f"# {method} on {data}", "",
             f"A `{method}` model trained with [catdiff](https://github.com/catdiff/catdiff) "
             f"{meta.get('catdiff_version', __version__)}.", "",
             "```python", "import catdiff", "", "pipe = catdiff.load(\"PATH_OR_REPO_ID\")",
             "x = pipe.sample(4, steps=64, seed=0)", "print(pipe.decode(x))", "```", "",
             "## Method", "", f"- {PAPERS.get(method, method)}",
             f"- parameters: {n_params:,}; weights: {meta.get('weights', 'ema')}", "",
             "## Data and tokenizer", "",
             f"- dataset `{data}`, sequence length {meta['seq_len']}, vocabulary {meta['vocab_size']}"
             + (f", tokenizer `{tok}`" if tok else ""), "",
             "## Training", ""]
    lines += [f"- {k}: {v}" for k, v in training.items()]
    lines += ["", "## Evaluation", ""]
    lines += [eval_md.strip() if eval_md else "No evaluation was run before export (`catdiff eval RUN`)."]
    if excerpt:
        lines += ["", "## Samples", "", "An excerpt (seed 0, the run's sampler settings):", "", "```"]
        lines += [s[:300] for s in excerpt]
        lines += ["```"]
    lines += ["", "## License", "", f"The weights are released under the `{license}` license "
              "(set with `catdiff export --license`)."]
    return "\n".join(lines) + "\n"


# ---- the hub ------------------------------------------------------------------------------
def hub_repo_id(name: str) -> str | None:
    """The repo id of `hf://owner/name` (None for anything else)."""
    if not name.startswith(HUB_PREFIX):
        return None
    repo = name[len(HUB_PREFIX):].strip("/")
    if repo.count("/") > 1 or not repo:
        raise DataError(f"{name!r} is not a hub model name: expected hf://owner/name")
    return repo


def output_dir(name: str | Path) -> Path:
    """Where results about `name` (eval, diagnostics) are written: the folder itself, or
    ./owner--name for a hub model (the Hugging Face cache is never written to); created."""
    repo = hub_repo_id(str(name))
    folder = Path(name) if repo is None else Path(repo.replace("/", "--"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resolve(name: str | Path, revision: str | None = None) -> Path:
    """A local folder for `name`: a path as is; `hf://owner/name` from the local Hugging Face cache,
    downloaded first when the hub is reachable (never offline: a missing one is a one-line error)."""
    repo = hub_repo_id(str(name))
    if repo is None:
        return Path(name)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    from .data.tokenizers import hub_reachable, offline_mode

    offline = offline_mode() or not hub_reachable()
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=offline,
                                      allow_patterns=[CONFIG, WEIGHTS, CARD, "tokenizer.json", "vocab.json"]))
    except LocalEntryNotFoundError:
        raise DataError(f"{name} is not in the local Hugging Face cache and the hub is "
                        f"{'switched off (HF_HUB_OFFLINE)' if offline_mode() else 'not reachable'}; "
                        "give a local exported folder instead") from None
    except RepositoryNotFoundError:
        raise DataError(f"{name}: no such model repository on the hub (or it is private: log in with `hf auth login`)"
                        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise DataError(f"cannot fetch {name} from the hub: {str(e).splitlines()[0]}") from None
