import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _corpus_cache(tmp_path_factory):
    """Prepared corpora go to a temporary cache, never to the user's ~/.cache."""
    old = os.environ.get("CATDIFF_CACHE")
    os.environ["CATDIFF_CACHE"] = str(tmp_path_factory.mktemp("corpus-cache"))
    yield
    if old is None:
        os.environ.pop("CATDIFF_CACHE", None)
    else:
        os.environ["CATDIFF_CACHE"] = old
