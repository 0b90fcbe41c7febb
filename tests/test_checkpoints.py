"""Checkpoint import (authors' STAGE files, audiocraft, transformers), `stage convert`, and refusals.

The authors' and audiocraft files are synthesised here, at small shapes, from the key tables of
docs/method.md §7.2-§7.4, starting from a random transformers MusicGen. Loading them must give
the transformers model's numbers back.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import stage
from stage.cli import main
from stage.errors import CheckpointError, OfflineError

PROMPTS = ["funky drums", "a slow jazz trio with brushed snare"]
D, LAYERS, K = 64, 2, 4


# ----------------------------------------------------------------------------- file synthesis


def audiocraft_lm_state(hf) -> dict[str, torch.Tensor]:
    """audiocraft LM names, from the transformers names (the inverse of HF's conversion)."""
    sd = hf.state_dict()
    P = "decoder.model.decoder."
    out = {}
    for k in range(K):
        out[f"emb.{k}.weight"] = sd[f"{P}embed_tokens.{k}.weight"]
        out[f"linears.{k}.weight"] = sd[f"decoder.lm_heads.{k}.weight"]
    for i in range(LAYERS):
        L = f"{P}layers.{i}."
        A = f"transformer.layers.{i}."
        for theirs, ours in (("norm1", "self_attn_layer_norm"), ("norm_cross", "encoder_attn_layer_norm"), ("norm2", "final_layer_norm")):
            out[f"{A}{theirs}.weight"] = sd[f"{L}{ours}.weight"]
            out[f"{A}{theirs}.bias"] = sd[f"{L}{ours}.bias"]
        out[f"{A}self_attn.in_proj_weight"] = torch.cat([sd[f"{L}self_attn.{x}_proj.weight"] for x in "qkv"])
        out[f"{A}self_attn.out_proj.weight"] = sd[f"{L}self_attn.out_proj.weight"]
        out[f"{A}cross_attention.in_proj_weight"] = torch.cat([sd[f"{L}encoder_attn.{x}_proj.weight"] for x in "qkv"])
        out[f"{A}cross_attention.out_proj.weight"] = sd[f"{L}encoder_attn.out_proj.weight"]
        out[f"{A}linear1.weight"] = sd[f"{L}fc1.weight"]
        out[f"{A}linear2.weight"] = sd[f"{L}fc2.weight"]
    out["out_norm.weight"] = sd[f"{P}layer_norm.weight"]
    out["out_norm.bias"] = sd[f"{P}layer_norm.bias"]
    out["condition_provider.conditioners.description.output_proj.weight"] = sd["enc_to_dec_proj.weight"]
    out["condition_provider.conditioners.description.output_proj.bias"] = sd["enc_to_dec_proj.bias"]
    return {k: v.clone() for k, v in out.items()}


def authors_state(hf, seed: int = 0) -> dict[str, torch.Tensor]:
    """The authors' full LightningMusicgen state_dict (§7.2 STAGE column, §7.3, §7.4)."""
    ac = audiocraft_lm_state(hf)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in range(K):
        table = ac[f"emb.{k}.weight"]  # [2049, D]
        sep = torch.randn(1, D, generator=g) * (2.0 / D) ** 0.5  # the Kaiming-initialised context row
        table = torch.cat([table, sep])
        table[2048] = 0.0  # zeroed pad row
        out[f"lm.decoder.token_emb.emb.{k}.weight"] = table
        out[f"lm.decoder.to_logits.linears.{k}.weight"] = ac[f"linears.{k}.weight"]
    A = "lm.decoder.attn_layers.layers."
    for i in range(LAYERS):
        T = f"transformer.layers.{i}."
        sa, ca, ff = 3 * i, 3 * i + 1, 3 * i + 2
        for j, name in ((sa, "norm1"), (ca, "norm_cross"), (ff, "norm2")):
            out[f"{A}{j}.0.0.weight"] = ac[f"{T}{name}.weight"]
            out[f"{A}{j}.0.0.bias"] = ac[f"{T}{name}.bias"]
        for j, name in ((sa, "self_attn"), (ca, "cross_attention")):
            q, k_, v = ac[f"{T}{name}.in_proj_weight"].split(D)
            out[f"{A}{j}.1.to_q.weight"], out[f"{A}{j}.1.to_k.weight"], out[f"{A}{j}.1.to_v.weight"] = q, k_, v
            out[f"{A}{j}.1.to_out.weight"] = ac[f"{T}{name}.out_proj.weight"]
        out[f"{A}{ff}.1.ff.0.0.weight"] = ac[f"{T}linear1.weight"]
        out[f"{A}{ff}.1.ff.2.weight"] = ac[f"{T}linear2.weight"]
    out["lm.decoder.attn_layers.final_norm.weight"] = ac["out_norm.weight"]
    out["lm.decoder.attn_layers.final_norm.bias"] = ac["out_norm.bias"]
    proj = "condition_provider.conditioners.description.output_proj."
    out["condition_provider.embedders.description.output_proj.weight"] = ac[proj + "weight"]
    out["condition_provider.embedders.description.output_proj.bias"] = ac[proj + "bias"]
    for key, value in hf.text_encoder.state_dict().items():
        if key != "encoder.embed_tokens.weight":  # tied to shared.weight; safetensors stores one name
            out[f"condition_provider.embedders.description.t5.{key}"] = value.clone()
    for key, value in hf.audio_encoder.state_dict().items():
        out[f"encodec_model.{audiocraft_encodec_name(key)}"] = value.clone()
    return {k: v.contiguous() for k, v in out.items()}


def audiocraft_encodec_name(hf_key: str) -> str:
    """transformers EnCodec name -> audiocraft name (§7.3): layers.i -> model.i, conv -> conv.conv
    (convtr.convtr for the decoder's upsampling layers 3, 6, 9, 12), _codebook under vq."""
    m = re.match(r"(encoder|decoder)\.layers\.(\d+)\.(.*)", hf_key)
    if m:
        part, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if rest.startswith("conv."):
            wrap = "convtr.convtr." if part == "decoder" and idx in (3, 6, 9, 12) else "conv.conv."
            rest = wrap + rest[len("conv."):]
        rest = re.sub(r"^(block\.\d+|shortcut)\.conv\.", r"\1.conv.conv.", rest)
        return f"{part}.model.{idx}.{rest}"
    return hf_key.replace("quantizer.layers.", "quantizer.vq.layers.").replace(".codebook.", "._codebook.")


@pytest.fixture(scope="module")
def authors_file(hf_tiny, tmp_path_factory):
    folder, hf, tokenizer = hf_tiny
    path = tmp_path_factory.mktemp("authors") / "stage-drums.safetensors"
    save_file(authors_state(hf), str(path))
    return path, hf, tokenizer, folder


def _load_authors(path, folder, **kw):
    return stage.load_model(path, tokenizer=str(folder), **kw)


def _hf_logits(hf, tokenizer, codes, prompts=PROMPTS):
    B, K_, S = codes.shape
    inputs = tokenizer(prompts[:B], padding=True, return_tensors="pt")
    with torch.no_grad():
        return hf(**inputs, decoder_input_ids=codes.reshape(B * K_, S)).logits.view(B, K_, S, -1)


def _random_codes(seed=0, S=30):
    return torch.randint(0, 2048, (2, K, S), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the authors' format


def test_authors_checkpoint_loads_and_matches_reference(authors_file):
    path, hf, tokenizer, folder = authors_file
    model = _load_authors(path, folder)
    assert model.config.lm.layout == "stage"
    assert (model.config.lm.dim, model.config.lm.num_layers, model.config.lm.num_heads) == (D, LAYERS, D // 64)
    codes = _random_codes()  # no pad ids: the zeroed pad row is the only intended difference
    # The LM has one head of 64 here (heads = dim / 64, MusicGen's head width); compare to an HF
    # model of the same weights and head count.
    hf1 = _hf_with_heads(hf, 1)
    with torch.no_grad():
        ours = model.lm(codes, model.text(PROMPTS))
    assert (ours - _hf_logits(hf1, tokenizer, codes)).abs().max() < 1e-4
    audio = torch.randn(1, 1, 6400, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        ref_codes = hf.audio_encoder.encode(audio, bandwidth=2.2).audio_codes[0]
    assert torch.equal(model.codec.encode(audio), ref_codes)


def _hf_with_heads(hf, heads):
    from transformers import MusicgenForConditionalGeneration

    config = hf.config.__class__.from_dict(hf.config.to_dict())
    config.decoder.num_attention_heads = heads
    other = MusicgenForConditionalGeneration(config).eval()
    other.load_state_dict(hf.state_dict())
    return other


def test_authors_pad_row_is_zero_and_context_row_is_used(authors_file, tmp_path):
    path, hf, tokenizer, folder = authors_file
    state = authors_state(hf)
    model = _load_authors(path, folder)
    for k in range(K):
        table = model.lm.emb[k].weight
        assert torch.count_nonzero(table[2048]) == 0
        assert torch.equal(table[2049], state[f"lm.decoder.token_emb.emb.{k}.weight"][2049])
    from stage.tokens.layout import build_training_layout

    layout = build_training_layout(_random_codes(1, 6), _random_codes(2, 8), model.config.lm.delays)
    assert (layout.codes == 2049).any()

    def target_logits(st):
        p = tmp_path / f"v{len(list(tmp_path.iterdir()))}.safetensors"
        save_file(st, str(p))
        m = _load_authors(p, folder)
        with torch.no_grad():
            return m.lm(layout.codes, m.text(PROMPTS), layout.attended, layout.positions)[:, :, 8:]

    base = target_logits(state)
    changed_pad = {k: v.clone() for k, v in state.items()}
    changed_pad["lm.decoder.token_emb.emb.0.weight"][2048] = 5.0  # re-zeroed on load, and masked
    assert torch.allclose(target_logits(changed_pad), base, atol=1e-6)
    changed_ctx = {k: v.clone() for k, v in state.items()}
    # (a random direction: a constant shift would vanish in the pre-LayerNorms)
    changed_ctx["lm.decoder.token_emb.emb.0.weight"][2049] += torch.randn(D, generator=torch.Generator().manual_seed(9))
    assert (target_logits(changed_ctx) - base).abs().max() > 1e-3


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("lm.decoder.attn_layers.layers.4.1.to_k.weight"), "missing tensor 'lm.decoder.attn_layers.layers.4.1.to_k.weight'"),
        (lambda s: s.__setitem__("lm.decoder.attn_layers.layers.4.1.to_kk.weight", s.pop("lm.decoder.attn_layers.layers.4.1.to_k.weight")),
         "missing tensor 'lm.decoder.attn_layers.layers.4.1.to_k.weight'"),
        (lambda s: s.__setitem__("lm.decoder.extra.weight", torch.zeros(3)), "unexpected tensor 'lm.decoder.extra.weight'"),
        (lambda s: s.__setitem__("lm.decoder.attn_layers.layers.2.1.ff.2.weight", torch.zeros(D, 7)),
         "'lm.decoder.attn_layers.layers.2.1.ff.2.weight' gives shape (64, 7)"),
        (lambda s: s.pop("condition_provider.embedders.description.output_proj.bias"),
         "missing tensor 'condition_provider.embedders.description.output_proj.bias'"),
        (lambda s: s.pop("encodec_model.quantizer.vq.layers.2._codebook.embed"), "missing tensor 'quantizer.layers.2.codebook.embed'"),
    ],
)
def test_authors_checkpoint_refuses_bad_keys(hf_tiny, tmp_path, edit, message):
    folder, hf, tokenizer = hf_tiny
    state = authors_state(hf)
    edit(state)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        _load_authors(path, folder)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- audiocraft


def test_audiocraft_state_dict_matches_transformers(hf_tiny, tmp_path):
    folder, hf, tokenizer = hf_tiny
    path = tmp_path / "state_dict.bin"
    torch.save({"best_state": audiocraft_lm_state(hf), "xp.cfg": "transformer_lm:\n  num_heads: 4\n  num_layers: 2\n",
                "version": "1.0", "exported": True}, str(path))
    # The frozen parts of an audiocraft export live elsewhere; point at the HF folder's copies.
    codec_dir, text_dir = tmp_path / "codec", tmp_path / "t5"
    hf.audio_encoder.save_pretrained(str(codec_dir))
    hf.text_encoder.save_pretrained(str(text_dir))
    tokenizer.save_pretrained(str(text_dir))
    model = stage.load_model(path, codec=str(codec_dir), text=str(text_dir))
    assert model.config.lm.layout == "musicgen" and model.config.lm.num_heads == 4
    codes = _random_codes()
    codes[:, :, 0] = 2048  # the learned BOS row is kept in the MusicGen layout
    with torch.no_grad():
        ours = model.lm(codes, model.text(PROMPTS))
    assert (ours - _hf_logits(hf, tokenizer, codes)).abs().max() < 1e-4


def test_audiocraft_refuses_unknown_tensor(hf_tiny, tmp_path):
    folder, hf, tokenizer = hf_tiny
    best = audiocraft_lm_state(hf)
    best["transformer.layers.0.self_attn.in_proj_bias"] = torch.zeros(3 * D)
    path = tmp_path / "state_dict.bin"
    torch.save({"best_state": best}, str(path))
    with pytest.raises(CheckpointError, match="unexpected tensor 'transformer.layers.0.self_attn.in_proj_bias'"):
        stage.load_model(path, codec=str(folder), text=str(folder))


class PickledThing:
    """Any Python object a checkpoint would need unpickling for."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "state_dict.bin"
    torch.save({"best_state": {}, "obj": PickledThing()}, str(path))
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        stage.load_model(path)


# ----------------------------------------------------------------------------- convert round trips


def test_convert_authors_round_trip(authors_file, tmp_path, capsys):
    path, hf, tokenizer, folder = authors_file
    out = tmp_path / "converted"
    assert main(["convert", str(path), "--out", str(out), "--tokenizer", str(folder), "--stem", "drums"]) == 0
    assert "wrote" in capsys.readouterr().out
    src = _load_authors(path, folder)
    dst = stage.load_model(out)
    assert dst.config.stem == "drums"
    from stage.tokens.layout import build_training_layout

    layout = build_training_layout(_random_codes(3, 5), _random_codes(4, 9), src.config.lm.delays)
    with torch.no_grad():
        a = src.lm(layout.codes, src.text(PROMPTS), layout.attended, layout.positions)
        b = dst.lm(layout.codes, dst.text(PROMPTS), layout.attended, layout.positions)
    assert torch.equal(a, b)
    audio = torch.randn(1, 1, 3200) * 0.1
    assert torch.equal(src.codec.encode(audio), dst.codec.encode(audio))


def test_convert_hf_round_trip_float16(hf_tiny, tmp_path):
    folder, hf, tokenizer = hf_tiny
    out = tmp_path / "fp16"
    assert main(["convert", str(folder), "--out", str(out), "--dtype", "float16"]) == 0
    src, dst = stage.load_model(folder), stage.load_model(out)
    codes = _random_codes(5)
    with torch.no_grad():
        a = src.lm(codes, src.text(PROMPTS))
        b = dst.lm(codes, dst.text(PROMPTS))
    assert (a - b).abs().max() < 0.05  # fp16 storage of the LM weights
    assert (a - b).abs().max() > 0  # and it really was stored in fp16


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["convert", "tiny", "--out", str(out)]) == 0
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert main(["convert", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == before
    assert main(["convert", "tiny", "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--out", "{tmp}/notes.txt", "--force"], "exists and is not a folder"),  # --force replaces folders, not files
    (["--out", "{tmp}/notes.txt"], "exists and is not a folder"),
    (["--stem", "kazoo"], "unknown stem 'kazoo'"),
])
def test_convert_mistakes_are_one_line_and_touch_nothing(tmp_path, capsys, extra, message):
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["convert", "tiny", "--out", str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_unbundled_checkpoint_names_hub_sources_and_fails_clearly_offline(authors_file, tmp_path, monkeypatch):
    path, hf, tokenizer, folder = authors_file
    out = tmp_path / "thin"
    assert main(["convert", str(path), "--out", str(out), "--tokenizer", str(folder), "--no-bundle"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "stage.json"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="facebook/encodec_32khz"):
        stage.load_model(out)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such file or folder"),
        (lambda p: (p.mkdir(), p)[1], "not a model folder"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
        (lambda p: (p.write_bytes(b"not a checkpoint at all"), p)[1], "unknown checkpoint type"),
    ],
)
def test_bad_sources_fail_with_one_line(tmp_path, make, message, capsys):
    target = make(tmp_path / "thing")
    with pytest.raises(CheckpointError, match=message):
        stage.load_model(target)
    assert main(["convert", str(target), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_corrupt_safetensors_is_refused(tmp_path):
    path = tmp_path / "stage-bass.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        stage.load_model(path)


def test_stage_checkpoint_with_bad_config_is_refused(tmp_path):
    out = tmp_path / "ck"
    stage.load_model("tiny").save(out)
    meta = (out / "stage.json").read_text().replace('"num_layers": 2', '"num_layers": 2, "num_layerz": 3')
    (out / "stage.json").write_text(meta)
    with pytest.raises(CheckpointError, match="unknown config key lm.'num_layerz'"):
        stage.load_model(out)


def test_tiny_generate_returns_requested_length(tiny_model):
    result = stage.generate_stems(tiny_model, options=stage.GenerationOptions(prompt="rock drums", seconds=1.5, seed=3))
    assert result.stems.shape == (1, 1, 48_000)
    assert result.sample_rate == 32_000 and result.seeds == [3]
    assert np.isfinite(result.stems).all() and np.abs(result.stems).max() > 0
    assert result.codes.shape == (1, 4, 75)


def test_hub_models_fail_clearly_offline(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="facebook/musicgen-small") as info:
        stage.load_model("musicgen-small")
    assert "\n" not in str(info.value)
    assert main(["convert", "facebook/musicgen-medium", "--out", str(tmp_path / "out")]) == 2
    assert "facebook/musicgen-medium" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_authors_file_needs_the_t5_tokenizer_and_says_so_offline(authors_file, monkeypatch):
    path, hf, tokenizer, folder = authors_file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="google-t5/t5-base"):
        stage.load_model(path)  # no tokenizer given: the default is t5-base from the hub


def test_convert_to_an_unwritable_place_fails_cleanly(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["convert", "tiny", "--out", str(blocker / "out")]) == 2  # a path under a regular file
    assert "not writable" in capsys.readouterr().err
    assert main(["convert", "tiny", "--out", "/proc/stage-out"]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and err.count("\n") == 1


@pytest.mark.parametrize("config, message", [
    ('{"model_type": "musicgen", "decoder": 3, "text_encoder": 1, "audio_encoder": 2}', "unreadable MusicGen config"),  # was a traceback
    ('{"model_type": "musicgen"', "not valid JSON"),
    ('{"model_type": "bert"}', "not MusicGen"),
])
def test_a_broken_transformers_folder_is_one_checkpoint_error(tmp_path, capsys, config, message):
    (tmp_path / "config.json").write_text(config)
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()
