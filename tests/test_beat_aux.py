"""The beat-phase auxiliary loss (`aux.beat_weight`): its targets, its data path from the song's
beats to the training batch, and real Lightning runs with the probe on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import stage
from stage.cli import main
from stage.data.beats import phase_targets
from stage.data.example import TokenExample
from stage.data.manifest import SongRecord
from stage.model.lm import StageLM
from stage.train.datamodule import collate
from stage.train.module import beat_phase_loss
from stage.train.song_tokens import window_beats
from stage.train.tokens import TokenDataset, TokenWriter
from tests.test_train import TINY, read_metrics


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_phase_targets_interpolate_the_beat_number():
    """Beats at frames 2, 6, 10 and a downbeat at 2 and 10: frame 4 is half a beat (cos -1, sin
    0), frame 3 a quarter (cos 0, sin 1), the bar phase moves at a quarter of the speed; frames
    outside the given beats, and a row with fewer than two times, are NaN."""
    out = phase_targets(np.array([2.0, 6.0, 10.0]), np.array([2.0, 10.0]), 12)
    assert out.shape == (4, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 2], [1, 0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(out[:2, 4], [-1, 0], atol=1e-6)
    np.testing.assert_allclose(out[:2, 3], [0, 1], atol=1e-6)
    np.testing.assert_allclose(out[2:, 4], [math.cos(math.pi / 2), math.sin(math.pi / 2)], atol=1e-6)  # 2/8 of a bar
    np.testing.assert_allclose(out[2:, 6], [-1, 0], atol=1e-6)
    assert np.isnan(out[:, :2]).all() and np.isnan(out[:, 11]).all()
    assert np.isnan(phase_targets(np.array([3.0]), None, 5)).all()


def test_window_beats_are_frames_from_the_window_start():
    song = SongRecord(id="s", dataset="d", split="train", seconds=10.0, stems={}, peaks={}, beats=np.arange(0.0, 10.0, 0.5), downbeats=np.arange(0.0, 10.0, 2.0))
    beats, downbeats = window_beats(song, start=100, window=50, frame_rate=50, margin_seconds=0.5)
    # The window is 2.0-3.0 s; with the margin 1.5-3.5 s: beats 1.5, 2.0, ..., 3.5 -> frames -25 .. 75.
    np.testing.assert_allclose(beats, [-25, 0, 25, 50, 75])
    np.testing.assert_allclose(downbeats, [0])
    assert window_beats(SongRecord(id="t", dataset="d", split="train", seconds=10.0, stems={}, peaks={}), 0, 50, 50) == (None, None)


def test_beats_round_trip_through_token_folders_and_collate_left_padded(tmp_path):
    with TokenWriter(tmp_path / "t", num_codebooks=4, codebook_size=2048, frame_rate=50) as w:
        w.add(TokenExample(np.ones((4, 6), int), np.ones((4, 8), int), "a", beats=np.array([0.0, 4.0, 8.0]),
                           downbeats=np.array([0.0, 8.0])))
        w.add(TokenExample(np.ones((4, 6), int), np.ones((4, 5), int), "b", beats=np.array([-1.5, 2.5])))
        w.add(TokenExample(np.ones((4, 6), int), np.ones((4, 5), int), "c"))  # no beats (an older folder)
    data = TokenDataset(tmp_path / "t")
    np.testing.assert_allclose(data[0].beats, [0, 4, 8])
    np.testing.assert_allclose(data[1].beats, [-1.5, 2.5])
    assert data[1].downbeats is None
    assert data[2].beats is None and data[2].downbeats is None
    batch = collate([data[0], data[1], data[2]])
    assert batch.beat_phase is not None and batch.beat_phase.shape == (3, 4, 8)
    # Row 1's 5 context frames sit on the right, as left_pad puts its codes.
    assert torch.isnan(batch.beat_phase[1, :, :3]).all()
    torch.testing.assert_close(batch.beat_phase[1, :2, 3:], torch.from_numpy(phase_targets(np.array([-1.5, 2.5]), None, 5)[:2]), equal_nan=True)
    assert not torch.isnan(batch.beat_phase[1, :2, 3:6]).any()
    assert torch.isnan(batch.beat_phase[2]).all()
    assert collate([data[2]]).beat_phase is None


def test_the_beat_loss_reads_the_context_steps_of_kept_rows_only():
    """Context frame f of codebook 0 is at step f + 1 (+ its delay); dropped rows and unknown
    frames add nothing."""
    probe = torch.nn.Identity()
    hidden = torch.zeros(2, 9, 4)
    hidden[:, 1:4] = 1.0  # steps 1..3 = context frames 0..2
    target = torch.ones(2, 4, 3)
    target[0, :, 0] = float("nan")
    assert beat_phase_loss(probe, hidden, target, torch.tensor([True, True])).item() == 0.0
    hidden[1, 2] = 3.0
    assert beat_phase_loss(probe, hidden, target, torch.tensor([True, False])).item() == 0.0  # row 1 dropped
    assert beat_phase_loss(probe, hidden, target, torch.tensor([True, True])).item() == pytest.approx(4 * 4 / 20)
    assert beat_phase_loss(probe, hidden, target, torch.tensor([False, False])).item() == 0.0


def test_alignment_heads_can_be_set_in_chosen_blocks():
    config = stage.load_model("tiny").config.lm
    lm = StageLM(config)
    before = [b.self_attn.qkv.weight.clone() for b in lm.layers()]
    lm.init_alignment_heads(12, blocks=[1])
    after = [b.self_attn.qkv.weight for b in lm.layers()]
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    Dh = config.dim // config.num_heads
    assert torch.equal(before[1][Dh:config.dim], after[1][Dh:config.dim])  # only head 0's queries (and keys)


def beat_tokens(folder, examples: int = 24, seed: int = 0):
    """Random codes whose windows all carry beats every 4 frames from frame 0 (so the phase is a
    function of the position, which a probe can learn in a few steps)."""
    rng = np.random.default_rng(seed)
    with TokenWriter(folder, num_codebooks=4, codebook_size=2048, frame_rate=50) as w:
        for i in range(examples):
            w.add(TokenExample(rng.integers(0, 8, (4, 10)), rng.integers(0, 8, (4, 12)), "four on the floor",
                               song=f"s{i}", beats=np.arange(0.0, 16.0, 4.0), downbeats=np.arange(0.0, 32.0, 16.0)))
    return folder


def test_training_with_the_beat_probe_logs_it_resumes_it_and_does_not_save_it(tmp_path, capsys):
    data = beat_tokens(tmp_path / "beats")
    aux = ["aux.beat_weight=1.0", "aux.beat_layer=0", "trainer.checkpoint_every=3", "dropout.context=0.2",
           "trainer.bundle_final=true"]
    common = ["--config", TINY, f"data.train={data}", *aux]
    assert main(["train", "--out", str(tmp_path / "full"), "trainer.max_steps=6", *common]) == 0
    rows = read_metrics(tmp_path / "full")
    beat = [float(r["train/beat_loss"]) for r in rows]
    assert len(beat) == 6 and beat[-1] < beat[0]  # the probe learns the position -> phase map
    # Resumed from step 3, steps 4-6 repeat the full run's losses: the probe's weights and its
    # optimizer state are in the checkpoint.
    assert main(["train", "--resume", str(tmp_path / "full" / "lightning" / "step-0000003.ckpt"),
                 "--out", str(tmp_path / "mid")]) == 0
    mid = read_metrics(tmp_path / "mid")
    assert [r["train/beat_loss"] for r in mid] == [r["train/beat_loss"] for r in rows[3:]]
    assert [r["train/loss"] for r in mid] == [r["train/loss"] for r in rows[3:]]
    # The saved model is a plain STAGE model: no probe tensors.
    from safetensors import safe_open

    files = list((tmp_path / "full" / "model").glob("*.safetensors"))
    assert files
    for file in files:
        with safe_open(str(file), "pt") as f:
            assert not any("beat" in key for key in f.keys())
    stage.load_model(tmp_path / "full" / "model")
    # Without the probe, the same data trains as before and logs no beat loss.
    assert main(["train", "--out", str(tmp_path / "plain"), "trainer.max_steps=2", "--config", TINY,
                 f"data.train={data}"]) == 0
    assert all(not r.get("train/beat_loss") for r in read_metrics(tmp_path / "plain"))
    capsys.readouterr()


@pytest.mark.parametrize("override, message", [
    ("aux.beat_weight=-1", "aux.beat_weight must be >= 0"),
    ("aux.beat_layer=9", "aux.beat_layer 9 is not a block"),
    ("aux.align_blocks=[0]", "aux.align_blocks needs a model with lm.align_offset"),
])
def test_bad_aux_options_are_one_line_errors(tmp_path, capsys, override, message):
    data = beat_tokens(tmp_path / "beats", examples=4)
    code = main(["train", "--config", TINY, "--out", str(tmp_path / "run"), f"data.train={data}", "aux.beat_weight=1",
                 override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()
