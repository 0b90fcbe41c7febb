"""Shared fixtures: tiny models built from configs with seeded random weights (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model():
    import stage

    return stage.load_model("tiny")


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory):
    """A tiny random transformers MusicGen saved with save_pretrained (+ tokenizer).
    Returns (folder, hf_model, tokenizer)."""
    from helpers import make_hf_musicgen

    folder = tmp_path_factory.mktemp("hf_tiny")
    model, tokenizer = make_hf_musicgen(seed=0)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder, model, tokenizer


@pytest.fixture
def codec_inputs(monkeypatch):
    """Every waveform the model's codec encodes during the test, as float32 [B, 1, N] arrays (a
    recording wrapper around the real `Codec.encode`, which still runs)."""
    from stage.tokens.codec import Codec

    seen = []
    original = Codec.encode

    def record(self, audio, *args, **kwargs):
        seen.append(audio.detach().cpu().numpy().copy())
        return original(self, audio, *args, **kwargs)

    monkeypatch.setattr(Codec, "encode", record)
    return seen
