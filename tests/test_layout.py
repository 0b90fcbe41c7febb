"""The delay pattern and the STAGE prefix layout: worked examples of docs/method.md §3, fast code
against slow reference loops, and the invariances of §3.3 on a real (tiny) LM."""

from __future__ import annotations

import random

import pytest
import torch

from stage.tokens import CONTEXT_ID as C
from stage.tokens import PAD_ID as P
from stage.tokens import UNSET_ID as U
from stage.tokens.delay import apply_delay, deinterleave_logits, revert_delay
from stage.tokens.layout import (
    attended_steps,
    build_generation_layout,
    build_training_layout,
    left_pad,
    masked_cross_entropy,
    positions_from_mask,
    target_logits,
)

DELAYS = (0, 1, 2, 3)


def _ctx(codes, K=4):
    return torch.tensor([codes] * K)[None]  # [1, K, T], same codes in every codebook


# ----------------------------------------------------------------------------- §3.1 worked examples


def test_training_layout_worked_example():
    layout = build_training_layout(_ctx([100, 101, 102]), _ctx([500, 501, 502, 503]), DELAYS)
    expected = torch.tensor([
        [P, 100, 101, 102, C, 500, 501, 502, 503],
        [P, P, 100, 101, 102, C, 500, 501, 502],
        [P, P, P, 100, 101, 102, C, 500, 501],
        [P, P, P, P, 100, 101, 102, C, 500],
    ])
    assert torch.equal(layout.codes[0], expected)
    assert layout.attended[0].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert layout.positions[0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7]


def test_dropped_context_worked_example():
    layout = build_training_layout(_ctx([P, P, P]), _ctx([500, 501, 502, 503]), DELAYS)
    assert layout.codes[0, 0].tolist() == [P, P, P, P, C, 500, 501, 502, 503]
    assert layout.attended[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert layout.positions[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4]


def test_loss_positions_worked_example():
    """§3.2: the step whose logit predicts each target frame (rows: codebooks)."""
    layout = build_training_layout(_ctx([100, 101, 102]), _ctx([500, 501, 502, 503]), DELAYS)
    S = layout.codes.shape[-1]
    logits = torch.arange(S, dtype=torch.float)[None, None, :, None].expand(1, 4, S, 1)  # logit value = its step
    picked, valid = target_logits(logits, layout, DELAYS)
    steps = torch.where(valid, picked[0, :, :, 0], torch.tensor(-1.0)).long().tolist()
    assert steps == [[4, 5, 6, 7], [5, 6, 7, -1], [6, 7, -1, -1], [7, -1, -1, -1]]


def test_generation_layout_worked_example():
    """§3.4: Tc = 3, n_gen = 4 -> S = 12, start_offset = 5."""
    layout = build_generation_layout(4, DELAYS, context=_ctx([100, 101, 102]))
    expected = torch.tensor([
        [P, 100, 101, 102, C, U, U, U, U, P, P, P],
        [P, P, 100, 101, 102, C, U, U, U, U, P, P],
        [P, P, P, 100, 101, 102, C, U, U, U, U, P],
        [P, P, P, P, 100, 101, 102, C, U, U, U, U],
    ])
    assert torch.equal(layout.codes[0], expected)
    assert layout.start == 5 and layout.steps == 12
    uncond = build_generation_layout(4, DELAYS, context=_ctx([P, P, P]))
    assert uncond.codes[0, 0, :6].tolist() == [P, P, P, P, C, U]
    assert uncond.attended[0, :5].tolist() == [0, 0, 0, 0, 1]


def test_generation_layout_with_prompt_starts_after_it():
    prompt = torch.full((1, 4, 2), 7)
    layout = build_generation_layout(5, DELAYS, context=_ctx([100, 101, 102]), prompt=prompt)
    assert layout.start == 3 + 2 + 2  # Tc + P_len + 2
    assert layout.codes[0, 0, 5:7].tolist() == [7, 7] and layout.codes[0, 0, 7] == U


def test_musicgen_layout_is_plain_delay_after_bos():
    layout = build_generation_layout(3, DELAYS, batch_size=2, layout="musicgen")
    assert layout.start == 1 and layout.prefix_frames == 0
    assert layout.codes[0, 0].tolist() == [P, U, U, U, P, P, P]
    assert layout.codes[0, 3].tolist() == [P, P, P, P, U, U, U]
    assert layout.attended.all() and layout.positions[0].tolist() == list(range(7))


# ----------------------------------------------------------------------------- fast == slow reference


def slow_delay(codes, delays, pad, full):
    B, K, T = codes.shape
    S = T + (max(delays) if full else 0) + 1
    out = torch.full((B, K, S), pad, dtype=codes.dtype)
    for b in range(B):
        for k in range(K):
            for s in range(S):
                t = s - 1 - delays[k]
                if 0 <= t < T:
                    out[b, k, s] = codes[b, k, t]
    return out


def slow_attended(codes, Tc, delays, T, pad):
    """§3.1 steps 5-6 written out per token."""
    B, K, S = codes.shape
    out = torch.zeros(B, S, dtype=torch.bool)
    for b in range(B):
        for s in range(S):
            for k in range(K):
                t = s - 1 - delays[k]
                real = 0 <= t < T
                in_region = s <= Tc + delays[k]
                if real and not (codes[b, k, s] == pad and in_region):
                    out[b, s] = True
    return out


def slow_positions(attended):
    B, S = attended.shape
    out = torch.zeros(B, S, dtype=torch.long)
    for b in range(B):
        first = next(s for s in range(S) if attended[b, s])
        for s in range(first, S):
            out[b, s] = s - first
    return out


@pytest.mark.parametrize("seed", range(8))
def test_fast_layout_equals_slow_reference(seed):
    rng = random.Random(seed)
    K = rng.choice([1, 2, 4])
    delays = tuple(sorted([0] + [rng.randint(0, 4) for _ in range(K - 1)]))
    B, Tt = rng.randint(1, 4), rng.randint(1, 12)
    contexts = [torch.randint(0, 2048, (K, rng.randint(0, 9))) for _ in range(B)]
    if rng.random() < 0.5:
        contexts[0] = torch.full_like(contexts[0], P)  # a dropped context
    ctx = left_pad(contexts)
    target = torch.randint(0, 2048, (B, K, Tt))
    layout = build_training_layout(ctx, target, delays)
    frames = torch.cat([ctx, torch.full((B, K, 1), C), target], dim=-1)
    T = frames.shape[-1]
    assert torch.equal(layout.codes, slow_delay(frames, delays, P, full=False))
    assert torch.equal(apply_delay(frames, delays, P, full=True), slow_delay(frames, delays, P, full=True))
    assert torch.equal(layout.attended, slow_attended(layout.codes, ctx.shape[-1], delays, T, P))
    assert torch.equal(layout.positions, slow_positions(layout.attended))
    full = apply_delay(frames, delays, P, full=True)
    assert torch.equal(revert_delay(full, delays, T), frames)


def test_left_pad():
    a, b = torch.tensor([[1, 2, 3]]), torch.tensor([[4]])
    assert left_pad([a, b]).tolist() == [[[1, 2, 3]], [[P, P, 4]]]


def test_deinterleave_drops_last_frames_per_codebook():
    logits = torch.randn(2, 4, 11, 5)
    frames, valid = deinterleave_logits(logits, DELAYS, 10)
    assert valid.sum(dim=1).tolist() == [10, 9, 8, 7]
    assert torch.equal(frames[:, 2, 3], logits[:, 2, 5])


def test_masked_cross_entropy_is_mean_of_codebook_means():
    logits = torch.randn(2, 4, 5, 7)
    targets = torch.randint(0, 7, (2, 4, 5))
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[3] = False  # a codebook with nothing valid contributes 0
    valid[1, 3:] = False
    loss, per = masked_cross_entropy(logits, targets, valid)
    ce = torch.nn.functional.cross_entropy
    expected = [ce(logits[:, k][:, valid[k]].reshape(-1, 7), targets[:, k][:, valid[k]].reshape(-1)) for k in range(3)]
    assert torch.allclose(torch.stack(per[:3]), torch.stack(expected))
    assert per[3] == 0 and torch.allclose(loss, (sum(expected) + 0) / 4)


# ----------------------------------------------------------------------------- §3.3 invariances on the LM


def _target_logits(lm, layout, cond):
    with torch.no_grad():
        logits = lm(layout.codes, cond, layout.attended, layout.positions)
    return target_logits(logits, layout, lm.config.delays)[0]


def test_left_padding_is_invisible(tiny_model):
    lm = tiny_model.lm
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, 2048, (1, 4, 6), generator=g)
    target = torch.randint(0, 2048, (1, 4, 10), generator=g)
    cond = tiny_model.text(["rock drums"])
    plain = _target_logits(lm, build_training_layout(ctx, target, lm.config.delays), cond)
    padded_ctx = left_pad([ctx[0], torch.zeros(4, 9, dtype=torch.long)])[:1]  # padded to 9 frames
    padded = _target_logits(lm, build_training_layout(padded_ctx, target, lm.config.delays), cond)
    assert (plain - padded).abs().max() < 1e-5


def test_dropped_context_equals_empty_context(tiny_model):
    lm = tiny_model.lm
    target = torch.randint(0, 2048, (1, 4, 10), generator=torch.Generator().manual_seed(1))
    cond = tiny_model.text(["bass"])
    dropped = _target_logits(lm, build_training_layout(torch.full((1, 4, 7), P), target, lm.config.delays), cond)
    empty = _target_logits(lm, build_training_layout(torch.full((1, 4, 0), P), target, lm.config.delays), cond)
    assert (dropped - empty).abs().max() < 1e-5


def test_lm_is_causal(tiny_model):
    lm = tiny_model.lm
    codes = torch.randint(0, 2048, (1, 4, 12), generator=torch.Generator().manual_seed(2))
    changed = codes.clone()
    changed[:, :, 7] = (changed[:, :, 7] + 1) % 2048
    with torch.no_grad():
        a, b = lm(codes), lm(changed)
    assert torch.equal(a[:, :, :7], b[:, :, :7])
    assert not torch.equal(a[:, :, 7:], b[:, :, 7:])


def test_attended_steps_generation_ignores_unset_slots():
    layout = build_generation_layout(3, DELAYS, context=left_pad([torch.randint(0, 2048, (4, 2)), torch.randint(0, 2048, (4, 4))]))
    assert layout.attended[:, 5:].all()
    assert layout.attended[0].tolist()[:3] == [False, False, False]
    assert layout.positions[0, 5].item() == layout.positions[1, 5].item() - 2
    assert torch.equal(attended_steps(layout.codes, 4, DELAYS, 4 + 1 + 3, full=True), layout.attended)
    assert torch.equal(positions_from_mask(layout.attended), layout.positions)
