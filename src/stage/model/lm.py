"""StageLM: MusicGen's decoder plus STAGE's context token, written for training and for caching.

Architecture (docs/method.md §2.3; identical maths to audiocraft and HF MusicGen):
- input: the sum over the K codebooks of one embedding table each, with `codebook_size + 2` rows
  (codes, pad id, context id), plus absolute sinusoidal positions (cos first; frequency
  10000^(-i/(half-1)));
- `num_layers` pre-LayerNorm blocks: causal self-attention -> cross-attention to the projected
  T5 states -> GELU feed-forward, each `x + f(LayerNorm(x))`; no biases except the LayerNorms;
- a final LayerNorm and K linear heads over the `codebook_size` audio codes (the special ids can
  never be predicted).

STAGE additions (layout "stage"): the pad row is zero and receives no gradient (`padding_idx`);
callers pass `attended` [B, S] to mask conditioning pads (a key-padding mask on top of the causal
mask) and per-sample `positions` that restart at the first attended step (tokens/layout.py).

`Block.forward` is the only decoder maths. `forward` (training, the reference generator) runs
it over whole sequences; the `Generator` (generate/generator.py) runs the same blocks through
`hidden` with a static `KVCache` and a `CacheView` (model/kv_cache.py) that says where the new
keys go and which key range each group of rows attends to (prefill, eager and static decode).

Shapes: B rows, K codebooks, S delayed steps, D model width, H heads of Dh, V = codebook_size
(the vocabulary of each head), L text tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stage.model.config import LMConfig
from stage.model.kv_cache import CacheView, KVCache, write
from stage.text import TextCondition


def sinusoidal_embedding(positions: Tensor, dim: int) -> Tensor:
    """[..., S] integer positions -> [..., S, dim] float32, [cos | sin] halves.

    As audiocraft's `create_sin_embedding` and HF's `MusicgenSinusoidalPositionalEmbedding`:
    phase_i = pos / 10000^(i / (half - 1)), i = 0..half-1.
    """
    freqs = sinusoid_frequencies(dim // 2, device=positions.device)
    angles = positions.float()[..., None] * freqs  # [..., S, half]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def sinusoid_frequencies(half: int, device=None, dtype=torch.float32) -> Tensor:
    """[half] angular frequencies w_i = 10000^(-i / (half - 1)) of `sinusoidal_embedding`."""
    scale = math.log(10000.0) / (half - 1)
    return torch.exp(torch.arange(half, device=device, dtype=dtype) * -scale)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with a fused, bias-free q/k/v projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: tuple[Tensor, Tensor] | None = None,
        view: CacheView | None = None,
    ) -> Tensor:
        """x: [B, S, D] -> [B, S, D].

        Without a cache: attention over x's own steps; mask [B, 1, S, S] bool (True = may attend)
        or None for plain causal. With a layer's static cache (k, v) [B_max, H, S_max, Dh] and a
        `view`: the new keys/values are written at `view.at` in rows `view.rows`, and each
        `view.ranges` group of rows attends over its cache steps [lo, hi) under its own mask
        (`mask` is unused)."""
        B, S, D = x.shape
        q, k, v = self.qkv(x).reshape(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # [B, H, S, Dh] each
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and S > 1)
        else:
            if view is None:
                raise ValueError("a cached self-attention needs a CacheView")
            kc, vc = write(cache[0], view, k), write(cache[1], view, v)  # [B, H, S_max, Dh]
            ys = [
                F.scaled_dot_product_attention(q[r.rows], kc[r.rows, :, r.lo : r.hi], vc[r.rows, :, r.lo : r.hi], attn_mask=r.mask)
                for r in view.ranges
            ]
            y = ys[0] if len(ys) == 1 else torch.cat(ys)  # [B, H, S, Dh]
        return self.out(y.transpose(1, 2).reshape(B, S, D))


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder to the projected text states (bias-free)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def project_kv(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """states: [B, L, D] -> keys, values [B, H, L, Dh] (computed once per generation)."""
        B, L, D = states.shape
        k, v = self.kv(states).view(B, L, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """x: [B, S, D]; k, v: [B, H, L, Dh]; mask: [B, 1, 1, L] bool or None (all attend)."""
        B, S, D = x.shape
        q = self.q(x).view(B, S, self.heads, D // self.heads).transpose(1, 2)  # [B, H, S, Dh]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Pre-LN decoder block: self-attention -> cross-attention -> GELU feed-forward."""

    def __init__(self, config: LMConfig):
        super().__init__()
        D, eps = config.dim, config.norm_eps
        self.self_norm = nn.LayerNorm(D, eps=eps)
        self.self_attn = SelfAttention(D, config.num_heads)
        self.cross_norm = nn.LayerNorm(D, eps=eps)
        self.cross_attn = CrossAttention(D, config.num_heads)
        self.ff_norm = nn.LayerNorm(D, eps=eps)
        self.ff_in = nn.Linear(D, config.ffn_dim, bias=False)
        self.ff_out = nn.Linear(config.ffn_dim, D, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor | None = None,
        cross_k: Tensor | None = None,
        cross_v: Tensor | None = None,
        cross_mask: Tensor | None = None,
        cross_rows: slice | None = None,
        cache: tuple[Tensor, Tensor] | None = None,
        view: CacheView | None = None,
    ) -> Tensor:
        """x: [B, S, D] -> [B, S, D]; the one decoder block of training and generation.

        self_mask: see `SelfAttention.forward` (unused with a cache). cross_k, cross_v:
        [B', H, L, Dh] text keys/values for rows `cross_rows` of x (None: all B rows) and
        cross_mask [B', 1, 1, L] or None; cross_k None skips cross-attention, whose output is
        exactly zero for a null text (§2.3: it attends to zero vectors). cache, view: this layer's
        static (k, v) buffers and where this forward meets them (model/kv_cache.py)."""
        x = x + self.dropout(self.self_attn(self.self_norm(x), self_mask, cache, view))
        if cross_k is not None and cross_v is not None:
            B = x.shape[0]
            a, b = (0, B) if cross_rows is None else (cross_rows.start or 0, min(cross_rows.stop, B))
            if a == 0 and b == B:
                x = x + self.dropout(self.cross_attn(self.cross_norm(x), cross_k, cross_v, cross_mask))
            else:  # the text rows only; the others keep x (their cross-attention output is zero)
                xt = x[a:b]
                xt = xt + self.dropout(self.cross_attn(self.cross_norm(xt), cross_k, cross_v, cross_mask))
                x = torch.cat(([x[:a]] if a else []) + [xt] + ([x[b:]] if b < B else []))
        return x + self.dropout(self.ff_out(F.gelu(self.ff_in(self.ff_norm(x)))))


def causal_mask(attended: Tensor) -> Tensor:
    """[B, S] attended steps -> [B, 1, S, S] bool self-attention mask.

    Query i may see key j <= i when key j is attended. Every query also sees itself, so a masked
    query never has an empty row (its output is unused: no attended query ever sees it).
    """
    B, S = attended.shape
    causal = torch.ones(S, S, dtype=torch.bool, device=attended.device).tril()
    eye = torch.eye(S, dtype=torch.bool, device=attended.device)
    return ((causal[None] & attended[:, None, :]) | eye[None])[:, None]


def cross_inputs(cond: TextCondition | None, batch: int, dim: int, like: Tensor) -> tuple[Tensor, Tensor | None]:
    """Text states and cross-attention mask as the LM uses them (§2.3, L261-278).

    A row whose mask is all False (null or dropped text) attends to zero vectors instead, with
    the mask set True, so its cross-attention output is exactly zero. No condition at all means
    one zero vector per row. Returns (states [B, L, D], mask [B, 1, 1, L] or None when all True).
    """
    if cond is None:
        return like.new_zeros(batch, 1, dim), None
    states, mask = cond.states.to(like.dtype), cond.mask
    empty = ~mask.any(dim=1)  # [B]
    if bool(empty.any()):
        states = states.masked_fill(empty[:, None, None], 0.0)
        mask = mask | empty[:, None]
    if bool(mask.all()):
        return states, None
    return states, mask[:, None, None, :]


class StageLM(nn.Module):
    """MusicGen decoder with K codebook embeddings and heads (see module docstring)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        pad = config.pad_id if config.layout == "stage" else None
        self.emb = nn.ModuleList(
            nn.Embedding(config.input_vocab, config.dim, padding_idx=pad) for _ in range(config.num_codebooks)
        )
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.heads = nn.ModuleList(
            nn.Linear(config.dim, config.codebook_size, bias=False) for _ in range(config.num_codebooks)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init: N(0, 0.02) weights (HF MusicGen's `initializer_factor`), unit LayerNorms,
        a Kaiming-normal context row (§2.3: fan_in = D, std = sqrt(2 / D)) and a zero pad row in
        the STAGE layout."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.config.embedding_std is not None:  # a from-scratch model: tokens as loud as positions
            for table in self.tables():
                nn.init.normal_(table.weight, std=self.config.embedding_std)
        if self.config.align_offset is not None:
            self.init_alignment_heads(self.config.align_offset)
        self.init_special_rows(context=True)

    @torch.no_grad()
    def init_alignment_heads(self, offset: int, layers: int = 2, pairs: int | None = None, gain: float = 3.0,
                             blocks: Sequence[int] | None = None) -> None:
        """Make head 0 of the first `layers` blocks (or of the blocks numbered in `blocks`) attend
        `offset` positions back.

        The input holds the sinusoid [cos(p w_f) | sin(p w_f)]. A key reads (cos, sin) of the
        head's `pairs` highest frequencies; the query reads the same pair rotated by offset * w_f,
        so q_i . k_j ~ gain * sum_f cos((i - offset - j) w_f): a peak at j = i - offset. In the
        STAGE layout with a context of `offset` frames, that is the step of context frame t seen
        from the step that predicts stem frame t. The values and outputs stay random."""
        D, H = self.config.dim, self.config.num_heads
        Dh, half = D // H, D // 2
        pairs = min(pairs or Dh // 2, half)
        freqs = sinusoid_frequencies(half, dtype=torch.float64)[:pairs]
        c, s = torch.cos(offset * freqs), torch.sin(offset * freqs)
        chosen = self.layers()[:layers] if blocks is None else [self.layers()[i] for i in blocks]
        for block in chosen:
            W = block.self_attn.qkv.weight  # [3D, D]: q rows, k rows, v rows; head 0 = the first Dh
            q, k = torch.zeros(Dh, D, dtype=torch.float64), torch.zeros(Dh, D, dtype=torch.float64)
            for f in range(pairs):
                k[2 * f, f], k[2 * f + 1, half + f] = 1.0, 1.0
                q[2 * f, f], q[2 * f, half + f] = c[f], s[f]  # cos((i - offset) w)
                q[2 * f + 1, f], q[2 * f + 1, half + f] = -s[f], c[f]  # sin((i - offset) w)
            W[:Dh] = (gain * q).to(W.dtype)
            W[D : D + Dh] = k.to(W.dtype)

    @torch.no_grad()
    def init_special_rows(self, context: bool = True) -> None:
        """Kaiming-normal context rows (when `context`) and, in the STAGE layout, zero pad rows."""
        for table in self.tables():
            if context:
                row = torch.empty(1, self.config.dim, device=table.weight.device)
                nn.init.kaiming_normal_(row)  # fan_in = dim (audiocraft/torch convention for [1, D])
                table.weight[self.config.context_id] = row[0].to(table.weight.dtype)
            if self.config.layout == "stage":
                table.weight[self.config.pad_id] = 0.0

    def tables(self) -> list[nn.Embedding]:
        """The K embedding tables, typed (to a type checker a ModuleList holds plain Modules)."""
        return cast("list[nn.Embedding]", list(self.emb))

    def layers(self) -> list[Block]:
        """The decoder blocks, typed like `tables`."""
        return cast("list[Block]", list(self.blocks))

    def embed(self, codes: Tensor, positions: Tensor) -> Tensor:
        """codes: [B, K, S] ids; positions: [B, S] -> [B, S, D] token sum + sinusoid."""
        x = sum(table(codes[:, k]) for k, table in enumerate(self.emb))  # [B, S, D]
        return x + sinusoidal_embedding(positions, self.config.dim).to(x.dtype)

    def cross_kv(self, cond: TextCondition | None, batch: int) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
        """Per-layer cross-attention keys/values and the cross mask for a text condition."""
        like = self.norm.weight
        states, mask = cross_inputs(cond, batch, self.config.dim, like)
        return [blk.cross_attn.project_kv(states) for blk in self.layers()], mask

    def logits(self, x: Tensor) -> Tensor:
        """Final norm and K heads: [B, S, D] -> [B, K, S, V], V = codebook_size."""
        x = self.norm(x)
        return torch.stack([head(x) for head in self.heads], dim=1)

    def forward(
        self,
        codes: Tensor,
        cond: TextCondition | None = None,
        attended: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Full-sequence forward (training, reference generation).

        codes: [B, K, S] ids. cond: projected text (None = unconditional).
        attended: [B, S] bool key mask (None = attend to everything, plain MusicGen).
        positions: [B, S] (None = 0..S-1). Returns logits [B, K, S, V]; the logit at
        step s predicts the token at step s + 1.
        """
        B, K, S = codes.shape
        if K != self.config.num_codebooks:
            raise ValueError(f"expected {self.config.num_codebooks} codebooks, got {K}")
        if positions is None:
            positions = torch.arange(S, device=codes.device).expand(B, S)
        self_mask = None if attended is None or bool(attended.all()) else causal_mask(attended)
        kv, cross_mask = self.cross_kv(cond, B)
        return self.logits(self.hidden(codes, positions, self_mask, kv, cross_mask))

    def hidden(
        self,
        codes: Tensor,
        positions: Tensor,
        self_mask: Tensor | None = None,
        cross: list[tuple[Tensor, Tensor]] | None = None,
        cross_mask: Tensor | None = None,
        cross_rows: slice | None = None,
        cache: KVCache | None = None,
        view: CacheView | None = None,
    ) -> Tensor:
        """Embeddings and every block: codes [B, K, S], positions [B, S] -> [B, S, D] (before the
        final norm; `logits` finishes). cross: per-layer text keys/values (`cross_kv`) for rows
        `cross_rows`, or None (no cross-attention); cache, view: the static cache and where this
        forward meets it (see `Block.forward`)."""
        x = self.embed(codes, positions)
        for i, blk in enumerate(self.blocks):
            ck, cv = cross[i] if cross is not None else (None, None)
            layer = cache.layer(i) if cache is not None else None
            x = blk(x, self_mask, ck, cv, cross_mask, cross_rows, layer, view)
        return x

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
