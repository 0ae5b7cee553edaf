"""Shared fixtures: an offline, empty HF cache and tiny random checkpoints built once a session."""

import os
import tempfile

# Before transformers / huggingface_hub are imported anywhere: no network, a private cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="docread-hf-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DOCREAD_CACHE", tempfile.mkdtemp(prefix="docread-cache-"))  # quantized copies: not the user's

import pytest  # noqa: E402

from docread.testing import build_tiny_llava  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A llava-hf LLaVA-1.5-format checkpoint folder (config, safetensors, tokenizer, processor)."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), kind="llava")


@pytest.fixture(scope="session")
def tiny_llava_next(tmp_path_factory):
    """A llava-hf LLaVA-1.6 (llava_next) checkpoint folder."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava-next"), kind="llava_next", seed=1)
