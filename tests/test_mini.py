"""STAGE-mini: the `mini` preset, its bundled frozen parts (stage-mini-codec, stage-mini-text), the
bundled models (stage-mini-drums, stage-mini-bass) and the default-model choice of `stage generate`.

Until the real codec and models ship, a random codec with the mini codec's shape (32 kHz, hop 640,
4 x 1024 codes) stands in for `stage-mini-codec` in a temporary assets folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stage.errors import CheckpointError, ConfigError, StageError
from stage.model import registry, sources
from stage.model.config import MINI_CODEC, MINI_TEXT, MINI_TEXT_DIM, LMConfig, StageConfig, preset

REAL_ASSETS = sources.ASSETS
CAPTIONS = [
    "Genres: Funk. Moods: groovy, energetic.",
    "Genres: Rock, Hard Rock. Moods: aggressive, driving.",
    "Genres: Hip Hop, Boom Bap. Moods: laid-back, dark.",
    "Genres: Bossa Nova, Latin Jazz. Moods: smooth, romantic.",
    "Genres: Disco, Dance. Moods: upbeat, happy.",
    "Genres: Reggae, Dub. Moods: relaxed, sunny.",
    "Genres: Jazz, Swing. Moods: sophisticated, swinging.",
    "Genres: Metal, Thrash Metal. Moods: intense, heavy.",
    "Genres: House, Deep House. Moods: hypnotic, danceable.",
    "Genres: Ballad, Soft Rock. Moods: tender, emotional, melancholic.",
    "punk rock drums",
    "funky slap bass at 120 bpm",
]


@pytest.fixture(scope="module")
def mini_assets(tmp_path_factory):
    """An assets folder with a random stand-in for stage-mini-codec and the real stage-mini-text."""
    from transformers import EncodecModel

    from stage.tokens.codec import TINY_ENCODEC_CONFIG, encodec_config, init_random_codebooks

    root = tmp_path_factory.mktemp("assets")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = EncodecModel(encodec_config(**{**TINY_ENCODEC_CONFIG, "codebook_size": 1024, "target_bandwidths": [2.0]}))
    init_random_codebooks(codec.eval(), 0)
    codec.save_pretrained(str(root / MINI_CODEC))
    (root / MINI_TEXT).symlink_to(REAL_ASSETS / MINI_TEXT, target_is_directory=True)
    return root


@pytest.fixture
def use_assets(mini_assets, monkeypatch):
    monkeypatch.setattr(sources, "ASSETS", mini_assets)
    monkeypatch.setattr(registry, "ASSETS", mini_assets)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return mini_assets


@pytest.fixture(scope="module")
def mini_model(mini_assets):
    from stage.model.checkpoints import load_model

    old = sources.ASSETS
    sources.ASSETS = mini_assets
    try:
        return load_model("mini")
    finally:
        sources.ASSETS = old


def test_mini_preset_builds_and_validates():
    from stage.model.lm import StageLM

    c = preset("mini")
    assert (c.lm.dim, c.lm.num_layers, c.lm.num_heads, c.lm.ffn_dim) == (256, 6, 4, 1024)
    assert (c.lm.num_codebooks, c.lm.codebook_size, c.lm.layout) == (4, 1024, "stage")
    assert (c.lm.pad_id, c.lm.context_id) == (1024, 1025)
    assert (c.codec.source, c.codec.sample_rate, c.codec.frame_rate, c.codec.hop_length) == (MINI_CODEC, 32_000, 50, 640)
    assert (c.text.source, c.text.tokenizer, c.text.dim) == (MINI_TEXT, MINI_TEXT, MINI_TEXT_DIM)
    assert c.window_seconds == 5.0 and preset("tiny").window_seconds == 10.0  # trained on 5 s windows
    assert StageConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with torch.device("meta"):
        params = sum(p.numel() for p in StageLM(c.lm).parameters())
    assert 7e6 < params < 10e6


def test_mini_code_embeddings_are_as_loud_as_the_positions():
    """From scratch, HF's N(0, 0.02) code rows would be ~20x quieter than the sinusoid."""
    from stage.model.lm import StageLM, sinusoidal_embedding

    c = preset("mini")
    torch.manual_seed(0)
    lm = StageLM(c.lm)
    codes = torch.randint(0, 1024, (1, 4, 200))
    positions = torch.arange(200)[None]
    with torch.no_grad():
        tokens = sum(lm.emb[k](codes[:, k]) for k in range(4))  # [1, S, D]
    ratio = tokens.norm(dim=-1).mean() / sinusoidal_embedding(positions, c.lm.dim).norm(dim=-1).mean()
    assert 0.7 < float(ratio) < 1.3
    assert float(lm.emb[0].weight[c.lm.pad_id].detach().abs().max()) == 0.0  # the pad row stays zero
    with pytest.raises(ConfigError, match="embedding_std"):
        LMConfig(embedding_std=-1.0)
    assert LMConfig().embedding_std is None  # MusicGen shapes keep HF's init


def test_mini_text_asset_loads_offline_and_covers_the_captions(monkeypatch):
    from stage.model.sources import build_text, load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = load_tokenizer(MINI_TEXT)
    words = {w for c in CAPTIONS for w in c.replace(".", " ").replace(",", " ").replace(":", " ").split()}
    try:  # the band renderer's whole caption vocabulary, when it is there
        from stage.data.band_score import GENRES

        for g in GENRES.values():
            words |= {w for tag in g.tags for w in tag.split()} | set(g.moods)
    except ImportError:
        pass
    for text in sorted(words) + CAPTIONS + ["Café del Mar, Motörhead! 4/4 @ 97 BPM"]:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, (text, tok.convert_ids_to_tokens(ids))
    for word in ("Funk", "Rock", "Disco", "Reggae", "Jazz", "Swing", "Metal", "House", "Ballad", "groovy", "energetic"):
        assert len(tok.tokenize(word)) == 1, (word, tok.tokenize(word))  # whole words, not letters
    config = preset("mini").text
    a, b = build_text(config, 256), build_text(config, 256)
    assert a.encoder.config.d_model == MINI_TEXT_DIM and not any(p.requires_grad for p in a.encoder.parameters())
    ids, mask = a.tokenize(CAPTIONS)
    with torch.no_grad():
        ha = a.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        hb = b.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    assert torch.equal(ha, hb) and torch.isfinite(ha).all()  # fixed weights from the package
    assert (ha[0, :4] - ha[1, :4]).abs().mean() > 0.1  # different captions, different states


def test_missing_bundled_asset_is_a_clear_error(tmp_path, monkeypatch):
    from stage.model.sources import build_codec

    monkeypatch.setattr(sources, "ASSETS", tmp_path)
    with pytest.raises(CheckpointError, match="bundled asset 'stage-mini-codec'.*missing from this install"):
        build_codec(preset("mini").codec)


def test_mini_init_trains_and_a_thin_fp16_checkpoint_loads_offline(mini_model, use_assets, monkeypatch, tmp_path):
    """`model.init: mini` is a seeded fresh model; StageModel.save(bundle=False, float16) of it is a
    thin folder naming the bundled codec and text, which `stage-mini-drums` then loads."""
    from stage.model.checkpoints import load_model
    from stage.train.config import ModelSection
    from stage.train.module import build_model, teacher_forced

    again = build_model(ModelSection(init="mini", stem="drums"))
    assert again.config.stem == "drums" and again.config.lm.layout == "stage"
    assert torch.equal(again.lm.emb[0].weight, mini_model.lm.emb[0].weight)  # seeded: the same every time
    assert not again.lm.emb[0].weight[1024].any()  # the pad row is zero (§2.3)
    codes = torch.randint(0, 1024, (2, 4, 10))
    out = teacher_forced(again.lm, codes, codes, again.text(CAPTIONS[:2]))
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 4, 10, 1024)
    from stage.train.run import frozen_sources

    codec, text = frozen_sources(again, "mini", tmp_path / "run")  # step checkpoints name the assets
    assert (codec.source, text.source, text.tokenizer) == (MINI_CODEC, MINI_TEXT, MINI_TEXT)
    assert not (tmp_path / "run").exists()

    folder = use_assets / "stage-mini-drums"
    mini_model.config = mini_model.config.replace(stem="drums")
    try:
        mini_model.save(folder, bundle=False, dtype=torch.float16)
    finally:
        mini_model.config = mini_model.config.replace(stem=None)
    meta = json.loads((folder / "stage.json").read_text())
    assert meta["config"]["codec"]["source"] == MINI_CODEC and meta["config"]["text"]["source"] == MINI_TEXT
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "stage.json"]
    from stage.files import default_mode
    from stage.generate.params import GenerationOptions
    from stage.generate.pipeline import default_window, generate_stems

    assert (folder / "model.safetensors").stat().st_mode & 0o777 == default_mode()  # not safetensors' 0600
    # A bundled save (the final model of a run) names the package assets instead of copying them,
    # so converting it with --no-bundle later still gives a loadable thin checkpoint.
    bundled = mini_model.save(tmp_path / "bundled")
    assert json.loads((bundled / "stage.json").read_text())["config"]["codec"]["source"] == MINI_CODEC
    assert not (bundled / "codec").exists() and not (bundled / "text").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAGE_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    try:
        assert registry.resolve_known("stage-mini-drums").source == str(folder)
        model = load_model("stage-mini-drums")
        assert model.config.stem == "drums" and model.config.codec.codebook_size == 1024
        window = default_window(model)
        assert (model.config.window_seconds, window.window_seconds, window.prompt_seconds) == (5.0, 5.0, 2.5)
        w = mini_model.lm.blocks[0].ff_in.weight
        assert torch.equal(model.lm.blocks[0].ff_in.weight, w.half().float())
        result = generate_stems(model, None, options=GenerationOptions(prompt=CAPTIONS[0], seconds=0.3, bpm=120,
                                                                       temperature=0.0, seed=0))
        assert result.stems.shape == (1, 1, 9600) and result.codes.max() < 1024
    finally:
        import shutil

        shutil.rmtree(folder)


@pytest.mark.parametrize("name", ["stage-mini-drums", "stage-mini-bass"])
def test_registry_resolves_the_bundled_mini_models(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAGE_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = REAL_ASSETS / registry.KNOWN_MODELS[name].bundled
    if registry.bundled_path(name) is None:
        with pytest.raises(CheckpointError, match="not in this install"):
            registry.resolve_known(name)
        pytest.skip(f"the {name} weights are not trained yet (no {folder}/model.safetensors)")
    from stage.model.checkpoints import load_model

    assert registry.resolve_known(name).source == str(folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(name)
    assert model.config.stem == registry.KNOWN_MODELS[name].stem and model.config.lm.codebook_size == 1024


def _fake_bundle(root: Path, name: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "stage.json").write_text("{}")
    (root / name / "model.safetensors").write_bytes(b"x")


def test_default_model_prefers_the_authors_then_the_bundled_mini(tmp_path, monkeypatch, capsys):
    from stage.generate.commands import resolve_stem_and_model

    assets, models = tmp_path / "assets", tmp_path / "models"
    models.mkdir()
    monkeypatch.setattr(registry, "ASSETS", assets)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAGE_MODELS", str(models))
    monkeypatch.setenv("HOME", str(tmp_path))

    # Nothing installed: one clear error naming both models and where the authors' file goes.
    with pytest.raises(StageError) as err:
        resolve_stem_and_model("drums", None)
    text = str(err.value)
    assert "stage-drums" in text and "stage-mini-drums" in text and "stage-drums.safetensors" in text
    assert "\n" not in text and str(models) in text

    # Only the bundled mini: it is used, and the line says the authors' model is bigger and where it is.
    _fake_bundle(assets, "stage-mini-drums")
    assert resolve_stem_and_model("drums", None) == ("drums", "stage-mini-drums")
    line = capsys.readouterr().err.strip()
    assert line.startswith("using stage-mini-drums (bundled); the authors' stage-drums is bigger: ")
    assert "github.com/giorgioskij/stage" in line and "\n" not in line
    assert resolve_stem_and_model("drums", None, quiet=True) == ("drums", "stage-mini-drums")
    assert capsys.readouterr().err == ""

    # The authors' file found locally wins.
    (models / "stage-drums.safetensors").write_bytes(b"x")
    assert resolve_stem_and_model("drums", None) == ("drums", "stage-drums")
    assert capsys.readouterr().err.strip() == f"using stage-drums ({models / 'stage-drums.safetensors'})"

    # Bass likewise; a stem with no model at all keeps its own message.
    _fake_bundle(assets, "stage-mini-bass")
    assert resolve_stem_and_model("bass", None)[1] == "stage-mini-bass"
    assert "the authors' stage-bass is bigger" in capsys.readouterr().err
    with pytest.raises(StageError, match="no released model generates 'piano'"):
        resolve_stem_and_model("piano", None)
    # --model without --stem takes the known model's stem.
    assert resolve_stem_and_model(None, "stage-mini-bass") == ("bass", "stage-mini-bass")


def test_models_table_lists_the_mini_models(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "ASSETS", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAGE_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    _fake_bundle(tmp_path, "stage-mini-drums")
    table = registry.models_table()
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()[2:]}
    assert "bundled, installed" in rows["stage-mini-drums"]
    assert "not in this install" in rows["stage-mini-bass"]


@pytest.mark.parametrize("stem", ["drums", "bass"])
def test_mini_train_configs_parse(stem):
    from stage.data.samples import SampleConfig
    from stage.train.config import load_config

    root = Path(__file__).resolve().parent.parent
    path = root / "configs" / f"mini-{stem}.yaml"
    config = load_config(path)
    assert config.model.init == "mini" and config.model.stem == stem
    assert config.data.kind == "tokens" and config.data.train == f"data/mini-{stem}-tokens"
    assert (config.dropout.context, config.dropout.text) == (0.1, 0.5)
    assert config.trainer.batch_size == 16 and config.optim.warmup_steps > 0 and config.trainer.bundle_final
    # The on-the-fly alternative written in the header parses to the same recipe.
    header = [ln.strip("# ").strip() for ln in path.read_text().splitlines() if "data.sample={" in ln][0]
    stems = load_config(path, ["data.kind=stems", "data.train=x", "data.val=null", header.strip('"')])
    sample = stems.data.sample
    assert isinstance(sample, SampleConfig) and stems.data.kind == "stems" and sample.target_stem == stem
    assert (sample.window_seconds, sample.min_context_seconds, sample.max_context_seconds) == (5.0, 5.0, 5.0)
    assert sample.metronome_prob == (0.5 if stem == "drums" else 0.0)


def test_alignment_heads_look_from_stem_frame_t_to_context_frame_t():
    """lm.align_offset: head 0 of the first two layers starts out peaked `offset` positions back
    (on a random model, before any training): from the step that predicts stem frame t to the
    step of context frame t in the STAGE layout."""
    import dataclasses

    from stage.model.lm import StageLM
    from stage.tokens.layout import build_training_layout

    c = preset("mini").lm
    assert c.align_offset == 250 and preset("mini").window_seconds * 50 == c.align_offset
    small = dataclasses.replace(c, num_layers=2, align_offset=60)
    torch.manual_seed(0)
    lm = StageLM(small).eval()
    context, target = torch.randint(0, 1024, (1, 4, 60)), torch.randint(0, 1024, (1, 4, 60))
    layout = build_training_layout(context, target, small.delays, small.pad_id, small.context_id)
    with torch.no_grad():
        x = lm.embed(layout.codes, layout.positions)
        D, H = small.dim, small.num_heads
        q, k, _ = lm.blocks[0].self_attn.qkv(lm.blocks[0].self_norm(x)).view(1, -1, 3, H, D // H).permute(2, 0, 3, 1, 4)
        logits = (q[0, 0] @ k[0, 0].T) / (D // H) ** 0.5  # head 0: [S, S]
        S = logits.shape[0]
        logits = logits.masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(), float("-inf"))
        stem_steps = torch.arange(70, S)
        looked = logits[stem_steps].argmax(-1)
        back = layout.positions[0, stem_steps] - layout.positions[0, looked]
        assert ((back - 60).abs() <= 1).float().mean() > 0.6  # chance: ~3 / 70
        q1, k1 = q[0, 1], k[0, 1]  # the other heads stay random
        random_head = ((q1 @ k1.T)[stem_steps].masked_fill(~torch.ones(S, S, dtype=torch.bool).tril()[stem_steps], float("-inf"))
                       .argmax(-1))
        assert ((layout.positions[0, stem_steps] - layout.positions[0, random_head] - 60).abs() <= 1).float().mean() < 0.2
    with pytest.raises(ConfigError, match="align_offset"):
        LMConfig(align_offset=0)
