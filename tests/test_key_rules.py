"""The key tables of stage.model.key_rules: each one fills every StageLM tensor exactly once, and
the worked example of the module docstring holds."""

from __future__ import annotations

import pytest
import torch

from stage.model.config import LMConfig
from stage.model.key_rules import AUDIOCRAFT_KEYS, AUTHORS_KEYS, HF_KEYS, Part, expand
from stage.model.lm import StageLM

CONFIG = LMConfig(dim=32, num_layers=2, num_heads=2, ffn_dim=64, num_codebooks=3, codebook_size=16, layout="musicgen")


@pytest.mark.parametrize("table", [HF_KEYS, AUTHORS_KEYS, AUDIOCRAFT_KEYS], ids=["hf", "authors", "audiocraft"])
def test_every_table_fills_every_lm_tensor_once(table):
    with torch.device("meta"):
        expected = list(StageLM(CONFIG).state_dict())
    targets = [rule.target for rule in expand(table, CONFIG)]
    assert sorted(targets) == sorted(expected)
    assert len(set(targets)) == len(targets)


def test_templates_are_filled_per_block_and_sublayer():
    rules = {rule.target: rule.parts for rule in expand(HF_KEYS, CONFIG)}
    P = "decoder.model.decoder.layers.1."
    assert rules["blocks.1.self_attn.qkv.weight"] == tuple(Part(f"{P}self_attn.{x}_proj.weight") for x in "qkv")
    authors = {rule.target: rule.parts for rule in expand(AUTHORS_KEYS, CONFIG)}
    assert authors["blocks.1.cross_norm.bias"] == (Part("lm.decoder.attn_layers.layers.4.0.0.bias"),)  # 3i + 1
    audiocraft = {rule.target: rule.parts for rule in expand(AUDIOCRAFT_KEYS, CONFIG)}
    assert audiocraft["blocks.0.cross_attn.kv.weight"] == (Part("transformer.layers.0.cross_attention.in_proj_weight", slice(32, 96)),)
