from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import build_tokenizer, save_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): the tiny model runs
    faster so, and on a shared machine two threads spin-wait on busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama-style model with a ChatML template, saved as an HF folder."""
    return save_tiny(tmp_path_factory.mktemp("tiny-chatml"), "chatml")


@pytest.fixture(scope="session")
def tiny_llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model with a Llama-3 style chat template and an untied lm_head."""
    return save_tiny(tmp_path_factory.mktemp("tiny-llama3"), "llama3", tie=False)


@pytest.fixture(params=["chatml", "llama3"])
def any_tokenizer(request: pytest.FixtureRequest):
    return build_tokenizer(request.param)


@pytest.fixture
def chatml_tokenizer():
    return build_tokenizer("chatml")


@pytest.fixture
def llama3_tokenizer():
    return build_tokenizer("llama3")
