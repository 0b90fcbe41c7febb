"""The reference generator: minimal, exact and slow (docs/method.md §3.4 and §5).

It follows the authors' loop literally: at every step the **whole** sequence so far is run
through the LM (no cache), the last step's logits are guided and sampled, and the token is
written into every slot of that step that is still unset. It is the oracle the fast `Generator`
is tested against; use `generate_stems` (pipeline.py) for real work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from stage.generate.params import GenerationParams
from stage.generate.sampling import sample_next
from stage.model.lm import StageLM
from stage.text import TextCondition
from stage.tokens import UNSET_ID
from stage.tokens.delay import revert_delay
from stage.tokens.layout import GenerationLayout, build_generation_layout


def unconditional_context(context: Tensor | None, pad_id: int) -> Tensor | None:
    """The CFG branch's context: same length, every code replaced by the pad id (§5)."""
    return None if context is None else torch.full_like(context, pad_id)


def cfg_layouts(
    lm: StageLM, num_frames: int, context: Tensor | None, prompt: Tensor | None, batch: int, use_cfg: bool
) -> tuple[GenerationLayout, GenerationLayout | None]:
    """The conditional layout and, with CFG, the unconditional one (context -> pad, prompt kept)."""
    c = lm.config
    kw: dict[str, Any] = dict(delays=c.delays, prompt=prompt, batch_size=batch, layout=c.layout, pad_id=c.pad_id, context_id=c.context_id)
    cond = build_generation_layout(num_frames, context=context, **kw)
    if not use_cfg:
        return cond, None
    return cond, build_generation_layout(num_frames, context=unconditional_context(context, c.pad_id), **kw)


def guide(logits: Tensor, batch: int, scale: float) -> Tensor:
    """[2B, ...] logits (conditional rows first) -> uncond + scale * (cond - uncond) [B, ...]."""
    cond, uncond = logits[:batch], logits[batch:]
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def reference_generate(
    lm: StageLM,
    cond: TextCondition,
    num_frames: int,
    params: GenerationParams,
    context: Tensor | None = None,
    prompt: Tensor | None = None,
    uncond: TextCondition | None = None,
    generators: Sequence[torch.Generator] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Generate stem codes with full recomputation at every step.

    cond: text for the B rows. context: [B, K, Tc] left-padded context codes or None.
    prompt: [B, K, P] stem codes to continue or None. uncond: the CFG text (default: null).
    Returns codes [B, K, num_frames] (the prompt frames included).
    """
    if lm.training:
        raise RuntimeError("generation needs the model in eval mode (call model.eval())")
    B = cond.batch_size
    use_cfg = params.uses_cfg
    layout, ulayout = cfg_layouts(lm, num_frames, context, prompt, B, use_cfg)
    codes, attended, positions, text = layout.codes, layout.attended, layout.positions, cond
    if ulayout is not None:
        uncond = uncond if uncond is not None else TextCondition.null(B, cond.states.shape[-1], cond.states.device, cond.states.dtype)
        codes = torch.cat([codes, ulayout.codes])
        attended = torch.cat([attended, ulayout.attended])
        positions = torch.cat([positions, ulayout.positions])
        text = TextCondition.cat([cond, uncond])
    codes = codes.clone()
    total = layout.steps - layout.start
    for i, offset in enumerate(range(layout.start, layout.steps)):
        logits = lm(codes[..., :offset], text, attended[:, :offset], positions[:, :offset])[:, :, -1]  # [B', K, V]
        logits = guide(logits.float(), B, params.guidance) if use_cfg else logits.float()
        tokens = sample_next(logits, params.temperature, params.top_k, params.top_p, generators)  # [B, K]
        if use_cfg:
            tokens = torch.cat([tokens, tokens])
        slot = codes[:, :, offset]
        codes[:, :, offset] = torch.where(slot == UNSET_ID, tokens, slot)
        if progress is not None:
            progress(i + 1, total)
    frames = revert_delay(codes[:B], lm.config.delays, layout.prefix_frames + num_frames, lm.config.pad_id)
    return frames[:, :, layout.prefix_frames :]  # [B, K, num_frames]
