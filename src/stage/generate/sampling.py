"""Next-token sampling: temperature, top-k, top-p, greedy; seeded and free of host syncs.

Sampling uses the "exponential race": argmax(p / E) with E ~ Exp(1) i.i.d. draws a token with
probability p, needs no `torch.multinomial` (which may sync with the host) and consumes exactly
one [K, V] block of random numbers per row and step, so a row's tokens depend only on its own
generator. That makes variation v with seed s + v reproducible on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def filter_logits(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """Apply temperature, then top-k, then top-p (nucleus) to [..., V] logits (-inf = removed)."""
    logits = logits / temperature
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the mass before it reaches top_p (the top token always stays).
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 250,
    top_p: float = 0.0,
    generators: Sequence[torch.Generator] | torch.Generator | None = None,
) -> Tensor:
    """logits: [B, K, V] -> tokens [B, K] (int64).

    temperature <= 0 or top_k == 1 is greedy (argmax). `generators`: one per row (so rows are
    independent and individually reproducible), one shared generator, or None (global RNG).
    """
    if temperature <= 0 or top_k == 1:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float(), temperature, top_k, top_p).softmax(dim=-1)  # [B, K, V]
    if generators is None or isinstance(generators, torch.Generator):
        noise = torch.empty_like(probs).exponential_(1.0, generator=generators)
    else:
        if len(generators) != probs.shape[0]:
            raise ValueError(f"{len(generators)} generators for {probs.shape[0]} rows")
        noise = torch.stack([torch.empty_like(probs[0]).exponential_(1.0, generator=g) for g in generators])
    return (probs / noise).argmax(dim=-1)


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per row."""
    gens = []
    for seed in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(seed))
        gens.append(g)
    return gens


def combine_guidance(logits: Tensor, variations: int, guidance: float, text_guidance: float | None = None) -> Tensor:
    """Classifier-free guidance on raw logits (docs/method.md §5).

    logits: [nb * B, ...] (B variations) with the branches in blocks of B rows: cond (context + text), uncond
    (context all pad, null text) and, for separate scales, ctx (context kept, null text).
    nb = 1: no guidance, the logits are returned as they are.
    nb = 2: the authors' joint scale, `uncond + guidance * (cond - uncond)`. With `text_guidance`
      set, nb = 2 means there is no context (ctx == uncond), so the text scale is used instead.
    nb = 3: `uncond + guidance * (ctx - uncond) + text_guidance * (cond - ctx)`.
    Returns [B, ...].
    """
    B = variations
    nb = logits.shape[0] // B
    if nb == 1:
        return logits
    cond, uncond = logits[:B], logits[B : 2 * B]
    if nb == 2:
        scale = guidance if text_guidance is None else text_guidance
        return uncond + scale * (cond - uncond)
    if text_guidance is None:
        raise ValueError(f"{nb} guidance branches need a text_guidance scale")
    ctx = logits[2 * B : 3 * B]
    return uncond + guidance * (ctx - uncond) + text_guidance * (cond - ctx)
