"""The STAGE prefix layout: `[context | CONTEXT_ID | stem]`, delayed jointly (docs/method.md §3).

Context (mix or metronome codes, Tc frames), one frame of the context id in every codebook, then
the stem (Tt frames) are concatenated **along time first**; the delay pattern is then applied to
the whole sequence. Worked example (§3.1), Tc = 3 (codes 100..102), Tt = 4 (500..503), P = pad,
C = context id, training layout (valid steps only):

    step        0    1    2    3    4    5    6    7    8
    cb0         P  100  101  102    C  500  501  502  503
    cb1         P    P  100  101  102    C  500  501  502
    cb2         P    P    P  100  101  102    C  500  501
    cb3         P    P    P    P  100  101  102    C  500
    attended    0    1    1    1    1    1    1    1    1
    position    0    0    1    2    3    4    5    6    7

Masking (§3.1 steps 5-7): for codebook k, steps 0..Tc+delays[k] are its *conditioning region*
(they hold context frames or the initial delay fill). A pad token inside that region is invalid.
A step is attended when any codebook holds a valid token there. Positions restart at 0 at the
first attended step of each sample. Hence left padding and a dropped context (all pad) are
invisible to the model (§3.3), and with no context the context id acts as the BOS token.

For a plain MusicGen model (`layout="musicgen"`) there is no context: the sequence is just the
delayed stem, step 0 is the learned BOS (pad id), nothing is masked and positions are 0..S-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stage.tokens import CONTEXT_ID, PAD_ID, UNSET_ID
from stage.tokens.delay import apply_delay, deinterleave_logits, delay_mask


def left_pad(contexts: Sequence[Tensor], pad_id: int = PAD_ID) -> Tensor:
    """Left-pad a list of [K, Tc_i] context codes with `pad_id` to [B, K, max Tc_i] (§3.1 step 1)."""
    if not contexts:
        raise ValueError("left_pad needs at least one context")
    K = contexts[0].shape[0]
    width = max(c.shape[-1] for c in contexts)
    out = contexts[0].new_full((len(contexts), K, width), pad_id)
    for i, c in enumerate(contexts):
        if c.shape[-1]:
            out[i, :, width - c.shape[-1] :] = c
    return out  # [B, K, Tc]


def attended_steps(
    codes: Tensor, context_frames: int, delays: Sequence[int], num_frames: int, full: bool, pad_id: int = PAD_ID
) -> Tensor:
    """[B, S] bool: the attention mask of §3.1 steps 5-6.

    codes: [B, K, S] interleaved ids. context_frames: Tc (after left padding). num_frames: the
    number of frames T that were delayed (Tc + 1 + Tt). A token is valid when the pattern holds a
    real frame there and it is not a pad inside its codebook's conditioning region.
    """
    B, K, S = codes.shape
    pattern = delay_mask(num_frames, delays, full, device=codes.device)  # [K, S]
    steps = torch.arange(S, device=codes.device)
    region_end = context_frames + torch.as_tensor(list(delays), device=codes.device)  # [K]
    in_region = steps[None, :] <= region_end[:, None]  # [K, S]
    pad_in_region = (codes == pad_id) & in_region[None]  # [B, K, S]
    valid = pattern[None] & ~pad_in_region
    return valid.any(dim=1)  # [B, S]


def positions_from_mask(attended: Tensor) -> Tensor:
    """[B, S] positions that start at 0 at the first attended step of each row (§2.3, L315-323);
    steps before it get 0 (they are masked anyway)."""
    B, S = attended.shape
    first = attended.int().argmax(dim=1, keepdim=True)  # [B, 1]
    steps = torch.arange(S, device=attended.device)[None, :]
    return (steps - first).clamp(min=0)  # [B, S]


@dataclass(frozen=True)
class TrainingLayout:
    """One training batch laid out for the LM (§3.1).

    codes: [B, K, S] interleaved ids, S = Tc + 1 + Tt + 1.
    attended: [B, S] attention (key padding) mask. positions: [B, S].
    context_frames: Tc after left padding; target_frames: Tt.
    """

    codes: Tensor
    attended: Tensor
    positions: Tensor
    context_frames: int
    target_frames: int


def build_training_layout(
    context: Tensor,
    target: Tensor,
    delays: Sequence[int],
    pad_id: int = PAD_ID,
    context_id: int = CONTEXT_ID,
) -> TrainingLayout:
    """Lay out `[context | context_id | target]` for teacher forcing (valid steps only).

    context: [B, K, Tc] codes, already left-padded with `pad_id` (a dropped context is all pad).
    target: [B, K, Tt] codes of the stem.
    """
    B, K, Tc = context.shape
    Tt = target.shape[-1]
    sep = target.new_full((B, K, 1), context_id)
    frames = torch.cat([context.to(target.dtype), sep, target], dim=-1)  # [B, K, Tc + 1 + Tt]
    T = frames.shape[-1]
    codes = apply_delay(frames, delays, pad_id, full=False)  # [B, K, T + 1]
    attended = attended_steps(codes, Tc, delays, T, full=False, pad_id=pad_id)
    return TrainingLayout(codes, attended, positions_from_mask(attended), Tc, Tt)


def target_logits(logits: Tensor, layout: TrainingLayout, delays: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Pick the stem's logits out of the step logits (§3.2).

    logits: [B, K, S, V]. Returns (logits [B, K, Tt, V], valid [K, Tt]); codebook k has valid
    frames 0..Tt-1-delays[k]. The context and the context id never receive loss.
    """
    T = layout.context_frames + 1 + layout.target_frames
    frames, valid = deinterleave_logits(logits, delays, T)  # [B, K, T, V], [K, T]
    Tt = layout.target_frames
    return frames[:, :, T - Tt :], valid[:, T - Tt :]


def masked_cross_entropy(logits: Tensor, targets: Tensor, valid: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Per-codebook token-mean cross-entropy, averaged over codebooks (§3.2, `compute_cross_entropy`).

    logits: [B, K, T, V]; targets: [B, K, T]; valid: [K, T] or [B, K, T] bool.
    Returns (loss, [ce_q0, ..., ce_q{K-1}]). A codebook with no valid entry contributes 0.
    """
    B, K, T, V = logits.shape
    valid = valid.expand(B, K, T) if valid.dim() == 2 else valid
    per_codebook = []
    for k in range(K):
        mask = valid[:, k]  # [B, T]
        if mask.any():
            ce = torch.nn.functional.cross_entropy(logits[:, k][mask].float(), targets[:, k][mask])
        else:
            ce = logits.new_zeros((), dtype=torch.float32)
        per_codebook.append(ce)
    return torch.stack(per_codebook).mean(), per_codebook


@dataclass(frozen=True)
class GenerationLayout:
    """The sequence to fill during generation (§3.4).

    codes: [B, K, S] ids; UNSET_ID marks slots to sample, anything else is kept as is (the
      context, the context id on its diagonal, a continuation prompt, the pattern's pads).
    attended / positions: [B, S], computed once (generated steps are always attended).
    start: the first step to generate; the logits of step start - 1 predict it.
    prefix_frames: frames before the stem (Tc + 1 for STAGE, 0 for MusicGen).
    num_frames: stem frames to produce (continuation prompt included).
    """

    codes: Tensor
    attended: Tensor
    positions: Tensor
    start: int
    prefix_frames: int
    num_frames: int

    @property
    def steps(self) -> int:
        return self.codes.shape[-1]


def build_generation_layout(
    num_frames: int,
    delays: Sequence[int],
    context: Tensor | None = None,
    prompt: Tensor | None = None,
    batch_size: int | None = None,
    layout: str = "stage",
    pad_id: int = PAD_ID,
    context_id: int = CONTEXT_ID,
) -> GenerationLayout:
    """Build the generation sequence.

    num_frames: stem frames to generate, prompt included (`gen_seconds` includes the prompt).
    context: [B, K, Tc] left-padded context codes (pad rows = no/dropped context), or None.
    prompt: [B, K, P] codes of the stem to continue (P <= num_frames), or None.
    layout: "stage" -> `[context | context_id | stem]`; "musicgen" -> `[stem]` after a BOS step.
    """
    K = len(delays)
    if context is not None:
        B = context.shape[0]
        device = context.device
    elif prompt is not None:
        B, device = prompt.shape[0], prompt.device
    else:
        B, device = batch_size or 1, None
    P = 0 if prompt is None else prompt.shape[-1]
    if P > num_frames:
        raise ValueError(f"prompt has {P} frames but only {num_frames} are generated")
    stem = torch.full((B, K, num_frames), UNSET_ID, dtype=torch.long, device=device)
    if prompt is not None:
        stem[:, :, :P] = prompt
    if layout == "musicgen":
        if context is not None and context.shape[-1] > 0:
            raise ValueError("a plain MusicGen model takes no context prefix; fine-tune it with STAGE first")
        codes = apply_delay(stem, delays, pad_id, full=True)  # [B, K, S]
        attended = torch.ones(codes.shape[0], codes.shape[-1], dtype=torch.bool, device=codes.device)
        return GenerationLayout(codes, attended, positions_from_mask(attended), P + 1, 0, num_frames)
    if context is None:
        context = torch.full((B, K, 0), pad_id, dtype=torch.long, device=device)
    Tc = context.shape[-1]
    sep = torch.full((B, K, 1), context_id, dtype=torch.long, device=device)
    frames = torch.cat([context.long(), sep, stem], dim=-1)  # [B, K, Tc + 1 + n]
    T = frames.shape[-1]
    codes = apply_delay(frames, delays, pad_id, full=True)  # [B, K, T + max(d) + 1]
    attended = attended_steps(codes, Tc, delays, T, full=True, pad_id=pad_id)
    # The first step holding stem frame P in codebook 0 (§3.4 step 5: Tc + P + 2).
    start = Tc + 1 + P + 1
    return GenerationLayout(codes, attended, positions_from_mask(attended), start, Tc + 1, num_frames)
