"""CPU kernels for the decode step's few-row fp32 products, as an LM transform.

`cpu_kernels(lm)` returns an LM that computes the same function as `lm` with the same weight
tensors (no copy; only the kernels' rounding differs), whose decoder and head linears choose a
CPU kernel by the number of rows x @ W.T has (benchmarks/README.md, "What makes it fast"):
- F.linear (x @ W.T) is 2-3x slower for 2-3 rows than for 1 (ENVIRONMENT.md), while
  torch.mm(W, x.T) runs them at the 1-row, memory-bound speed: used up to `MM_ROWS` rows;
- from 4 rows on (B >= 2 variations with CFG), in single-step calls (decode), oneDNN with the weights packed
  once is fastest, at the cost of a second copy of the weights, made on first use (`pack`);
- larger products (most of a prefill) are plain F.linear.
The blocks' maths stays `Block.forward` (model/lm.py); only the linear kernels differ. Models on
other devices or in other dtypes are returned unchanged; in an int8 model (generate/quantize.py)
only the fp32 heads change (the quantised linears keep their own kernels).
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stage.generate.quantize import is_quantized_module
from stage.model.lm import StageLM

MM_ROWS = 3  # torch.mm(W, x.T) up to this many rows
PACK_ROWS = 64  # oneDNN packed weights up to this many rows, single-step calls only


class FewRowLinear(nn.Module):
    """A bias-free `nn.Linear` (sharing its weight) whose few-row products run the CPU kernels of
    the module docstring. x: [..., q, D_in] -> [..., q, D_out]."""

    def __init__(self, linear: nn.Linear, pack: bool):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: in-place edits are seen, nothing copied
        self.pack_rows = PACK_ROWS if pack else 0
        self._packed: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        d = x.shape[-1]
        rows = x.numel() // d
        steps = x.shape[-2] if x.dim() >= 3 else 1
        limit = MM_ROWS if steps > 1 else max(MM_ROWS, self.pack_rows)  # packing: decode only
        if rows > limit:
            return F.linear(x, self.weight)
        x2 = x.reshape(rows, d).contiguous()
        if rows <= MM_ROWS:
            # x2 row-major so that x2.T is column-major: with a row-major right operand MKL's
            # few-column product is ~3x slower (measured, benchmarks/README.md).
            # .contiguous(): a strided result would push attention off its fused CPU kernel.
            return torch.mm(self.weight, x2.t()).t().contiguous().reshape(*x.shape[:-1], -1)
        if self._packed is None:
            self._packed = self.weight.detach().to_mkldnn()
        y = torch._C._nn.mkldnn_linear(x2.to_mkldnn(), self._packed, None).to_dense()
        return y.reshape(*x.shape[:-1], -1)


def cpu_kernels(lm: StageLM, pack: bool = True) -> StageLM:
    """`lm` with its plain decoder linears (self-attention q/k/v and output, cross-attention query
    and output, feed-forward) and its heads as `FewRowLinear`, when it runs in fp32 on a CPU; else
    `lm` itself. The cross-attention keys/values (`project_kv`, once per generation) keep
    F.linear. The result shares every weight with `lm`, which is never modified.

    pack: allow the oneDNN packed weights (one extra copy of them); False for a step that is
    compiled (oneDNN's opaque tensors do not trace) or to save the memory."""
    weight = lm.norm.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return lm
    pack = pack and torch.backends.mkldnn.is_available()
    shared: dict[int, object] = {id(t): t for t in itertools.chain(lm.parameters(), lm.buffers())}
    # torch's quantised linears keep their own kernels: shared as they are, since a deep copy
    # would unpack and repack their weights (~2 s at musicgen-small shapes).
    shared.update({id(m): m for m in lm.modules() if is_quantized_module(m)})
    out = copy.deepcopy(lm, shared)  # new modules, the same parameter and buffer tensors

    def wrap(parent: nn.Module, *names: str) -> None:
        for name in names:
            module = getattr(parent, name)
            if type(module) is nn.Linear and module.bias is None:  # not a quantised linear
                setattr(parent, name, FewRowLinear(module, pack))

    for blk in out.layers():
        wrap(blk.self_attn, "qkv", "out")
        wrap(blk.cross_attn, "q", "out")
        wrap(blk, "ff_in", "ff_out")
    wrap(out.heads, *(str(k) for k in range(len(out.heads))))
    return out.eval()
