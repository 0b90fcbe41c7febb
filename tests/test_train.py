"""`stage train` on the real Lightning trainer with tiny models: config, token shards, sampler,
resume, checkpoints, bad input, and (slow) learning and DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import make_shift_tokens

import stage
from stage.cli import main
from stage.data.example import AudioExample, TokenExample
from stage.data.samples import SampleConfig
from stage.errors import ConfigError, StageError
from stage.tokens import PAD_ID
from stage.train.config import TrainConfig, load_config
from stage.train.datamodule import StepSampler, collate
from stage.train.module import StageTrainingModule, teacher_forced, to_stage_layout
from stage.train.tokens import FORMAT_VERSION, TokenDataset, TokenWriter

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared, oversubscribed CI machine
    OpenMP's barriers make 2-thread ops 10x slower or worse (measured: 276 ms vs 4.5 s per step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens") / "train"
    make_shift_tokens(folder, examples=48, seed=0)
    return folder


def train_cli(out, data, *extra, capsys=None) -> int:
    return main(["train", "--config", TINY, "--out", str(out), f"data.train={data}", *map(str, extra)])


def read_metrics(run: Path) -> list[dict]:
    """Rows of the newest CSV log version that carry train/loss."""
    versions = sorted((run / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    with open(versions[-1] / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------- config


def test_config_files_load_with_the_authors_recipe():
    drums = load_config(ROOT / "configs" / "drums.yaml")
    assert (drums.optim.lr, drums.optim.betas, drums.optim.weight_decay) == (1e-5, (0.9, 0.95), 1e-3)
    assert (drums.trainer.batch_size, drums.trainer.accumulate, drums.trainer.clip_value) == (2, 4, 1.0)
    assert drums.trainer.clip_algorithm == "value" and drums.trainer.precision == "auto"
    assert (drums.dropout.context, drums.dropout.text, drums.dropout.word) == (0.1, 0.5, 0.3)
    assert drums.data.sample.target_stem == "drums" and drums.model.init == "musicgen-small"
    bass = load_config(ROOT / "configs" / "bass.yaml")
    assert bass.data.sample.target_stem == "bass" and bass.trainer.max_steps == 57_500
    assert load_config(TINY).model.init == "tiny"
    # The dataclass defaults are the recipe too.
    d = TrainConfig()
    assert (d.optim.lr, d.trainer.batch_size * d.trainer.accumulate, d.dropout.word) == (1e-5, 8, 0.3)


def test_overrides_are_typed_and_nested(tmp_path):
    c = load_config(TINY, ["optim.lr=2e-4", "optim.betas=[0.8, 0.9]", "trainer.devices=2", "model.lm.dim=32",
                           "trainer.clip_value=null", "data.kind=stems", "data.sample.target_stem=bass"])
    assert c.optim.lr == 2e-4 and c.optim.betas == (0.8, 0.9) and c.trainer.devices == 2
    assert c.model.lm.dim == 32 and c.trainer.clip_value is None and c.data.sample == SampleConfig("bass")
    assert TrainConfig.from_dict(c.to_dict()) == c  # what train.yaml stores reads back identically


@pytest.mark.parametrize("override, message", [
    ("trainer.max_step=3", "unknown config key 'trainer.max_step' (did you mean 'trainer.max_steps'?)"),
    ("optimizer.lr=1", "unknown config key 'optimizer'"),
    ("trainer.batch_size=two", "trainer.batch_size must be an integer"),
    ("optim.lr=-1", "optim.lr must be > 0"),
    ("dropout.text=1.5", "dropout.text must be in [0, 1]"),
    ("dropout.stem_tokens=-0.1", "dropout.stem_tokens must be in [0, 1]"),
    ("trainer.precision=fp8", "trainer.precision must be one of"),
    ("optim.betas=[0.9]", "optim.betas must be a list of 2 values"),
    ("trainer.strategy=horovod", "trainer.strategy must be one of"),
    ("trainer", "is not of the form key=value"),
    ("trainer.max_steps.x=1", "'trainer.max_steps' is not a section"),
    ("data.sample.metronome=0.5", "unknown config key 'data.sample.metronome' (did you mean 'data.sample.metronome_prob'?)"),
    ("data.sample=3", "data.sample must be a mapping"),

])
def test_bad_config_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, [override])
    assert message in str(err.value)


def test_model_stem_and_sample_target_must_agree():
    with pytest.raises(ConfigError, match="model.stem is 'bass' but data.sample.target_stem is 'drums'"):
        load_config(TINY, ["model.stem=bass", "data.kind=stems", "data.sample.target_stem=drums"])


def test_data_sample_is_a_typed_sample_config_that_round_trips_through_yaml(tmp_path):
    c = load_config(TINY, ["data.kind=stems", "data.sample.target_stem=bass", "data.sample.speed_range=[0.9, 1.1]",
                           "data.sample.context_stems=[drums, piano]", "data.sample.window_seconds=4",
                           "data.sample.min_context_seconds=2", "data.sample.max_context_seconds=4"])
    assert c.data.sample == SampleConfig("bass", window_seconds=4.0, min_context_seconds=2.0, max_context_seconds=4.0,
                                         speed_range=(0.9, 1.1), context_stems=("drums", "piano"))
    path = tmp_path / "train.yaml"
    path.write_text(c.to_yaml())  # what a run folder keeps, and what --resume reads
    assert load_config(path) == c
    # target_stem defaults to model.stem; a bad value names its key.
    assert load_config(TINY, ["model.stem=drums", "data.kind=stems", "data.sample.metronome_prob=0"]).data.sample == \
        SampleConfig("drums", metronome_prob=0.0)
    with pytest.raises(ConfigError, match=r"^data\.sample needs target_stem$"):
        load_config(TINY, ["data.kind=stems", "data.sample.metronome_prob=0"])
    with pytest.raises(ConfigError, match=r"^data\.sample\.pitch_range\[0\] must be an integer"):
        load_config(TINY, ["data.kind=stems", "data.sample.target_stem=bass", "data.sample.pitch_range=[x, 2]"])
    with pytest.raises(ConfigError, match=r"^data\.sample: metronome_prob must be a probability"):
        load_config(TINY, ["data.kind=stems", "data.sample.target_stem=bass", "data.sample.metronome_prob=2"])
    # A tokens run's train.yaml from before the typed section says `sample: {}`: no sample options.
    old = c.to_dict()
    old["model"]["stem"] = "drums"
    old["data"].update(kind="tokens", sample={})
    path.write_text(yaml.safe_dump(old))
    assert load_config(path).data.sample is None


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: [1,\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


# ----------------------------------------------------------------------------- token shards


def test_token_shards_round_trip_across_shards(tmp_path):
    rng = np.random.default_rng(1)
    examples = [TokenExample(target=rng.integers(0, 2048, (4, 7)), context=rng.integers(0, 2048, (4, int(n))),
                             caption=f"cap {i}", song=f"s{i}", context_kind="metronome" if i % 2 else "mix")
                for i, n in enumerate([0, 3, 5, 9, 2])]
    with TokenWriter(tmp_path / "tok", 4, 2048, 50, shard_frames=16) as w:
        w.add_all(examples)
    assert len(list((tmp_path / "tok").glob("shard-*.npy"))) > 1  # several shards were written
    ds = TokenDataset(tmp_path / "tok")
    assert len(ds) == len(examples) and ds.info.codebook_size == 2048
    for a, b in zip(examples, (ds[i] for i in range(len(ds)))):
        assert np.array_equal(a.target, b.target) and np.array_equal(a.context, b.context)
        assert (a.caption, a.song, a.context_kind) == (b.caption, b.song, b.context_kind)
        assert b.target.dtype == np.int64 and b.context.shape == (4, a.context.shape[1])
    assert np.load(tmp_path / "tok" / "shard-00000.npy").dtype == np.uint16


def test_token_folders_refuse_newer_versions_and_interrupted_writes(tmp_path):
    make_shift_tokens(tmp_path / "tok", examples=3)
    index = json.loads((tmp_path / "tok" / "index.json").read_text())
    index["version"] = FORMAT_VERSION + 1
    (tmp_path / "tok" / "index.json").write_text(json.dumps(index))
    with pytest.raises(StageError, match=f"version {FORMAT_VERSION + 1} is newer"):
        TokenDataset(tmp_path / "tok")
    index["version"], index["format"] = FORMAT_VERSION, "something-else"
    (tmp_path / "tok" / "index.json").write_text(json.dumps(index))
    with pytest.raises(StageError, match="not a stage token index"):
        TokenDataset(tmp_path / "tok")
    (tmp_path / "tok" / "index.json").unlink()
    with pytest.raises(StageError, match="incomplete token folder"):
        TokenDataset(tmp_path / "tok")
    w = TokenWriter(tmp_path / "other", 4, 2048, 50)
    with pytest.raises(StageError, match=r"integers in \[0, 2048\)"):
        w.add(TokenExample(target=np.full((4, 3), 2048), context=np.zeros((4, 0), int), caption=""))
    with pytest.raises(StageError, match="shape"):
        w.add(TokenExample(target=np.zeros((3, 3), int), context=np.zeros((3, 0), int), caption=""))
    with pytest.raises(StageError, match="not empty"):
        TokenWriter(tmp_path / "tok", 4, 2048, 50)


# ----------------------------------------------------------------------------- sampler


def test_step_sampler_is_a_pure_function_of_the_step():
    full = list(StepSampler(10, 3, seed=5, total=12))
    tail = list(StepSampler(10, 3, seed=5, total=12, start=7))
    assert tail == full[7:]
    assert [b[0][0] for b in full] == list(range(12))  # batch numbers
    # One pass over the stream visits every example once per epoch, in a seeded order.
    indices = [i for b in full for _, i, _ in b]
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))
    assert indices[:10] != indices[10:20] and indices != [i for b in StepSampler(10, 3, 6, 12) for _, i, _ in b]
    # Two ranks interleave batches of the same stream: together they cover an epoch exactly.
    r0 = list(StepSampler(12, 3, seed=5, total=2, rank=0, world=2))
    r1 = list(StepSampler(12, 3, seed=5, total=2, rank=1, world=2))
    seen = [i for b in r0 + r1 for _, i, _ in b]
    assert sorted(seen) == list(range(12))


# ----------------------------------------------------------------------------- module pieces


def test_musicgen_lm_is_converted_to_the_stage_layout(hf_tiny):
    folder, _, _ = hf_tiny
    model = stage.load_model(str(folder))
    assert model.lm.config.layout == "musicgen"
    torch.manual_seed(0)
    lm = to_stage_layout(model.lm)
    c = lm.config
    assert c.layout == "stage" and all(t.padding_idx == c.pad_id for t in lm.emb)
    for old, new in zip(model.lm.emb, lm.emb):
        assert torch.equal(new.weight[: c.codebook_size], old.weight[: c.codebook_size])  # codes kept
        assert torch.all(new.weight[c.pad_id] == 0)  # MusicGen's learned BOS row is discarded (§2.3)
        row = new.weight[c.context_id]
        assert abs(float(row.std()) - (2 / c.dim) ** 0.5) < 0.35 * (2 / c.dim) ** 0.5  # Kaiming normal, fan_in = D
    for (name, a), (_, b) in zip(model.lm.named_parameters(), lm.named_parameters()):
        if not name.startswith("emb."):
            assert torch.equal(a, b), name


def test_dropouts_are_seeded_by_the_batch_number():
    config = load_config(TINY, ["dropout.context=0.5", "dropout.text=0.5", "dropout.word=0.5"])
    module = StageTrainingModule(config)
    context = torch.randint(0, 2048, (64, 4, 6))
    captions = [f"word{i} other{i} third{i}" for i in range(64)]
    a = module.apply_dropouts(context, captions, batch_no=3)
    b = module.apply_dropouts(context, captions, batch_no=3)
    c = module.apply_dropouts(context, captions, batch_no=4)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert not torch.equal(a[0], c[0]) or a[1] != c[1]
    dropped = (a[0] == PAD_ID).all(dim=(1, 2))
    kept = (a[0] == context).all(dim=(1, 2))
    assert bool((dropped | kept).all()) and 16 < int(dropped.sum()) < 48  # whole contexts, about half
    empty = sum(1 for t in a[1] if t == "")
    assert 16 < empty < 48
    assert any(0 < len(t.split()) < 3 for t in a[1])  # word dropout removes single words


def test_noisy_history_changes_what_the_lm_reads_not_what_it_learns():
    off = StageTrainingModule(load_config(TINY))
    target = torch.randint(0, 2048, (16, 4, 100))
    assert off.noisy_history(target, batch_no=0) is None  # off by default (the authors' recipe)
    module = StageTrainingModule(load_config(TINY, ["dropout.stem_tokens=0.6"]))
    a = module.noisy_history(target, batch_no=3)
    assert torch.equal(a, module.noisy_history(target, batch_no=3))
    assert not torch.equal(a, module.noisy_history(target, batch_no=4))
    changed = (a != target).any(dim=1)  # [B, T]: whole frames, all codebooks together
    whole = ((a != target).sum(dim=1) >= 3) | ~changed  # a random code may equal the true one
    assert bool(whole.all()) and 0.2 < changed.float().mean() < 0.4  # a share ~ U(0, 0.6) per sample
    shares = changed.float().mean(dim=1)
    assert float(shares.max() - shares.min()) > 0.15
    assert int(a.max()) < 2048 and int(a.min()) >= 0
    # The loss targets the clean stem: the same logits scored against `target`, not `a`.
    context = torch.randint(0, 2048, (16, 4, 20))
    out = teacher_forced(module.lm, context, target, None, inputs=a)
    assert torch.equal(out.target, target)
    clean = teacher_forced(module.lm, context, target, None)
    assert not torch.equal(out.logits, clean.logits)  # the LM read the noisy history


def test_audio_batches_are_encoded_one_context_at_a_time(tiny_model):
    """kind "audio": the module encodes the target and each context on its own and left-pads."""
    config = load_config(TINY, ["data.kind=stems"])
    module = StageTrainingModule(config, model=tiny_model)
    rng = np.random.default_rng(0)
    hop = tiny_model.codec.hop_length
    examples = [AudioExample(target=rng.standard_normal(8 * hop).astype(np.float32),
                             context=rng.standard_normal(n).astype(np.float32), caption="x", song="s")
                for n in (5 * hop, 3 * hop + 17, 0)]
    batch = collate(examples)
    context, target = module.encode(batch)
    codec = tiny_model.codec
    assert torch.equal(target, codec.encode(batch.target[:, None]))
    first = codec.encode(batch.context[0][None, None])[0]
    second = codec.encode(batch.context[1][None, None])[0]
    assert context.shape == (3, 4, first.shape[-1]) and second.shape[-1] == 4  # ceil((3 hop + 17) / hop)
    assert torch.equal(context[0], first)
    assert torch.equal(context[1, :, -4:], second) and bool((context[1, :, :-4] == PAD_ID).all())
    assert bool((context[2] == PAD_ID).all())  # no context at all
    out = module.forward_batch(batch, train=False)
    assert torch.isfinite(out.loss) and len(out.ce) == 4


# ----------------------------------------------------------------------------- training runs


def test_train_writes_loadable_stage_checkpoints_and_logs(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(out, tokens, "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.bundle_final=true") == 0
    printed = capsys.readouterr().out
    assert f"writing to {out}" in printed and "done: 4 steps" in printed and str(out / "model") in printed
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-0000002", "step-0000004"]
    model = stage.load_model(out / "checkpoints" / "step-0000004")
    assert model.config.lm.layout == "stage" and model.config.name == "tiny"
    # The trained LM differs from the initial one, the frozen parts and the pad row do not.
    init = stage.load_model("tiny")
    assert not torch.equal(model.lm.heads[0].weight, init.lm.heads[0].weight)
    assert not torch.equal(model.text.proj.weight, init.text.proj.weight)
    for a, b in zip(model.codec.parameters(), init.codec.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(model.text.encoder.parameters(), init.text.encoder.parameters()):
        assert torch.equal(a, b)
    assert all(bool((t.weight[PAD_ID] == 0).all()) for t in model.lm.emb)
    rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert all(f"train/ce_q{k}" in rows[0] for k in range(4))
    losses = [float(r["train/loss"]) for r in rows]
    assert losses[-1] < losses[0]  # lr 3e-3 on a tiny model: the loss goes down in 4 steps
    assert (out / "lightning" / "last.ckpt").exists() and (out / "train.yaml").exists()
    # The final checkpoint is self-contained (EnCodec, T5 and tokenizer inside) and equals step 4.
    final = stage.load_model(out / "model")
    assert json.loads((out / "model" / "stage.json").read_text())["config"]["codec"]["source"] == "codec"
    for (name, a), (_, b) in zip(final.lm.state_dict().items(), model.lm.state_dict().items()):
        assert torch.equal(a, b), name
    assert load_config(out / "train.yaml").trainer.max_steps == 4


def test_resume_continues_bit_for_bit(tokens, tmp_path):
    """Train 4 steps; separately train 2, stop, resume to 4: steps 3 and 4 log the same losses.

    Accumulation 2 and context/text dropout on, so the data position, the dropout draws and the
    optimizer state all have to be restored exactly."""
    common = ["trainer.accumulate=2", "trainer.batch_size=3", "dropout.context=0.3", "dropout.text=0.5",
              "trainer.checkpoint_every=2"]
    assert train_cli(tmp_path / "full", tokens, "trainer.max_steps=4", *common) == 0
    assert train_cli(tmp_path / "part", tokens, "trainer.max_steps=2", *common) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--max-steps", "4"]) == 0
    full = read_metrics(tmp_path / "full")
    resumed = read_metrics(tmp_path / "part")  # the newest log version: the resumed launch
    assert [int(r["step"]) for r in resumed] == [2, 3]
    for a, b in zip(full[2:], resumed):
        for key in ["train/loss"] + [f"train/ce_q{k}" for k in range(4)]:
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    a = stage.load_model(tmp_path / "full" / "checkpoints" / "step-0000004")
    b = stage.load_model(tmp_path / "part" / "checkpoints" / "step-0000004")
    for (name, x), (_, y) in zip(a.lm.state_dict().items(), b.lm.state_dict().items()):
        assert torch.equal(x, y), name
    # A run stopped mid-way (its step-2 resume checkpoint, taken inside the 4-step epoch) also
    # continues exactly; the config comes from the run's train.yaml.
    mid = tmp_path / "mid"
    assert main(["train", "--resume", str(tmp_path / "full" / "lightning" / "step-0000002.ckpt"), "--out", str(mid)]) == 0
    assert [r["train/loss"] for r in read_metrics(mid)] == [r["train/loss"] for r in full[2:]]


def test_a_converted_musicgen_trains_and_saves_in_the_stage_layout(hf_tiny, tokens, tmp_path):
    folder, _, _ = hf_tiny
    out = tmp_path / "run"
    assert train_cli(out, tokens, "trainer.max_steps=1", f"model.init={folder}", "model.stem=drums") == 0
    model = stage.load_model(out / "checkpoints" / "step-0000001")
    assert model.config.lm.layout == "stage" and model.config.stem == "drums"
    # The frozen parts came from a local folder: written once and referenced by the checkpoint.
    assert (out / "frozen" / "codec").is_dir() and (out / "frozen" / "text").is_dir()
    assert json.loads((out / "checkpoints" / "step-0000001" / "stage.json").read_text())["config"]["codec"]["source"] \
        == "../../frozen/codec"


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_and_exit_2(tokens, tmp_path, capsys):
    base = ["train", "--config", TINY, "--out", str(tmp_path / "r"), f"data.train={tokens}"]
    assert "unknown config key 'trainer.max_step'" in one_line_error(capsys, base + ["trainer.max_step=3"])
    assert "unknown config key 'modle'" in one_line_error(capsys, base + ["modle.init=tiny"])
    assert "trainer.batch_size must be >= 1" in one_line_error(capsys, base + ["trainer.batch_size=0"])
    assert "optim.lr must be a number" in one_line_error(capsys, base + ["optim.lr=fast"])
    assert "not found" in one_line_error(capsys, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert "--config FILE is required" in one_line_error(capsys, ["train"])
    assert "no such checkpoint" in one_line_error(capsys, ["train", "--resume", str(tmp_path / "x.ckpt")])
    # Data: a missing folder, an empty token folder, a missing manifest.
    assert "not found" in one_line_error(capsys, base[:-1] + [f"data.train={tmp_path / 'none'}"])
    TokenWriter(tmp_path / "empty", 4, 2048, 50).close()
    assert "has no examples" in one_line_error(capsys, base[:-1] + [f"data.train={tmp_path / 'empty'}"])
    assert "data.train is not set" in one_line_error(capsys, base[:-1])
    assert "manifest" in one_line_error(capsys, base[:-1] + ["data.kind=stems", "data.sample.target_stem=drums",
                                                            f"data.train={tmp_path / 'nomanifest'}"])
    # Optional loggers that are not installed.
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        assert "pip install tensorboard" in one_line_error(capsys, base + ["trainer.logger=tensorboard"])
    if importlib.util.find_spec("wandb") is None:
        assert "pip install wandb" in one_line_error(capsys, base + ["trainer.logger=wandb"])
    assert not (tmp_path / "r").exists()  # nothing was written for a configuration error
    # A non-empty run folder needs --resume or --force.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    err = one_line_error(capsys, ["train", "--config", TINY, "--out", str(tmp_path / "busy"), f"data.train={tokens}"])
    assert "not empty" in err and "--force" in err
    err = one_line_error(capsys, ["train", "--config", TINY, "--out", str(tmp_path / "busy"), "--force",
                                  f"data.train={tokens}"])
    assert "not a stage run folder" in err and (tmp_path / "busy" / "notes.txt").exists()


def test_options_may_follow_the_overrides(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, f"data.train={tokens}", "trainer.max_steps=1", "--out", str(out),
                 "--quiet"]) == 0
    assert (out / "checkpoints" / "step-0000001").is_dir()
    # --force restarts a stage run folder from scratch.
    assert main(["train", "--config", TINY, f"data.train={tokens}", "--max-steps", "2", "--out", str(out),
                 "--force"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]
    assert len(list((out / "logs").glob("version_*"))) == 1


# ----------------------------------------------------------------------------- stems end to end


def prepare_fake(fmt: str, base: Path) -> Path:
    """A fake dataset tree (short synthetic stems at 32 kHz) through `stage prepare` (no beats)."""
    from helpers import make_fake_moisesdb, make_fake_musdb, make_fake_slakh

    make = {
        "moisesdb": lambda root: make_fake_moisesdb(root, songs=3, seconds=4.0, sample_rate=32_000),
        "musdb": lambda root: make_fake_musdb(root, train=2, test=1, seconds=4.0, sample_rate=32_000),
        "slakh": lambda root: make_fake_slakh(root, tracks=3, seconds=4.0, sample_rate=32_000),
    }[fmt]
    root = make(base / fmt)
    assert main(["prepare", str(root), "--format", fmt, "--out", str(base / f"{fmt}-data"), "--beats", "none",
                 "--valid-songs", "1", "--quiet"]) == 0
    return base / f"{fmt}-data"


@pytest.fixture(scope="module")
def moises_manifest(tmp_path_factory):
    return prepare_fake("moisesdb", tmp_path_factory.mktemp("moises"))


SHORT_WINDOWS = ["data.sample.window_seconds=2", "data.sample.min_context_seconds=1",
                 "data.sample.max_context_seconds=2", "data.sample.metronome_prob=0"]


@pytest.mark.parametrize("fmt", ["moisesdb", "musdb", "slakh"])
def test_a_fake_dataset_goes_through_prepare_and_train(fmt, moises_manifest, tmp_path, capsys):
    manifest = moises_manifest if fmt == "moisesdb" else prepare_fake(fmt, tmp_path)
    out = tmp_path / "run"
    code = main(["train", "--config", TINY, "--out", str(out), "--max-steps", "2", "data.kind=stems",
                 f"data.train={manifest}", "data.sample.target_stem=drums", *SHORT_WINDOWS,
                 "data.val_samples=1", "trainer.val_every=2", "trainer.batch_size=2"])
    assert code == 0, capsys.readouterr().err
    model = stage.load_model(out / "checkpoints" / "step-0000002")
    assert model.config.lm.layout == "stage" and model.config.stem == "drums"
    with open(sorted((out / "logs").glob("version_*"))[-1] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("val/loss") for r in rows) and any(r.get("train/loss") for r in rows)


def test_tokenize_names_a_bad_sample_option(tmp_path, capsys):
    argv = ["tokenize", str(tmp_path / "manifest"), "--stem", "drums", "--out", str(tmp_path / "tokens")]
    for extra in (["--per-song", "1", "--sample", "window_seconds=abc"], ["--examples", "2", "--sample", "window=3"]):
        err = one_line_error(capsys, argv + extra)
        assert ("sample config key 'window'" if "window=3" in extra else "window_seconds must be a number") in err
    assert not (tmp_path / "tokens").exists()


def test_tokenize_writes_what_the_trainer_would_encode(moises_manifest, tiny_model, tmp_path, capsys):
    from stage.data.samples import SampleConfig, StemDataset

    out = tmp_path / "tokens"
    sample = [s.split("sample.", 1)[1] for s in SHORT_WINDOWS]
    assert main(["tokenize", str(moises_manifest), "--model", "tiny", "--stem", "bass", "--examples", "3",
                 "--out", str(out), "--quiet", "--sample", *sample]) == 0
    assert "wrote 3 examples" in capsys.readouterr().out
    tokens = TokenDataset(out)
    config = SampleConfig.from_dict({"target_stem": "bass", **{k: float(v) for k, v in (x.split("=") for x in sample)}})
    audio = StemDataset(moises_manifest, config, length=3, seed=0, split="train")
    for i in range(3):
        expected = tiny_model.codec.encode(torch.as_tensor(audio[i].target)[None, None])[0]
        context = tiny_model.codec.encode(torch.as_tensor(audio[i].context)[None, None])[0]
        assert np.array_equal(tokens[i].target, expected.numpy()) and np.array_equal(tokens[i].context, context.numpy())
        assert tokens[i].caption == audio[i].caption and tokens[i].song == audio[i].song
    # ... and `stage train` reads them.
    assert train_cli(tmp_path / "run", out, "trainer.max_steps=1", "trainer.batch_size=3") == 0


@pytest.mark.gpu
def test_a_mixed_precision_training_step_on_gpu(tokens, tmp_path):
    out = tmp_path / "run"
    assert train_cli(out, tokens, "trainer.max_steps=2", "trainer.accelerator=gpu", "trainer.precision=auto") == 0
    rows = read_metrics(out)
    assert len(rows) == 2 and all(np.isfinite(float(r["train/loss"])) for r in rows)
    assert stage.load_model(out / "checkpoints" / "step-0000002").config.lm.layout == "stage"


# ----------------------------------------------------------------------------- slow: learning, DDP


def aligned_accuracy(model, held_out, drop_context: bool) -> float:
    """Teacher-forced argmax accuracy on the target frames that have an aligned context frame."""
    hits = total = 0
    with torch.no_grad():
        for start in range(0, len(held_out), 64):
            chunk = held_out[start : start + 64]
            contexts = [torch.as_tensor(c) for c, _ in chunk]
            if drop_context:  # the same lengths, every code the pad id (§3.3: == no context)
                contexts = [torch.full_like(c, PAD_ID) for c in contexts]
            from stage.tokens.layout import left_pad

            context = left_pad(contexts)
            target = torch.as_tensor(np.stack([t for _, t in chunk]))
            out = teacher_forced(model.lm, context, target, model.text(["shift by one"] * len(chunk)))
            pred = out.logits.argmax(-1)  # [B, K, Tt]
            lengths = torch.tensor([c.shape[1] for c, _ in chunk])
            aligned = torch.arange(target.shape[-1])[None, :] < lengths[:, None]  # [B, Tt]
            mask = out.valid[None] & aligned[:, None, :]
            hits += int(((pred == target) & mask).sum())
            total += int(mask.sum())
    return hits / total


@pytest.mark.slow
def test_a_tiny_model_learns_to_follow_its_context(tmp_path):
    """Target frame t = context frame t + 1 in every codebook, contexts of 5-10 frames and
    10-frame targets starting at the same time (the paper's 5-10 s of a 10 s window, one frame
    per second). The model must find each frame's aligned context frame through the context
    token's position; without the context it can only guess (4 codes: chance 25 %)."""
    codes = 4
    make_shift_tokens(tmp_path / "train", examples=8192, seed=1, codes=codes)
    held_out = make_shift_tokens(tmp_path / "test", examples=256, seed=2, codes=codes)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["train", "--config", TINY, "--out", str(out), f"data.train={tmp_path / 'train'}", "--quiet",
                 "model.lm.dim=64", "model.lm.num_layers=2", "model.lm.num_heads=4", "model.lm.ffn_dim=128",
                 "trainer.max_steps=1500", "trainer.batch_size=32", "optim.lr=3e-3",
                 "trainer.checkpoint_every=0", "trainer.log_every=50"]) == 0
    seconds = time.perf_counter() - t0
    model = stage.load_model(out / "checkpoints" / "step-0001500")
    with_context = aligned_accuracy(model, held_out, drop_context=False)
    without = aligned_accuracy(model, held_out, drop_context=True)
    print(f"\nlearning test: aligned accuracy {with_context:.3f} with context, {without:.3f} with it dropped "
          f"(chance {1 / codes:.3f}); training took {seconds:.0f} s")
    assert with_context >= 0.95
    assert without <= 1 / codes + 0.05


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_on_two_cpu_processes(strategy, tokens, tmp_path):
    """2 CPU processes over gloo. Lightning's `ddp` launcher re-executes the entry script for
    rank 1, so `stage train` runs in a subprocess (`python -m stage.cli`), as a user starts it;
    `ddp_spawn` pickles the module into spawned workers (run the same way, for isolation)."""
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "stage.cli", "train", "--config", TINY, "--out", str(out), f"data.train={tokens}",
         "--max-steps", "2", f"trainer.strategy={strategy}", "trainer.devices=2", "trainer.accelerator=cpu",
         "--quiet"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: 2 steps" in proc.stdout
    assert "Starting with 2 processes" in proc.stdout + proc.stderr  # Lightning's gloo process group
    model = stage.load_model(out / "checkpoints" / "step-0000002")
    assert model.config.lm.layout == "stage"
    rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [0, 1]
