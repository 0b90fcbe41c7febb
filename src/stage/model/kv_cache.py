"""The static key/value cache of the decoder's self-attention, and how one forward meets it.

As in gpt-fast: one [B_max, H, S_max, Dh] key and value buffer per layer, allocated once per
generation shape, written in place at step positions and read over step ranges, so shapes never
change and a decode step can be compiled or graph-captured. `Block.forward` (model/lm.py) is the
only code that writes or reads it; the `Generator` (generate/generator.py) decides where.

A forward over q new steps of n batch rows is described by a `CacheView`:

    rows   the n cache rows the batch rows are (a slice of the B_max rows)
    at     where the q new keys/values go: an int (steps at .. at+q-1, written by slicing), or a
           [q] long tensor of step numbers (written with `index_copy_`: a compiled or captured
           step keeps its step in a device tensor)
    ranges one `KeyRange` per group of batch rows: the rows attend over cache steps [lo, hi)
           under an optional mask; the groups' outputs are concatenated in order, so they cover
           the batch rows 0..n-1 contiguously

A CPU decode stays cheap because each CFG branch reads only its own valid keys: the
unconditional branch's all-pad context is never computed nor read (docs/method.md §3.1, §5).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class KeyRange(NamedTuple):
    """Batch rows `rows` attend over cache steps [lo, hi); mask: [n, 1, q, hi - lo] bool (True =
    may attend; broadcastable) or None when every key in the range is valid for every query."""

    rows: slice
    lo: int
    hi: int
    mask: Tensor | None = None


class CacheView(NamedTuple):
    """How one cached forward uses the cache (see the module docstring)."""

    rows: slice
    at: int | Tensor
    ranges: tuple[KeyRange, ...]


class KVCache:
    """Static keys and values of every self-attention layer: k[i], v[i] of shape
    [batch, heads, max_steps, head_dim], allocated once and reused by every call."""

    def __init__(self, num_layers: int, batch: int, heads: int, max_steps: int, head_dim: int,
                 device=None, dtype=torch.float32):
        shape = (batch, heads, max_steps, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]

    @property
    def max_steps(self) -> int:
        return self.k[0].shape[2]

    def layer(self, i: int) -> tuple[Tensor, Tensor]:
        """Layer i's (k, v) buffers, [batch, H, max_steps, Dh] each."""
        return self.k[i], self.v[i]

    def tensors(self) -> list[Tensor]:
        return [*self.k, *self.v]

    def copy_row(self, src: int, dst: slice, lo: int, hi: int) -> None:
        """Copy steps [lo, hi) of cache row `src` to rows `dst` in every layer (a prefix computed
        for one row and shared by the others)."""
        for k, v in zip(self.k, self.v):
            k[dst, :, lo:hi] = k[src, :, lo:hi]
            v[dst, :, lo:hi] = v[src, :, lo:hi]


def write(buffer: Tensor, view: CacheView, new: Tensor) -> Tensor:
    """Write `new` [n, H, q, Dh] into `buffer` [B_max, H, S_max, Dh] at the view's rows and steps;
    returns the view's rows of the buffer, [n, H, S_max, Dh]."""
    rows = buffer[view.rows]
    if isinstance(view.at, Tensor):
        rows.index_copy_(2, view.at, new)
    else:
        rows[:, :, view.at : view.at + new.shape[2]] = new
    return rows
