"""The fast generator: static KV cache, one shared prefill, a sync-free decode loop (docs/method.md
§3.4, §5; §9 "KV-cached decoding", "several variations in one batch").

It produces exactly what `reference.reference_generate` produces (the authors' loop, which re-runs
the whole prefix at every step), token for token in fp32, but computes every step once:

    rows   = branches x variations, in blocks: [cond x B | uncond x B | ctx x B]
      cond   context + text                 (the conditional branch)
      uncond context all pad + null text    (CFG's unconditional branch, §5)
      ctx    context + null text            (only for separate text/context scales)

1. **Prefill once per branch.** Within a branch every variation has the same prefix (mix or
   metronome codes, the context id, often the same continuation prompt), so the prefix is run for
   one row and its keys/values are copied to the branch's B rows. Only the steps where rows
   differ (per-variation continuation prompts in long-form) run for all B rows. Steps that no row
   of the branch attends to are skipped: the unconditional context is all pad and masked (§3.1),
   so CFG's second row costs one step of prefill, not Tc. The cross-attention keys/values of the
   text are computed once; rows with a null text skip cross-attention, whose output is exactly
   zero there (§2.3: they attend to zero vectors).
2. **Decode** one step for all rows per iteration, writing sampled tokens only into slots that
   are still UNSET (`torch.where(slot == UNSET_ID, tokens, slot)`, as the reference), so the
   context id on its diagonal, trailing context frames and prompt codes are never overwritten.
   The loop has no host syncs: no `.item()`, no branching on tensor values; sampling draws from
   per-variation generators (seed + v) and never uses `torch.multinomial`.

Prefill and both decode paths run the LM's own blocks (`StageLM.hidden` -> `Block.forward`,
model/lm.py) over one static `KVCache` (model/kv_cache.py); what differs is the `CacheView` they
pass, i.e. where the new keys go and which keys each branch reads:
- eager (default): each branch attends over its own valid key range [first attended step,
  current step] of the cache; on a CPU this reads the fewest keys (the memory-bound case);
- static (`compile=True` or `cuda_graphs=True`): fixed shapes, one attention over the whole cache
  with a per-row key-validity mask, the new keys written with `index_copy_` at a step index held
  in a device tensor, so the step compiles with `torch.compile` and is captured once as a CUDA
  graph and replayed (sampling stays outside the graph: it is a few small kernels).
On a CPU in fp32 the LM first goes through `kernels.cpu_kernels` (few-row linear kernels).

Shapes use STYLE.md's letters: B variations (the batch), R = branches x B cache rows, K codebooks,
S interleaved steps, Tc context frames, P prompt frames, L text tokens, D model width and V the
vocabulary (codebook_size).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stage.errors import StageError
from stage.generate.kernels import cpu_kernels
from stage.generate.params import GenerationParams
from stage.generate.quantize import DTYPES, prepare_lm
from stage.generate.sampling import combine_guidance, sample_next
from stage.model.config import LMConfig
from stage.model.kv_cache import CacheView, KeyRange, KVCache
from stage.model.lm import StageLM
from stage.text import TextCondition
from stage.tokens import UNSET_ID
from stage.tokens.delay import num_steps, revert_delay
from stage.tokens.layout import build_generation_layout


def steps_needed(config: LMConfig, num_frames: int, context_frames: int = 0) -> int:
    """Interleaved steps S of a generation of `num_frames` stem frames after `context_frames` of
    context (§3.4: T = Tc + 1 + n, S = T + max(delays) + 1); what `max_steps` must cover."""
    prefix = 0 if config.layout == "musicgen" else context_frames + 1
    return num_steps(prefix + num_frames, config.delays, full=True)


@dataclass
class GeneratorOutput:
    """codes: [B, K, num_frames] stem codes (continuation prompt included); prefill / decode:
    seconds spent; steps: decode iterations (each samples one interleaved step); stream_seconds:
    time spent in the `on_frames` callback (not part of decode_seconds)."""

    codes: Tensor
    prefill_seconds: float
    decode_seconds: float
    steps: int
    stream_seconds: float = 0.0


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
      made on first use; generate/kernels.py). False keeps F.linear and no copy.
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
        self.source = lm  # the caller's model: generate() refuses it once it is put in training mode
        # CPU kernels for the few-row fp32 products (generate/kernels.py); oneDNN's packed weights
        # do not trace, so a compiled step keeps the others.
        self.lm = cpu_kernels(prepare_lm(lm, precision), pack=pack_weights and not compile)
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
        # One static K/V pair per layer, allocated once and reused by every call (gpt-fast).
        self.cache = KVCache(c.num_layers, self.capacity, c.num_heads, self.max_steps, c.head_dim, self.device, self.dtype)
        self._key_steps = torch.arange(self.max_steps, device=self.device)
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
        on_frames: Callable[[int, Tensor], None] | None = None,
        chunk_frames: int = 50,
    ) -> GeneratorOutput:
        """Generate `variations` stems of `num_frames` frames.

        text: the prompt's projected T5 states, 1 row (shared) or B rows, or None (no text).
        context: [1 or B, K, Tc] mix/metronome codes or None. prompt: [1 or B, K, P] stem codes
        to continue (P <= num_frames; one row per variation in long-form) or None.
        generators: one per variation (variation v seeded with seed + v), or None (global RNG).
        on_frames(first, frames [B, K, n]): streaming. Called as soon as `chunk_frames` more stem
          frames are complete in every codebook (frame t is complete once step t + 1 + max(delays)
          of the prefix-shifted sequence is sampled, tokens/delay.py), with the un-delayed codes of
          frames [first, first + n); the last call flushes the rest, so the calls cover
          [0, num_frames) in order. The callback only reads the codes: sampling is unchanged, and
          its time is left out of `decode_seconds` (reported as `stream_seconds`).
        """
        if self.source.training or self.lm.training:
            raise StageError("the model is in training mode; call model.eval() before generating")
        t0 = time.perf_counter()
        B = int(variations)
        state = self._setup(text, num_frames, params, context, prompt, B)
        logits = self._prefill(state)
        self._sync()
        t1 = time.perf_counter()
        codes, S, start, nb = state.codes, state.codes.shape[-1], state.start, state.num_branches
        total = S - start
        if on_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        lag = state.prefix_frames + max(self.config.delays)  # stem frame j is complete after step j + 1 + lag
        emitted, stream_seconds = 0, 0.0
        for i, s in enumerate(range(start, S)):
            guided = combine_guidance(logits, B, params.guidance, params.text_guidance)  # [B, K, V]
            tokens = sample_next(guided, params.temperature, params.top_k, params.top_p, generators)  # [B, K]
            tokens = tokens.repeat(nb, 1)  # [R, K]: every branch continues with the same tokens (§3.4)
            slot = codes[:, :, s]
            codes[:, :, s] = torch.where(slot == UNSET_ID, tokens, slot)
            if progress is not None:
                progress(i + 1, total)
            if on_frames is not None:
                complete = min(num_frames, s - lag)  # stem frames [0, complete) are final now
                if complete - emitted >= chunk_frames or (s + 1 == S and complete > emitted):
                    tc = time.perf_counter()
                    on_frames(emitted, self._frames(codes[:B], state.prefix_frames, emitted, complete))
                    stream_seconds += time.perf_counter() - tc
                    emitted = complete
            if s + 1 < S:
                logits = self._decode(state, s)
        self._sync()
        t2 = time.perf_counter()
        c = self.config
        frames = revert_delay(codes[:B], c.delays, state.prefix_frames + num_frames, c.pad_id)
        out = frames[:, :, state.prefix_frames :]  # [B, K, num_frames]
        return GeneratorOutput(out, t1 - t0, t2 - t1 - stream_seconds, max(0, total - 1), stream_seconds)

    def _frames(self, codes: Tensor, prefix: int, a: int, b: int) -> Tensor:
        """Un-delayed stem frames [a, b) from the interleaved codes [B, K, S]: steps
        [prefix + a, prefix + b + max(delays) + 1) hold them (step 0 of that slice plays the
        pattern's leading pad). Returns [B, K, b - a]."""
        c = self.config
        steps = codes[:, :, prefix + a : prefix + b + max(c.delays) + 1]  # [B, K, b - a + max(delays) + 1]
        return revert_delay(steps, c.delays, b - a, c.pad_id).clone()

    # ------------------------------------------------------------------ setup

    def _setup(self, text, num_frames, params, context, prompt, B) -> _State:
        c, dev = self.config, self.device
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if c.layout == "musicgen" and context is not None and context.shape[-1] > 0:
            raise StageError("a plain MusicGen model takes no context; fine-tune it with STAGE first")
        has_context = context is not None and context.shape[-1] > 0 and c.layout == "stage"
        nb = params.branches
        if nb == 3 and not has_context:
            nb = 2  # no context: the ctx branch equals uncond (see combine_guidance)
        R = nb * B
        if R > self.capacity:
            raise ValueError(f"{B} variations x {nb} branches need {R} cache rows; this Generator has {self.capacity}")

        def rows(x: Tensor | None, what: str) -> Tensor | None:
            if x is None:
                return None
            if x.shape[0] not in (1, B):
                raise ValueError(f"{what} has {x.shape[0]} rows for {B} variations")
            return x.to(dev).long().expand(B, *x.shape[1:])  # [B, K, Tc] or [B, K, P]

        context, prompt = rows(context, "context"), rows(prompt, "prompt")
        if not has_context:
            context = None
        kw = dict(delays=c.delays, prompt=prompt, batch_size=B, layout=c.layout, pad_id=c.pad_id, context_id=c.context_id)
        contexts = [context, None if context is None else torch.full_like(context, c.pad_id), context][:nb]
        layouts = [build_generation_layout(num_frames, context=ctx, **kw) for ctx in contexts]
        codes = torch.cat([lay.codes for lay in layouts]).to(dev)  # [R, K, S]
        attended = torch.cat([lay.attended for lay in layouts]).to(dev)  # [R, S]
        positions = torch.cat([lay.positions for lay in layouts]).to(dev)  # [R, S]
        S, start = codes.shape[-1], layouts[0].start
        if S > self.max_steps:
            raise ValueError(f"this generation needs {S} steps; the Generator was built for {self.max_steps}")

        # Text: cross-attention only for the cond rows [0, B) and only when some text is present.
        cross = None
        if text is not None:
            if text.batch_size not in (1, B):
                raise ValueError(f"text has {text.batch_size} rows for {B} variations")
            if bool(text.mask.any()):  # host check, once, before the loop
                text = TextCondition(text.states.to(dev), text.mask.to(dev))
                kv, mask = self.lm.cross_kv(text, text.batch_size)
                if text.batch_size != B:
                    kv = [(k.expand(B, *k.shape[1:]), v.expand(B, *v.shape[1:])) for k, v in kv]  # [B, H, L, Dh]
                    mask = None if mask is None else mask.expand(B, *mask.shape[1:])  # [B, 1, 1, L]
                if self.static:  # fixed, contiguous inputs for compiled / captured steps
                    kv = [(k.contiguous(), v.contiguous()) for k, v in kv]
                    mask = None if mask is None else mask.contiguous()
                cross = _Cross(kv, mask, slice(0, B), shared=text.batch_size == 1 or _rows_equal(text.states))

        # Per branch: the first step any row attends to, where rows start to differ, and whether
        # keys inside [lo, S) need a mask (holes) or none (contiguous: the usual case).
        branches = []
        for b in range(nb):
            r = slice(b * B, (b + 1) * B)
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
        return _State(codes.clone(), attended, positions, valid, start, nb, B, branches, cross, layouts[0].prefix_frames)

    # ------------------------------------------------------------------ prefill

    def _prefill(self, st: _State) -> Tensor:
        """Run the prefix once per branch (shared part on one row, divergent part on B rows) and
        return the logits that predict step `start`: [R, K, V] float32."""
        out: list[Tensor] = []
        for b, br in enumerate(st.branches):
            cross = st.cross if b == 0 else None
            rep = br.rows.start
            logits = None
            if br.split > br.lo:  # shared: one row, then copy its keys/values to the branch
                x = self._prefix_run(st, slice(rep, rep + 1), br.lo, br.lo, br.split, br.holes, cross)
                self.cache.copy_row(rep, slice(rep + 1, br.rows.stop), br.lo, br.split)
                if br.split == st.start:
                    logits = self._logits(x).expand(st.variations, -1, -1)  # [B, K, V]
            if br.split < st.start:  # divergent steps (e.g. per-variation prompts): all B rows
                x = self._prefix_run(st, br.rows, br.lo, br.split, st.start, br.holes, cross)
                logits = self._logits(x)
            if logits is None:  # unreachable: one of the two runs ends at `start`
                raise RuntimeError("prefill produced no logits")
            out.append(logits)
        return torch.cat(out)  # [R, K, V]

    def _prefix_run(self, st, rows: slice, lo: int, q_lo: int, q_hi: int, holes: bool, cross) -> Tensor:
        """Steps [q_lo, q_hi) of `rows` through the LM, keys [lo, q_hi) from the cache; returns the
        last step's hidden state [n, 1, D]."""
        steps = torch.arange(q_lo, q_hi, device=self.device)
        keys = torch.arange(lo, q_hi, device=self.device)
        mask = keys[None, :] <= steps[:, None]  # [q, k] causal
        if holes:  # key validity, and every query sees itself (as `causal_mask`: never an empty row)
            mask = (mask[None] & st.attended[rows, lo:q_hi][:, None, :]) | (keys[None, :] == steps[:, None])[None]
            mask = mask[:, None]  # [n, 1, q, k]
        n = rows.stop - rows.start
        cross = None if cross is None else cross.narrow(n)
        view = CacheView(rows, q_lo, (KeyRange(slice(0, n), lo, q_hi, mask),))
        x = self._hidden(st.codes[rows, :, q_lo:q_hi], st.positions[rows, q_lo:q_hi], cross, view)  # [n, q, D]
        return x[:, -1:]

    # ------------------------------------------------------------------ decode

    def _decode(self, st: _State, s: int) -> Tensor:
        """Feed step s (all rows) and return the logits predicting step s + 1: [R, K, V]."""
        if self.static:
            return self._decode_static_call(st, s)
        R = st.codes.shape[0]
        ranges = []
        for br in st.branches:
            mask = None
            if br.holes:
                mask = st.attended[br.rows, br.lo : s + 1][:, None, None, :]  # [B, 1, 1, keys]
            ranges.append(KeyRange(br.rows, br.lo, s + 1, mask))
        view = CacheView(slice(0, R), s, tuple(ranges))
        x = self._hidden(st.codes[:, :, s : s + 1], st.positions[:, s : s + 1], st.cross, view)  # [R, 1, D]
        return self._logits(x)

    def _hidden(self, codes: Tensor, positions: Tensor, cross: _Cross | None, view: CacheView) -> Tensor:
        """The LM's blocks over the cache (`StageLM.hidden`); the text goes to the cross rows only
        (the others' cross-attention output is exactly zero, §2.3)."""
        kv, mask, rows = (None, None, None) if cross is None else (cross.kv, cross.mask, cross.rows)
        return self.lm.hidden(codes, positions, None, kv, mask, rows, self.cache, view)

    def _logits(self, x: Tensor) -> Tensor:
        """Final norm and the K heads on the last step: [n, q, D] -> [n, K, V] float32."""
        return self.lm.logits(x[:, -1:])[:, :, -1].float()

    # ------------------------------------------------------------------ static path

    def _decode_static(self, tokens: Tensor, positions: Tensor, index: Tensor, valid: Tensor) -> Tensor:
        """One decode step with fixed shapes: tokens [R, K, 1], positions [R, 1], index [1] (the
        step), valid [R, max_steps] key validity. Attention covers the whole cache under the mask
        valid & (key <= step); keys are written with index_copy_. No Python branching on values;
        the text keys/values are read from the persistent `_StaticInputs`."""
        R = tokens.shape[0]
        mask = (valid & (self._key_steps <= index))[:, None, None, :]  # [R, 1, 1, max_steps]
        view = CacheView(slice(0, R), index, (KeyRange(slice(0, R), 0, self.max_steps, mask),))
        return self._logits(self._hidden(tokens, positions, self._inputs.cross, view))

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
            graph = self._graph if self._graph is not None else self._capture(args)
            graph.replay()
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
                for t in [inp.tokens, inp.positions, inp.index, inp.valid, *self.cache.tensors(), *inp.tensors()]:
                    torch._dynamo.mark_static_address(t)
        inp.valid.copy_(st.valid)
        if cross is not None and inp.cross is not None:  # (the key makes them present together)
            for (dk, dv), (k, v) in zip(inp.cross.kv, cross.kv):
                dk.copy_(k)
                dv.copy_(v)
            if cross.mask is not None and inp.cross.mask is not None:
                inp.cross.mask.copy_(cross.mask)

    def _capture(self, args) -> torch.cuda.CUDAGraph:
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
        return graph

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass(frozen=True)
class _Branch:
    rows: slice  # the branch's B rows
    lo: int  # first step any row attends to (earlier steps are never computed)
    split: int  # steps [lo, split) are identical across the rows: prefilled once
    holes: bool  # some key in [lo, S) is masked: attention needs an explicit mask


@dataclass
class _Cross:
    kv: list[tuple[Tensor, Tensor]]  # per layer [B, H, L, Dh]
    mask: Tensor | None  # [B, 1, 1, L] or None
    rows: slice  # the rows that carry text: the cond branch [0, B)
    shared: bool  # one text for every variation

    def narrow(self, n: int) -> _Cross:
        """The first n rows (a prefill on fewer rows than B)."""
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
