"""Our StageLM equals transformers' MusicGen: same logits, same greedy codes (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch
from helpers import hf_generate_codes, make_hf_musicgen

import stage
from stage.generate.params import GenerationOptions, GenerationParams
from stage.generate.pipeline import generate_stems
from stage.generate.reference import reference_generate

PROMPTS = ["rock drums with a heavy kick and crashing cymbals", "jazz"]  # different lengths: padding


def _hf_logits(hf, tokenizer, codes):
    B, K, S = codes.shape
    inputs = tokenizer(PROMPTS[:B], padding=True, return_tensors="pt")
    with torch.no_grad():
        return hf(**inputs, decoder_input_ids=codes.reshape(B * K, S)).logits.view(B, K, S, -1)


def test_logits_match_transformers(hf_tiny):
    folder, hf, tokenizer = hf_tiny
    model = stage.load_model(folder)
    assert model.config.lm.layout == "musicgen"
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (2, 4, 37), generator=g)
    codes[:, :, 0] = 2048  # MusicGen's BOS step
    codes[1, 3, :4] = 2048  # and some delay-pattern pads
    ref = _hf_logits(hf, tokenizer, codes)
    with torch.no_grad():
        ours = model.lm(codes, model.text(PROMPTS))
    assert ours.shape == ref.shape == (2, 4, 37, 2048)
    assert (ours - ref).abs().max().item() < 1e-4


def test_text_states_match_transformers(hf_tiny):
    folder, hf, tokenizer = hf_tiny
    model = stage.load_model(folder)
    inputs = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = hf.text_encoder(**inputs).last_hidden_state
        ref = hf.enc_to_dec_proj(hidden) * inputs["attention_mask"][..., None]
        cond = model.text(PROMPTS)
    assert torch.equal(cond.mask, inputs["attention_mask"].bool())
    assert (cond.states - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_greedy_generation_matches_transformers(hf_tiny, guidance):
    folder, hf, tokenizer = hf_tiny
    model = stage.load_model(folder)
    frames = 100  # 2 s at 50 Hz
    inputs = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    ref = hf_generate_codes(hf, inputs, guidance, frames)
    ours = reference_generate(model.lm, model.text(PROMPTS), frames, GenerationParams(guidance=guidance, top_k=1))
    assert ours.shape == ref.shape == (2, 4, frames)
    assert torch.equal(ours, ref)


def test_high_level_generate_matches_transformers_audio(hf_tiny):
    """The public API (text only, greedy, CFG 3) gives the same codes and decoded audio."""
    folder, hf, tokenizer = hf_tiny
    model = stage.load_model(folder)
    inputs = tokenizer(PROMPTS[:1], return_tensors="pt")
    ref = hf_generate_codes(hf, inputs, 3.0, 50)
    result = generate_stems(model, options=GenerationOptions(prompt=PROMPTS[0], seconds=1.0, top_k=1))
    assert torch.equal(result.codes, ref)
    with torch.no_grad():
        audio = hf.audio_encoder.decode(ref[None], [None]).audio_values[0].numpy()
    assert result.stems.shape == (1, 1, 32000)
    assert abs(result.stems[0] - audio[:, :32000]).max() < 1e-5


@pytest.mark.slow
def test_logits_match_transformers_musicgen_small_shapes(tmp_path):
    """Full musicgen-small decoder shapes (1024 x 24, 16 heads) with random weights."""
    hf, tokenizer = make_hf_musicgen(seed=1, hidden=1024, layers=24, heads=16, ffn=4096, text_dim=64)
    hf.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    model = stage.load_model(tmp_path)
    assert model.lm.num_parameters() == 419_588_096 - 0  # 2050-row tables, like the authors' LM (§2.3)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (2, 4, 64), generator=g)
    codes[:, :, 0] = 2048
    ref = _hf_logits(hf, tokenizer, codes)
    with torch.no_grad():
        ours = model.lm(codes, model.text(PROMPTS))
    assert (ours - ref).abs().max().item() < 1e-4
