"""MusicGen's delay pattern, as small pure functions (docs/method.md §3.1 step 4, §3.2).

Codebook k is delayed by `delays[k]` steps (MusicGen: delays = (0, 1, 2, 3)), and one all-pad
step is put in front, so that **step s of codebook k holds frame s - 1 - delays[k]**; a step
whose frame does not exist holds the pad id. Worked example, K = 4, T = 3 frames a, b, c (only
codebook 0 shown by letter; the others hold the same frames, shifted right by their delay):

    step   0  1  2  3  4  5  6
    cb0    P  a0 b0 c0 P  P  P
    cb1    P  P  a1 b1 c1 P  P
    cb2    P  P  P  a2 b2 c2 P
    cb3    P  P  P  P  a3 b3 c3

`full=True` keeps every step (S = T + max(delays) + 1, the generation layout). `full=False`
keeps only steps 0..T (S = T + 1, audiocraft's `keep_only_valid_steps`, the training layout):
codebook k then loses its last delays[k] frames, which are also excluded from the loss.

The logit at step s predicts the token at step s + 1, so frame t of codebook k is predicted by
the logit at step t + delays[k] (`deinterleave_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stage.tokens import PAD_ID


def num_steps(num_frames: int, delays: Sequence[int], full: bool = True) -> int:
    """Length S of the interleaved sequence for `num_frames` frames."""
    return num_frames + (max(delays) if full else 0) + 1


def apply_delay(codes: Tensor, delays: Sequence[int], pad_id: int = PAD_ID, full: bool = True) -> Tensor:
    """Interleave frames into delayed steps.

    codes: [B, K, T] ids (any integers, e.g. UNSET_ID for slots still to generate).
    Returns [B, K, S] with S = num_steps(T, delays, full); missing frames are `pad_id`.
    """
    B, K, T = codes.shape
    if len(delays) != K:
        raise ValueError(f"{len(delays)} delays for {K} codebooks")
    S = num_steps(T, delays, full)
    out = codes.new_full((B, K, S), pad_id)
    for k, d in enumerate(delays):
        n = min(T, S - 1 - d)  # frames of codebook k that fit in S steps
        if n > 0:
            out[:, k, 1 + d : 1 + d + n] = codes[:, k, :n]
    return out  # [B, K, S]


def delay_mask(num_frames: int, delays: Sequence[int], full: bool = True, device=None) -> Tensor:
    """[K, S] bool: True where step s of codebook k holds a real frame (not the pattern's pad)."""
    S = num_steps(num_frames, delays, full)
    steps = torch.arange(S, device=device)
    d = torch.as_tensor(list(delays), device=device)[:, None]  # [K, 1]
    frame = steps[None, :] - 1 - d  # [K, S] frame index held by each step
    return (frame >= 0) & (frame < num_frames)


def revert_delay(seq: Tensor, delays: Sequence[int], num_frames: int, pad_id: int = PAD_ID) -> Tensor:
    """Inverse of `apply_delay`: [B, K, S] steps -> [B, K, T] frames (`pad_id` where a frame
    was cut off by a short sequence)."""
    B, K, S = seq.shape
    out = seq.new_full((B, K, num_frames), pad_id)
    for k, d in enumerate(delays):
        n = max(0, min(num_frames, S - 1 - d))
        if n > 0:
            out[:, k, :n] = seq[:, k, 1 + d : 1 + d + n]
    return out  # [B, K, T]


def deinterleave_logits(logits: Tensor, delays: Sequence[int], num_frames: int) -> tuple[Tensor, Tensor]:
    """Re-align step logits to frames (audiocraft `revert_pattern_logits`, is_model_output=True).

    logits: [B, K, S, V], where the logit at step s predicts the token at step s + 1.
    Returns (frame_logits [B, K, T, V], valid [K, T] bool). Frame t of codebook k comes from
    step t + delays[k]; it is valid when the token it predicts (step t + 1 + delays[k]) lies in
    the sequence, i.e. t + delays[k] <= S - 2.
    """
    B, K, S, V = logits.shape
    t = torch.arange(num_frames, device=logits.device)
    d = torch.as_tensor(list(delays), device=logits.device)[:, None]  # [K, 1]
    step = t[None, :] + d  # [K, T]
    valid = step <= S - 2
    index = step.clamp(max=S - 1)[None, :, :, None].expand(B, K, num_frames, V)
    frames = logits.gather(2, index)  # [B, K, T, V]
    return frames, valid
