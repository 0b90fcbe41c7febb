"""The fast generator: static KV cache, one shared prefill, a sync-free decode loop (docs/method.md
§3.4, §5; §9 "KV-cached decoding", "several variations in one batch").

It produces exactly what `reference.reference_generate` produces (the authors' loop, which re-runs
the whole prefix at every step), token for token in fp32, but computes every step once:

    rows   = branches x variations, in blocks: [cond x V | uncond x V | ctx x V]
      cond   context + text                 (the conditional branch)
      uncond context all pad + null text    (CFG's unconditional branch, §5)
      ctx    context + null text            (only for separate text/context scales)

1. **Prefill once per branch.** Within a branch every variation has the same prefix (mix or
   metronome codes, the context id, often the same continuation prompt), so the prefix is run for
   one row and its keys/values are copied to the branch's V rows. Only the steps where rows
   differ (per-variation continuation prompts in long-form) run for all V rows. Steps that no row
   of the branch attends to are skipped: the unconditional context is all pad and masked (§3.1),
   so CFG's second row costs one step of prefill, not Tc. The cross-attention keys/values of the
   text are computed once; rows with a null text skip cross-attention, whose output is exactly
   zero there (§2.3: they attend to zero vectors).
2. **Decode** one step for all rows per iteration, writing sampled tokens only into slots that
   are still UNSET (`torch.where(slot == UNSET_ID, tokens, slot)`, as the reference), so the
   context id on its diagonal, trailing context frames and prompt codes are never overwritten.
   The loop has no host syncs: no `.item()`, no branching on tensor values; sampling draws from
   per-variation generators (seed + v) and never uses `torch.multinomial`.

Two decode paths share the same maths:
- eager (default): each branch attends over its own valid key range [first attended step,
  current step] of the cache; on a CPU this reads the fewest keys (the memory-bound case);
- static (`compile=True` or `cuda_graphs=True`): fixed shapes, one attention over the whole cache
  with a per-row key-validity mask, the new keys written with `index_copy_` at a step index held
  in a device tensor, so the step compiles with `torch.compile` and is captured once as a CUDA
  graph and replayed (sampling stays outside the graph: it is a few small kernels).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from stage.errors import StageError
from stage.generate.params import GenerationParams
from stage.generate.quantize import DTYPES, prepare_lm
from stage.generate.sampling import combine_guidance, sample_next
from stage.model.config import LMConfig
from stage.model.lm import StageLM
from stage.text import TextCondition
from stage.tokens import UNSET_ID
from stage.tokens.delay import num_steps, revert_delay
from stage.tokens.layout import build_generation_layout

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stage.model.lm import Block


def steps_needed(config: LMConfig, num_frames: int, context_frames: int = 0) -> int:
    """Interleaved steps S of a generation of `num_frames` stem frames after `context_frames` of
    context (§3.4: T = Tc + 1 + n, S = T + max(delays) + 1); what `max_steps` must cover."""
    prefix = 0 if config.layout == "musicgen" else context_frames + 1
    return num_steps(prefix + num_frames, config.delays, full=True)


@dataclass
class GeneratorOutput:
    """codes: [V, K, num_frames] stem codes (continuation prompt included); prefill / decode:
    seconds spent; steps: decode iterations (each samples one interleaved step)."""

    codes: Tensor
    prefill_seconds: float
    decode_seconds: float
    steps: int


@dataclass(frozen=True)
class _Group:
    """Rows attending over the same key range: rows (of the batch being run), lo (first key
    step), mask ([n, 1, q, keys] bool or None when every key in range is valid)."""

    rows: slice
    lo: int
    mask: Tensor | None


class Generator:
    """Stateful cached generator for one `StageLM` (see the module docstring).

    model: a `StageLM` or a `StageModel` (its `.lm`); it must be in eval mode.
    max_steps: the longest interleaved sequence a call may use (`steps_needed`).
    batch: the most variations per call; branches: rows per variation to allocate for (1 = no
      guidance, 2 = joint CFG, 3 = separate text/context scales).
    precision: "fp32" (exact), "bf16", "fp16" (GPU) or "int8" (CPU); see generate/quantize.py.
      The caller's model is never modified (other precisions work on a converted copy).
    compile: run the decode step through `torch.compile` (static path).
    cuda_graphs: capture the decode step once as a CUDA graph and replay it (static path, GPU).
    static: use the static decode step without compiling or capturing it (default: only with
      compile / cuda_graphs); the tests use it to check the static maths on a CPU.
    pack_weights: on a CPU in fp32, decode 4+ rows (2+ variations with CFG) through oneDNN with
      the decoder weights packed once (about 2x faster per step, one extra copy of the weights,
      made on first use). False keeps F.linear and no copy.
    """

    def __init__(
        self,
        model,
        max_steps: int,
        batch: int = 1,
        branches: int = 2,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graphs: bool = False,
        static: bool | None = None,
        pack_weights: bool = True,
    ):
        lm = model.lm if not isinstance(model, StageLM) and hasattr(model, "lm") else model
        if not isinstance(lm, StageLM):
            raise TypeError(f"Generator needs a StageLM or StageModel, got {type(model).__name__}")
        if lm.training:
            raise StageError("the model is in training mode; call model.eval() before generating")
        if max_steps < 2 or batch < 1 or branches not in (1, 2, 3):
            raise ValueError(f"bad Generator sizes: max_steps={max_steps}, batch={batch}, branches={branches}")
        self.lm = prepare_lm(lm, precision)
        self.config = lm.config
        self.precision = precision
        self.device = lm.norm.weight.device
        self.dtype = DTYPES[precision]
        self.max_steps = int(max_steps)
        self.capacity = batch * branches
        if cuda_graphs and self.device.type != "cuda":
            raise StageError("cuda_graphs needs the model on a CUDA device")
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.static = bool(compile or cuda_graphs) if static is None else bool(static or compile or cuda_graphs)
        c = self.config
        shape = (self.capacity, c.num_heads, self.max_steps, c.head_dim)
        # One static K/V pair per layer, allocated once and reused by every call (gpt-fast).
        self.k = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(c.num_layers)]
        self.v = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(c.num_layers)]
        self._key_steps = torch.arange(self.max_steps, device=self.device)
        # CPU kernels for the decode step's few-row fp32 products (benchmarks/README.md):
        # F.linear (x @ W.T) is 2-3x slower for 2-3 rows than for 1 (ENVIRONMENT.md), while
        # torch.mm(W, x.T) runs them at the 1-row, memory-bound speed; from 4 rows on (V >= 2
        # with CFG) oneDNN with weights packed once is fastest, at the cost of a second copy of
        # the decoder weights (`pack_weights`).
        fp32_cpu = self.device.type == "cpu" and self.dtype == torch.float32
        self._mm_rows = 3 if fp32_cpu else 0
        packable = fp32_cpu and pack_weights and not compile and torch.backends.mkldnn.is_available()
        self._pack_rows = 64 if packable else 0  # (oneDNN's opaque tensors do not trace)
        self._packed: dict[torch.nn.Module, Tensor] = {}
        self._compiled: Callable[..., Tensor] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None

    # ------------------------------------------------------------------ public

    @torch.no_grad()
    def generate(
        self,
        text: TextCondition | None,
        num_frames: int,
        params: GenerationParams,
        context: Tensor | None = None,
        prompt: Tensor | None = None,
        variations: int = 1,
        generators: Sequence[torch.Generator] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> GeneratorOutput:
        """Generate `variations` stems of `num_frames` frames.

        text: the prompt's projected T5 states, 1 row (shared) or V rows, or None (no text).
        context: [1 or V, K, Tc] mix/metronome codes or None. prompt: [1 or V, K, P] stem codes
        to continue (P <= num_frames; one row per variation in long-form) or None.
        generators: one per variation (variation v seeded with seed + v), or None (global RNG).
        """
        if self.lm.training:
            raise StageError("the model is in training mode; call model.eval() before generating")
        t0 = time.perf_counter()
        V = int(variations)
        state = self._setup(text, num_frames, params, context, prompt, V)
        logits = self._prefill(state)
        self._sync()
        t1 = time.perf_counter()
        codes, S, start, nb = state.codes, state.codes.shape[-1], state.start, state.num_branches
        total = S - start
        for i, s in enumerate(range(start, S)):
            guided = combine_guidance(logits, V, params.guidance, params.text_guidance)  # [V, K, card]
            tokens = sample_next(guided, params.temperature, params.top_k, params.top_p, generators)  # [V, K]
            tokens = tokens.repeat(nb, 1)  # every branch continues with the same tokens (§3.4)
            slot = codes[:, :, s]
            codes[:, :, s] = torch.where(slot == UNSET_ID, tokens, slot)
            if progress is not None:
                progress(i + 1, total)
            if s + 1 < S:
                logits = self._decode(state, s)
        self._sync()
        t2 = time.perf_counter()
        c = self.config
        frames = revert_delay(codes[:V], c.delays, state.prefix_frames + num_frames, c.pad_id)
        out = frames[:, :, state.prefix_frames :]  # [V, K, num_frames]
        return GeneratorOutput(out, t1 - t0, t2 - t1, max(0, total - 1))

    # ------------------------------------------------------------------ setup

    def _setup(self, text, num_frames, params, context, prompt, V) -> _State:
        c, dev = self.config, self.device
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if c.layout == "musicgen" and context is not None and context.shape[-1] > 0:
            raise StageError("a plain MusicGen model takes no context; fine-tune it with STAGE first")
        has_context = context is not None and context.shape[-1] > 0 and c.layout == "stage"
        nb = params.branches
        if nb == 3 and not has_context:
            nb = 2  # no context: the ctx branch equals uncond (see combine_guidance)
        R = nb * V
        if R > self.capacity:
            raise ValueError(f"{V} variations x {nb} branches need {R} cache rows; this Generator has {self.capacity}")

        def rows(x: Tensor | None, what: str) -> Tensor | None:
            if x is None:
                return None
            if x.shape[0] not in (1, V):
                raise ValueError(f"{what} has {x.shape[0]} rows for {V} variations")
            return x.to(dev).long().expand(V, *x.shape[1:])

        context, prompt = rows(context, "context"), rows(prompt, "prompt")
        if not has_context:
            context = None
        kw = dict(delays=c.delays, prompt=prompt, batch_size=V, layout=c.layout, pad_id=c.pad_id, context_id=c.context_id)
        contexts = [context, None if context is None else torch.full_like(context, c.pad_id), context][:nb]
        layouts = [build_generation_layout(num_frames, context=ctx, **kw) for ctx in contexts]
        codes = torch.cat([lay.codes for lay in layouts]).to(dev)  # [R, K, S]
        attended = torch.cat([lay.attended for lay in layouts]).to(dev)  # [R, S]
        positions = torch.cat([lay.positions for lay in layouts]).to(dev)  # [R, S]
        S, start = codes.shape[-1], layouts[0].start
        if S > self.max_steps:
            raise ValueError(f"this generation needs {S} steps; the Generator was built for {self.max_steps}")

        # Text: cross-attention only for the cond rows [0, V) and only when some text is present.
        cross = None
        if text is not None:
            if text.batch_size not in (1, V):
                raise ValueError(f"text has {text.batch_size} rows for {V} variations")
            if bool(text.mask.any()):  # host check, once, before the loop
                text = TextCondition(text.states.to(dev), text.mask.to(dev))
                kv, mask = self.lm.cross_kv(text, text.batch_size)
                if text.batch_size != V:
                    kv = [(k.expand(V, *k.shape[1:]), v.expand(V, *v.shape[1:])) for k, v in kv]
                    mask = None if mask is None else mask.expand(V, *mask.shape[1:])
                if self.static:  # fixed, contiguous inputs for compiled / captured steps
                    kv = [(k.contiguous(), v.contiguous()) for k, v in kv]
                    mask = None if mask is None else mask.contiguous()
                cross = _Cross(kv, mask, slice(0, V), shared=text.batch_size == 1 or _rows_equal(text.states))

        # Per branch: the first step any row attends to, where rows start to differ, and whether
        # keys inside [lo, S) need a mask (holes) or none (contiguous: the usual case).
        branches = []
        for b in range(nb):
            r = slice(b * V, (b + 1) * V)
            att = attended[r]
            lo = int(att.any(dim=0).int().argmax()) if bool(att.any()) else start - 1
            lo = min(lo, start - 1)
            same = (codes[r] == codes[r][:1]).all(dim=(0, 1)) & (att == att[:1]).all(0) & (positions[r] == positions[r][:1]).all(0)
            split = lo + int(torch.cat([~same[lo:start], same.new_ones(1)]).int().argmax())
            if b == 0 and cross is not None and not cross.shared:
                split = lo  # different texts per variation: nothing to share in the cond branch
            holes = not bool(att[:, lo:].all())
            branches.append(_Branch(rows=r, lo=lo, split=split, holes=holes))
        valid = torch.zeros(R, self.max_steps, dtype=torch.bool, device=dev)
        valid[:, :S] = attended
        return _State(codes.clone(), attended, positions, valid, start, nb, V, branches, cross, layouts[0].prefix_frames)

    # ------------------------------------------------------------------ prefill

    def _prefill(self, st: _State) -> Tensor:
        """Run the prefix once per branch (shared part on one row, divergent part on V rows) and
        return the logits that predict step `start`: [R, K, card] float32."""
        out = []
        for b, br in enumerate(st.branches):
            cross = st.cross if b == 0 else None
            rep = br.rows.start
            logits = None
            if br.split > br.lo:  # shared: one row, then copy its keys/values to the branch
                x = self._prefix_run(st, slice(rep, rep + 1), br.lo, br.lo, br.split, br.holes, cross)
                for k, v in zip(self.k, self.v):
                    k[rep + 1 : br.rows.stop, :, br.lo : br.split] = k[rep, :, br.lo : br.split]
                    v[rep + 1 : br.rows.stop, :, br.lo : br.split] = v[rep, :, br.lo : br.split]
                if br.split == st.start:
                    logits = self._logits(x).expand(st.variations, -1, -1)
            if br.split < st.start:  # divergent steps (e.g. per-variation prompts): all V rows
                x = self._prefix_run(st, br.rows, br.lo, br.split, st.start, br.holes, cross)
                logits = self._logits(x)
            assert logits is not None  # every branch ends its prefix at step `start`
            out.append(logits)
        return torch.cat(out)  # [R, K, card]

    def _prefix_run(self, st, rows: slice, lo: int, q_lo: int, q_hi: int, holes: bool, cross) -> Tensor:
        """Steps [q_lo, q_hi) of `rows` through the LM, keys [lo, q_hi) from the cache; returns the
        last step's hidden state [n, 1, D]."""
        steps = torch.arange(q_lo, q_hi, device=self.device)
        keys = torch.arange(lo, q_hi, device=self.device)
        mask = keys[None, :] <= steps[:, None]  # [q, k] causal
        if holes:  # key validity, and every query sees itself (as `causal_mask`: never an empty row)
            mask = (mask[None] & st.attended[rows, lo:q_hi][:, None, :]) | (keys[None, :] == steps[:, None])[None]
            mask = mask[:, None]  # [n, 1, q, k]
        x = self.lm.embed(st.codes[rows, :, q_lo:q_hi], st.positions[rows, q_lo:q_hi])  # [n, q, D]
        n = x.shape[0]
        cross_rows = None
        if cross is not None:
            cross = cross.narrow(n)
            cross_rows = slice(0, n)
        x = self._layers(x, rows, q_lo, q_hi, [_Group(slice(0, n), lo, mask)], cross, cross_rows)
        return x[:, -1:]

    # ------------------------------------------------------------------ decode

    def _decode(self, st: _State, s: int) -> Tensor:
        """Feed step s (all rows) and return the logits predicting step s + 1: [R, K, card]."""
        if self.static:
            return self._decode_static_call(st, s)
        R = st.codes.shape[0]
        groups = []
        for br in st.branches:
            mask = None
            if br.holes:
                mask = st.attended[br.rows, br.lo : s + 1][:, None, None, :]  # [V, 1, 1, keys]
            groups.append(_Group(br.rows, br.lo, mask))
        x = self.lm.embed(st.codes[:, :, s : s + 1], st.positions[:, s : s + 1])  # [R, 1, D]
        x = self._layers(x, slice(0, R), s, s + 1, groups, st.cross, st.cross.rows if st.cross else None)
        return self._logits(x)

    def _layers(self, x: Tensor, rows: slice, q_lo: int, key_hi: int, groups: list[_Group], cross, cross_rows) -> Tensor:
        """The decoder blocks over cache rows `rows` (x: [n, q, D], steps q_lo..q_lo+q-1). Each
        group of rows attends over keys [group.lo, key_hi). Same maths as `Block.forward`."""
        n, q, D = x.shape
        H, Dh = self.config.num_heads, self.config.head_dim
        r0 = rows.start
        for i, blk in enumerate(cast("Iterable[Block]", self.lm.blocks)):
            kc, vc = self.k[i], self.v[i]
            qkv = self._linear(blk.self_attn.qkv, blk.self_norm(x))
            qs, k, v = qkv.reshape(n, q, 3, H, Dh).permute(2, 0, 3, 1, 4)  # [n, H, q, Dh]
            kc[rows, :, q_lo : q_lo + q] = k
            vc[rows, :, q_lo : q_lo + q] = v
            ys = []
            for g in groups:
                cr = slice(r0 + g.rows.start, r0 + g.rows.stop)
                ys.append(F.scaled_dot_product_attention(
                    qs[g.rows], kc[cr, :, g.lo : key_hi], vc[cr, :, g.lo : key_hi], attn_mask=g.mask
                ))
            y = ys[0] if len(ys) == 1 else torch.cat(ys)  # [n, H, q, Dh]
            x = x + self._linear(blk.self_attn.out, y.transpose(1, 2).reshape(n, q, D))
            if cross is not None:
                x = self._cross(blk, i, x, cross, cross_rows)
            x = self._ff(blk, x)
        return x

    def _linear(self, module, x: Tensor) -> Tensor:
        """module(x) for x [n, q, D_in]; a few-row fp32 product on a CPU runs as
        torch.mm(W, x.T) (see `_mm_rows`). Quantised or half modules are simply called."""
        n, q, d = x.shape
        rows = n * q
        limit = self._mm_rows if q > 1 else max(self._mm_rows, self._pack_rows)  # packing: decode only
        if rows > limit or type(module) is not torch.nn.Linear or module.bias is not None:
            return module(x)
        x2 = x.reshape(rows, d).contiguous()
        if rows <= self._mm_rows:
            # x2 row-major so that x2.T is column-major: with a row-major right operand MKL's
            # few-column product is ~3x slower (measured, benchmarks/README.md).
            # .contiguous(): a strided result would push attention off its fused CPU kernel.
            return torch.mm(module.weight, x2.t()).t().contiguous().reshape(n, q, -1)
        packed = self._packed.get(module)
        if packed is None:
            packed = self._packed[module] = module.weight.detach().to_mkldnn()
        return torch._C._nn.mkldnn_linear(x2.to_mkldnn(), packed, None).to_dense().reshape(n, q, -1)

    def _cross(self, blk, i: int, x: Tensor, cross: _Cross, rows: slice) -> Tensor:
        """Cross-attention for the text rows only; the other rows' output is exactly zero (§2.3).
        Same maths as `CrossAttention.forward`."""
        k, v = cross.kv[i]
        whole = rows.start == 0 and rows.stop == x.shape[0]
        xt = x if whole else x[rows]
        n, q, D = xt.shape
        att = blk.cross_attn
        qs = self._linear(att.q, blk.cross_norm(xt)).reshape(n, q, att.heads, D // att.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(qs, k, v, attn_mask=cross.mask)  # [n, H, q, Dh]
        xt = xt + self._linear(att.out, y.transpose(1, 2).reshape(n, q, D))
        return xt if whole else torch.cat([xt, x[rows.stop :]])

    def _ff(self, blk, x: Tensor) -> Tensor:
        return x + self._linear(blk.ff_out, F.gelu(self._linear(blk.ff_in, blk.ff_norm(x))))

    def _logits(self, x: Tensor) -> Tensor:
        """Final norm and the K heads on the last step: [n, q, D] -> [n, K, card] float32."""
        h = self.lm.norm(x[:, -1:])
        return torch.stack([self._linear(head, h)[:, -1] for head in self.lm.heads], dim=1).float()

    # ------------------------------------------------------------------ static path

    def _decode_static(self, tokens: Tensor, positions: Tensor, index: Tensor, valid: Tensor) -> Tensor:
        """One decode step with fixed shapes: tokens [R, K, 1], positions [R, 1], index [1] (the
        step), valid [R, max_steps] key validity. Attention covers the whole cache under the mask
        valid & (key <= step); keys are written with index_copy_. No Python branching on values;
        the text keys/values are read from the persistent `_StaticInputs`."""
        R = tokens.shape[0]
        H, Dh, D = self.config.num_heads, self.config.head_dim, self.config.dim
        mask = (valid & (self._key_steps <= index))[:, None, None, :]  # [R, 1, 1, max_steps]
        x = self.lm.embed(tokens, positions)  # [R, 1, D]
        cross = self._inputs.cross
        for i, blk in enumerate(cast("Iterable[Block]", self.lm.blocks)):
            kc, vc = self.k[i][:R], self.v[i][:R]
            qkv = self._linear(blk.self_attn.qkv, blk.self_norm(x))
            qs, k, v = qkv.reshape(R, 1, 3, H, Dh).permute(2, 0, 3, 1, 4)  # [R, H, 1, Dh]
            kc.index_copy_(2, index, k)
            vc.index_copy_(2, index, v)
            y = F.scaled_dot_product_attention(qs, kc, vc, attn_mask=mask)
            x = x + self._linear(blk.self_attn.out, y.transpose(1, 2).reshape(R, 1, D))
            if cross is not None:
                x = self._cross(blk, i, x, cross, cross.rows)
            x = self._ff(blk, x)
        return self._logits(x)

    def _decode_static_call(self, st: _State, s: int) -> Tensor:
        """Copy step s's inputs into the persistent buffers and run the static step (compiled,
        replayed as a CUDA graph, or eagerly)."""
        if getattr(self, "_inputs_for", None) is not st:  # a new call: refresh the buffers
            self._inputs_for = st
            self._load_static_inputs(st)
        inp = self._inputs
        inp.tokens.copy_(st.codes[:, :, s : s + 1])
        inp.positions.copy_(st.positions[:, s : s + 1])
        inp.index.fill_(s)
        args = (inp.tokens, inp.positions, inp.index, inp.valid)
        if self.compile:
            if self._compiled is None:
                mode = "reduce-overhead" if self.cuda_graphs else None
                self._compiled = torch.compile(self._decode_static, mode=mode, fullgraph=True, dynamic=False)
            return self._compiled(*args).clone()  # the next replay may reuse the output memory
        if self.cuda_graphs:
            if self._graph is None:
                self._capture(args)
            assert self._graph is not None  # set by _capture
            self._graph.replay()
            return self._graph_out
        return self._decode_static(*args)

    def _load_static_inputs(self, st: _State) -> None:
        """Keep one set of static input buffers per shape (rows, text rows and tokens, mask), so a
        captured graph or a compiled step stays valid across calls and long-form windows."""
        R, K = st.codes.shape[0], self.config.num_codebooks
        cross = st.cross
        key = (R, None if cross is None else (tuple(cross.kv[0][0].shape), cross.mask is not None))
        inp = getattr(self, "_inputs", None)
        if inp is None or inp.key != key:
            dev = self.device
            static_cross = None
            if cross is not None:
                kv = [(torch.empty_like(k, memory_format=torch.contiguous_format),
                       torch.empty_like(v, memory_format=torch.contiguous_format)) for k, v in cross.kv]
                mask = None if cross.mask is None else torch.empty_like(cross.mask, memory_format=torch.contiguous_format)
                static_cross = _Cross(kv, mask, cross.rows, cross.shared)
            inp = _StaticInputs(
                key,
                torch.zeros(R, K, 1, dtype=torch.long, device=dev),
                torch.zeros(R, 1, dtype=torch.long, device=dev),
                torch.zeros(1, dtype=torch.long, device=dev),
                torch.zeros(R, self.max_steps, dtype=torch.bool, device=dev),
                static_cross,
            )
            self._inputs = inp
            self._graph = None  # new buffers: capture again
            if self.compile and self.cuda_graphs:  # cudagraph trees need fixed addresses
                for t in [inp.tokens, inp.positions, inp.index, inp.valid, *self.k, *self.v, *inp.tensors()]:
                    torch._dynamo.mark_static_address(t)
        inp.valid.copy_(st.valid)
        if cross is not None:
            assert inp.cross is not None  # the buffers' key says whether there is text, and a mask
            for (dk, dv), (k, v) in zip(inp.cross.kv, cross.kv):
                dk.copy_(k)
                dv.copy_(v)
            if cross.mask is not None:
                assert inp.cross.mask is not None
                inp.cross.mask.copy_(cross.mask)

    def _capture(self, args) -> None:
        """Capture the static step as a CUDA graph (warm-up on a side stream first). The warm-up
        computes the current step for real; its cache writes are idempotent."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._decode_static(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_out = self._decode_static(*args)
        self._graph = graph

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass(frozen=True)
class _Branch:
    rows: slice  # the branch's V rows
    lo: int  # first step any row attends to (earlier steps are never computed)
    split: int  # steps [lo, split) are identical across the rows: prefilled once
    holes: bool  # some key in [lo, S) is masked: attention needs an explicit mask


@dataclass
class _Cross:
    kv: list[tuple[Tensor, Tensor]]  # per layer [V, H, N, Dh]
    mask: Tensor | None  # [V, 1, 1, N] or None
    rows: slice  # the rows that carry text: the cond branch [0, V)
    shared: bool  # one text for every variation

    def narrow(self, n: int) -> _Cross:
        """The first n rows (a prefill on fewer rows than V)."""
        kv = [(k[:n], v[:n]) for k, v in self.kv]
        return _Cross(kv, None if self.mask is None else self.mask[:n], slice(0, n), self.shared)


@dataclass
class _State:
    codes: Tensor  # [R, K, S] being filled
    attended: Tensor  # [R, S]
    positions: Tensor  # [R, S]
    valid: Tensor  # [R, max_steps] key validity for the static path
    start: int
    num_branches: int
    variations: int
    branches: list[_Branch]
    cross: _Cross | None
    prefix_frames: int


@dataclass
class _StaticInputs:
    """Persistent inputs of the static decode step (fixed addresses for graphs/compile)."""

    key: tuple
    tokens: Tensor  # [R, K, 1]
    positions: Tensor  # [R, 1]
    index: Tensor  # [1]
    valid: Tensor  # [R, max_steps]
    cross: _Cross | None

    def tensors(self) -> list[Tensor]:
        if self.cross is None:
            return []
        out = [t for kv in self.cross.kv for t in kv]
        return out + ([self.cross.mask] if self.cross.mask is not None else [])


def _rows_equal(x: Tensor) -> bool:
    return bool((x == x[:1]).all())
