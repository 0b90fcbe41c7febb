"""The cached Generator equals the reference generator token for token (docs/method.md §3.4, §5),
its precision paths stay within their documented tolerances, and bad inputs fail clearly."""

from __future__ import annotations

from dataclasses import fields as dataclasses_fields

import numpy as np
import pytest
import torch

import stage
from stage.errors import AudioError, ConfigError, OptionError, StageError
from stage.generate.generator import Generator, steps_needed
from stage.generate.params import GenerationOptions, GenerationParams
from stage.generate.pipeline import cached_generator, cached_lm, generate_stems
from stage.generate.quantize import (
    BF16_LOGIT_TOLERANCE,
    INT8_LOGIT_RMS_TOLERANCE,
    INT8_LOGIT_TOLERANCE,
    is_quantized,
    is_quantized_module,
    logit_deviation,
    prepare_lm,
    quantize_int8,
)
from stage.generate.reference import reference_generate
from stage.generate.sampling import make_generators, sample_next
from stage.text import TextCondition
from stage.tokens import UNSET_ID
from stage.tokens.delay import revert_delay
from stage.tokens.layout import build_generation_layout

K = 4


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP's
    busy-waiting makes each step 100x slower whenever another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _codes(shape, seed):
    return torch.randint(0, 2048, shape, generator=torch.Generator().manual_seed(seed))


def _both(lm, text, frames, params, V, context=None, prompt=None, seed=7, **gen_kw):
    """(reference codes, cached codes) for V variations sharing one text/context."""
    ctx_rows = None if context is None else context.expand(V, -1, -1)
    prm_rows = None if prompt is None else prompt.expand(V, -1, -1)
    ref = reference_generate(
        lm, text.repeat(V) if text.batch_size == 1 else text, frames, params, context=ctx_rows, prompt=prm_rows,
        generators=make_generators([seed + v for v in range(V)]),
    )
    Tc = 0 if context is None else context.shape[-1]
    gen = Generator(lm, steps_needed(lm.config, frames, Tc), batch=V, branches=params.branches, **gen_kw)
    out = gen.generate(text, frames, params, context=context, prompt=prompt, variations=V,
                       generators=make_generators([seed + v for v in range(V)]))
    return ref, out.codes


PARAMS = {
    "greedy": GenerationParams(top_k=1),
    "sampled": GenerationParams(seed=0),
    "nucleus": GenerationParams(seed=0, temperature=0.8, top_k=0, top_p=0.9),
    "no-cfg": GenerationParams(seed=0, guidance=1.0),
}


@pytest.mark.parametrize("name", list(PARAMS))
@pytest.mark.parametrize("with_context", [False, True])
def test_cached_equals_reference_stage_layout(tiny_model, name, with_context):
    lm, params = tiny_model.lm, PARAMS[name]
    text = tiny_model.text(["rock drums"])
    context = _codes((1, K, 23), 1) if with_context else None
    ref, ours = _both(lm, text, 30, params, V=3, context=context)
    assert ours.shape == ref.shape == (3, K, 30)
    assert torch.equal(ours, ref)
    if name != "greedy":
        assert not torch.equal(ours[0], ours[1])  # variations differ (seed + v)


@pytest.mark.parametrize("name", ["greedy", "sampled"])
def test_cached_equals_reference_with_continuation(tiny_model, name):
    text = tiny_model.text(["bass"])
    prompt = _codes((1, K, 9), 2)
    ref, ours = _both(tiny_model.lm, text, 25, PARAMS[name], V=2, context=_codes((1, K, 17), 3), prompt=prompt)
    assert torch.equal(ours, ref)
    assert torch.equal(ours[:, :, :9], prompt.expand(2, -1, -1))  # prompt codes are never overwritten


def test_per_variation_prompts_and_texts(tiny_model):
    """Rows that differ after the shared prefix (long-form prompts) and one text per variation."""
    lm, V = tiny_model.lm, 3
    text = tiny_model.text(["rock drums with crash", "jazz", ""])  # padded, and one null text
    prompt = _codes((V, K, 6), 4)
    context = _codes((1, K, 15), 5)
    params = GenerationParams(seed=1)
    ref = reference_generate(lm, text, 20, params, context=context.expand(V, -1, -1), prompt=prompt,
                             generators=make_generators([1, 2, 3]))
    gen = Generator(lm, steps_needed(lm.config, 20, 15), batch=V)
    out = gen.generate(text, 20, params, context=context, prompt=prompt, variations=V, generators=make_generators([1, 2, 3]))
    assert torch.equal(out.codes, ref)


def test_static_decode_path_equals_reference(tiny_model):
    """The compile / CUDA-graph step (whole cache, validity mask, index_copy_) run eagerly."""
    text = tiny_model.text(["funk"])
    for context in (None, _codes((1, K, 12), 6)):
        ref, ours = _both(tiny_model.lm, text, 22, GenerationParams(seed=3), V=2, context=context, static=True)
        assert torch.equal(ours, ref)


@pytest.mark.parametrize("static", [False, True])
def test_generator_is_reused_across_calls(tiny_model, static):
    """One allocation serves several calls of different lengths; stale cache content never leaks."""
    lm, text = tiny_model.lm, tiny_model.text(["metal"])
    gen = Generator(lm, steps_needed(lm.config, 30, 20), batch=2, static=static)
    params = GenerationParams(seed=5)
    for frames, Tc in ((30, 20), (12, 0), (25, 8)):
        context = _codes((1, K, Tc), Tc) if Tc else None
        out = gen.generate(text, frames, params, context=context, variations=2, generators=make_generators([5, 6]))
        ref = reference_generate(lm, text.repeat(2), frames, params, context=None if context is None else context.expand(2, -1, -1),
                                 generators=make_generators([5, 6]))
        assert torch.equal(out.codes, ref)


@pytest.mark.slow
def test_compiled_decode_step_equals_reference_on_cpu(tiny_model):
    """torch.compile of the static step (inductor on the CPU; ~40 s of compilation)."""
    text = tiny_model.text(["rock"])
    context = _codes((1, K, 10), 0)
    ref, ours = _both(tiny_model.lm, text, 20, GenerationParams(seed=0), V=2, context=context, compile=True)
    assert torch.equal(ours, ref)


def test_prefix_is_shared_and_unconditional_context_skipped(tiny_model):
    """The plan behind the speed: within a branch the prefix is computed for one row, and the
    unconditional branch starts at its context id (its all-pad context is masked, §3.1)."""
    lm, V, Tc = tiny_model.lm, 4, 30
    gen = Generator(lm, steps_needed(lm.config, 20, Tc), batch=V)
    state = gen._setup(tiny_model.text(["x"]), 20, GenerationParams(), _codes((1, K, Tc), 0), None, V)
    cond, uncond = state.branches
    assert (cond.lo, cond.split) == (1, state.start)  # step 0 is all pad; everything else shared
    assert (uncond.lo, uncond.split) == (Tc + 1, state.start)  # one step of prefill: the context id
    assert not cond.holes and not uncond.holes  # contiguous keys: no attention mask needed
    prompts = _codes((V, K, 5), 1)  # per-variation prompts: shared only up to the first prompt step
    state = gen._setup(tiny_model.text(["x"]), 20, GenerationParams(), _codes((1, K, Tc), 0), prompts, V)
    assert state.branches[0].split == Tc + 2


def test_musicgen_layout_equals_reference(hf_tiny):
    folder = hf_tiny[0]
    model = stage.load_model(folder)
    assert model.config.lm.layout == "musicgen"
    text = model.text(["rock drums with a heavy kick", "jazz"])
    for name in ("greedy", "sampled"):
        for prompt in (None, _codes((2, K, 5), 8)):
            params = PARAMS[name]
            ref = reference_generate(model.lm, text, 24, params, prompt=prompt, generators=make_generators([0, 1]))
            gen = Generator(model, steps_needed(model.config.lm, 24), batch=2)
            out = gen.generate(text, 24, params, prompt=prompt, variations=2, generators=make_generators([0, 1]))
            assert torch.equal(out.codes, ref)


def _slow_separate_guidance(lm, text, frames, params, context, seeds):
    """Oracle for separate text/context scales: full forwards of the three branches each step."""
    c = lm.config
    kw = dict(delays=c.delays, batch_size=1, layout=c.layout, pad_id=c.pad_id, context_id=c.context_id)
    full = build_generation_layout(frames, context=context, **kw)
    unc = build_generation_layout(frames, context=torch.full_like(context, c.pad_id), **kw)
    null = TextCondition.null(1, c.dim)
    codes = torch.cat([full.codes, unc.codes, full.codes]).clone()
    attended = torch.cat([full.attended, unc.attended, full.attended])
    positions = torch.cat([full.positions, unc.positions, full.positions])
    texts = TextCondition.cat([text, null, null])
    gens = make_generators(seeds)
    for s in range(full.start, full.steps):
        lg = lm(codes[..., :s], texts, attended[:, :s], positions[:, :s])[:, :, -1].float()
        cond, uncond, ctx = lg[0:1], lg[1:2], lg[2:3]
        guided = uncond + params.guidance * (ctx - uncond) + params.text_guidance * (cond - ctx)
        tok = sample_next(guided, params.temperature, params.top_k, params.top_p, gens).repeat(3, 1)
        codes[:, :, s] = torch.where(codes[:, :, s] == UNSET_ID, tok, codes[:, :, s])
    return revert_delay(codes[:1], c.delays, full.prefix_frames + frames, c.pad_id)[:, :, full.prefix_frames:]


def test_separate_text_and_context_guidance(tiny_model):
    lm, text, context = tiny_model.lm, tiny_model.text(["rock drums"]), _codes((1, K, 14), 9)
    params = GenerationParams(seed=2, guidance=2.0, text_guidance=4.5)
    assert params.branches == 3
    gen = Generator(lm, steps_needed(lm.config, 20, 14), batch=1, branches=3)
    out = gen.generate(text, 20, params, context=context, generators=make_generators([2]))
    assert torch.equal(out.codes, _slow_separate_guidance(lm, text, 20, params, context, [2]))
    # Equal scales reduce to the authors' joint formula.
    joint = GenerationParams(top_k=1, guidance=3.0)
    same = GenerationParams(top_k=1, guidance=3.0, text_guidance=3.0)
    a = gen.generate(text, 20, joint, context=context).codes
    b = gen.generate(text, 20, same, context=context).codes
    assert torch.equal(a, b)


def test_progress_counts_every_step(tiny_model):
    seen = []
    result = generate_stems(tiny_model, options=GenerationOptions(prompt="x", seconds=0.4, seed=0),
                            progress=lambda i, n: seen.append((i, n)))
    total = seen[0][1]
    assert [i for i, _ in seen] == list(range(1, total + 1)) and all(n == total for _, n in seen)
    assert total == 20 + 3  # 20 frames + the delay tail (§3.4: S - start)
    assert result.timings["windows"] == 1 and result.timings["real_time_factor"] > 0


def test_high_level_engines_agree(tiny_model):
    mix = np.random.default_rng(0).standard_normal((2, 44_100 * 2)).astype(np.float32) * 0.1
    kw = dict(prompt="rock", variations=2, seed=4)
    cached = generate_stems(tiny_model, mix, 44_100, GenerationOptions(**kw))
    ref = generate_stems(tiny_model, mix, 44_100, GenerationOptions(engine="reference", **kw))
    assert torch.equal(cached.codes, ref.codes)
    assert cached.stems.shape == (2, 2, 88_200) and cached.seeds == [4, 5]
    np.testing.assert_array_equal(cached.stems, ref.stems)


# ----------------------------------------------------------------------------- one decoder forward


def test_every_path_runs_the_one_block_forward(tiny_model, monkeypatch):
    """Prefill, the eager and the static decode step and the reference generator all run
    `Block.forward` (model/lm.py): perturbing it changes each of them, one call per layer and
    step, and restoring it restores every output exactly."""
    from stage.model.lm import Block

    lm, V, frames, Tc = tiny_model.lm, 2, 20, 12
    text, context, params = tiny_model.text(["rock"]), _codes((1, K, Tc), 0), GenerationParams(seed=0)
    original = Block.forward
    delta = torch.randn(lm.config.dim, generator=torch.Generator().manual_seed(0)) * 0.1
    calls = []

    def perturbed(self, x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return original(self, x, *args, **kwargs) + delta  # a shift, not a scale: LayerNorm keeps it

    def steps(gen, patch_prefill, patch_decode):
        """(prefill logits, first decode step's logits) of a fresh generation state."""
        st = gen._setup(text, frames, params, context, None, V)
        with monkeypatch.context() as m:
            if patch_prefill:
                m.setattr(Block, "forward", perturbed)
            prefill = gen._prefill(st)
        slot = st.codes[:, :, st.start]
        st.codes[:, :, st.start] = torch.where(slot == UNSET_ID, 0, slot)  # a token to feed
        calls.clear()
        with monkeypatch.context() as m:
            if patch_decode:
                m.setattr(Block, "forward", perturbed)
            decode = gen._decode(st, st.start)
        return prefill, decode

    def codes(gen):
        ref = reference_generate(lm, text.repeat(V), frames, params, context=context.expand(V, -1, -1),
                                 generators=make_generators([0, 1]))
        out = gen.generate(text, frames, params, context=context, variations=V, generators=make_generators([0, 1]))
        return ref, out.codes

    for static in (False, True):
        gen = Generator(lm, steps_needed(lm.config, frames, Tc), batch=V, static=static)
        base = steps(gen, False, False)
        prefill, decode = steps(gen, True, False)
        assert not torch.equal(prefill, base[0]) and not torch.equal(decode, base[1])  # via the cached keys
        prefill, decode = steps(gen, False, True)
        assert torch.equal(prefill, base[0]) and not torch.equal(decode, base[1])
        assert calls == [(2 * V, 1, lm.config.dim)] * lm.config.num_layers  # one call per layer, all rows
        restored = steps(gen, False, False)
        assert torch.equal(restored[0], base[0]) and torch.equal(restored[1], base[1])

        ref, ours = codes(gen)
        assert torch.equal(ours, ref)
        with monkeypatch.context() as m:
            m.setattr(Block, "forward", perturbed)
            ref_p, ours_p = codes(gen)
        assert not torch.equal(ref_p, ref) and not torch.equal(ours_p, ours)
        assert torch.equal(ours_p, ref_p)  # the same perturbed maths on both sides
        ref_r, ours_r = codes(gen)
        assert torch.equal(ref_r, ref) and torch.equal(ours_r, ours)


# ----------------------------------------------------------------------------- precision


def _layout(lm, seed=0):
    """A random STAGE sequence with a context and a full stem (no unset slots)."""
    return build_generation_layout(30, lm.config.delays, context=_codes((1, K, 20), seed), prompt=_codes((1, K, 30), seed + 1))


def test_int8_logits_within_tolerance(tiny_model):
    lm = tiny_model.lm
    q = quantize_int8(lm)
    assert is_quantized(q) and not is_quantized(lm)  # the caller's model is untouched
    text = tiny_model.text(["rock drums"])
    layout = _layout(lm)
    with torch.no_grad():
        ref = lm(layout.codes, text, layout.attended, layout.positions)
        got = q(layout.codes, text, layout.attended, layout.positions)
    dev = logit_deviation(ref, got)
    assert 0 < dev <= INT8_LOGIT_TOLERANCE  # quantised for real, and within the documented bound
    assert logit_deviation(ref, got, rms=True) <= INT8_LOGIT_RMS_TOLERANCE


@pytest.mark.slow
def test_int8_logits_within_tolerance_musicgen_small_shapes():
    """The documented int8 tolerance on the shapes it is meant for (1024 x 24, random weights)."""
    from stage.model.config import LMConfig
    from stage.model.lm import StageLM

    torch.manual_seed(0)
    with torch.device("meta"):
        lm = StageLM(LMConfig())
    lm = lm.to_empty(device="cpu")
    lm.reset_parameters()
    lm.eval()
    text = TextCondition(torch.randn(1, 12, 1024) * 0.5, torch.ones(1, 12, dtype=torch.bool))
    g = torch.Generator().manual_seed(0)
    layout = build_generation_layout(32, lm.config.delays, context=torch.randint(0, 2048, (1, K, 32), generator=g),
                                     prompt=torch.randint(0, 2048, (1, K, 32), generator=g))
    with torch.no_grad():
        ref = lm(layout.codes, text, layout.attended, layout.positions)
        got = quantize_int8(lm)(layout.codes, text, layout.attended, layout.positions)
    assert logit_deviation(ref, got) <= INT8_LOGIT_TOLERANCE
    assert logit_deviation(ref, got, rms=True) <= INT8_LOGIT_RMS_TOLERANCE


def test_cpu_kernels_share_the_weights_and_the_quantised_linears(tiny_model):
    """The kernel transform copies modules, not weights: fp32 parameters and torch's int8 linears
    (whose deep copy would unpack and repack every weight) are the caller's own objects, and a
    full-sequence forward (plain F.linear) is unchanged bit for bit."""
    from stage.generate.kernels import FewRowLinear, cpu_kernels

    lm = tiny_model.lm
    fast = cpu_kernels(lm)
    assert any(isinstance(m, FewRowLinear) for m in fast.modules())
    assert {id(p) for p in fast.parameters()} == {id(p) for p in lm.parameters()}
    q = quantize_int8(lm)
    fast_q = cpu_kernels(q)

    def int8_linears(model):
        return [m for m in model.modules() if is_quantized_module(m) and hasattr(m, "weight")]

    assert int8_linears(q) and all(a is b for a, b in zip(int8_linears(q), int8_linears(fast_q), strict=True))
    text = tiny_model.text(["rock drums"])
    layout = _layout(lm, 2)
    with torch.no_grad():
        assert torch.equal(fast_q(layout.codes, text, layout.attended, layout.positions),
                           q(layout.codes, text, layout.attended, layout.positions))


def test_bf16_on_cpu_within_tolerance(tiny_model):
    lm = tiny_model.lm
    half = prepare_lm(lm, "bf16")
    assert half.norm.weight.dtype == torch.bfloat16 and lm.norm.weight.dtype == torch.float32
    text = tiny_model.text(["rock drums"])
    layout = _layout(lm, 3)
    with torch.no_grad():
        ref = lm(layout.codes, text, layout.attended, layout.positions)
        got = half(layout.codes, TextCondition(text.states.bfloat16(), text.mask), layout.attended, layout.positions)
    assert logit_deviation(ref, got) <= BF16_LOGIT_TOLERANCE
    result = generate_stems(tiny_model, options=GenerationOptions(prompt="x", seconds=0.5, precision="bf16", seed=1))
    assert result.stems.shape == (1, 1, 16_000) and np.isfinite(result.stems).all()


def test_high_level_generate_keeps_its_generator_until_weights_change(tiny_model):
    """Repeated calls reuse one Generator (caches allocated once); editing a weight drops it."""
    steps = steps_needed(tiny_model.config.lm, 25)
    options = GenerationOptions(prompt="x", seconds=0.5, seed=2)
    r1 = generate_stems(tiny_model, options=options)
    gen = cached_generator(tiny_model, "fp32", 1, 2, steps)
    r2 = generate_stems(tiny_model, options=options)
    assert cached_generator(tiny_model, "fp32", 1, 2, steps) is gen
    assert torch.equal(r1.codes, r2.codes)
    with torch.no_grad():
        tiny_model.lm.norm.weight.mul_(1.0)  # an in-place edit (same values)
    assert cached_generator(tiny_model, "fp32", 1, 2, steps) is not gen


def test_int8_high_level_generate_reuses_the_quantised_copy(tiny_model):
    options = GenerationOptions(prompt="x", seconds=0.5, precision="int8", seed=1)
    r1 = generate_stems(tiny_model, options=options)
    first = cached_lm(tiny_model, "int8")
    r2 = generate_stems(tiny_model, options=options)
    assert cached_lm(tiny_model, "int8") is first
    assert torch.equal(r1.codes, r2.codes)  # seeded: reproducible


# ----------------------------------------------------------------------------- bad input


def test_generator_refuses_training_mode_and_overflow(tiny_model):
    lm = tiny_model.lm
    lm.train()
    try:
        with pytest.raises(StageError, match="training mode"):
            Generator(lm, 100)
        with pytest.raises(StageError, match="training mode"):
            generate_stems(tiny_model, options=GenerationOptions(prompt="x", seconds=0.2))
    finally:
        lm.eval()
    gen = Generator(lm, steps_needed(lm.config, 10), batch=1)
    with pytest.raises(ValueError, match="steps"):
        gen.generate(None, 11, GenerationParams())
    with pytest.raises(ValueError, match="cache rows"):
        gen.generate(None, 5, GenerationParams(), variations=2)


# Bad options: refused by GenerationOptions itself, before any model runs.
BAD_OPTIONS = [
    (dict(seconds=0), "seconds must be a number > 0"),
    (dict(seconds=-3.0), "seconds must be a number > 0"),
    (dict(seconds=float("nan")), "seconds must be a number > 0"),
    (dict(variations=0), "variations must be an integer"),
    (dict(variations=-1), "variations must be an integer"),
    (dict(variations=1.5), "variations must be an integer"),
    (dict(precision="int4"), "precision must be one of"),
    (dict(engine="fast"), "engine must be"),
    (dict(engine="reference", precision="int8"), "fp32 only"),
    (dict(engine="reference", text_guidance=2.0), "joint guidance only"),
]
# Bad inputs: the audio, the rate and the device, checked when generating.
BAD = [
    (dict(context=np.zeros(100, np.float32), sample_rate=32_000), StageError, "at least one codec frame"),
    (dict(context=np.array([0.0, np.nan] * 32_000, np.float32), sample_rate=32_000), AudioError, "NaN"),
    (dict(context=np.zeros((2, 0), np.float32), sample_rate=32_000), AudioError, "empty"),
    (dict(options=GenerationOptions(prompt="x", seconds=0.3, precision="fp16")), ConfigError, "needs a GPU"),
    (dict(options=GenerationParams(seed=0)), OptionError, "options must be a GenerationOptions"),
    (dict(sample_rate=0), AudioError, "sample rate"),
]


@pytest.mark.parametrize("kwargs, message", BAD_OPTIONS)
def test_bad_options_fail_clearly(kwargs, message):
    with pytest.raises(OptionError, match=message) as info:
        GenerationOptions(prompt="x", **kwargs)
    assert "\n" not in str(info.value)


def test_options_are_frozen_and_validated_again_when_replaced():
    import dataclasses

    options = GenerationOptions(seconds=2.0, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seconds = 3.0  # type: ignore[misc]
    assert dataclasses.replace(options, top_k=1).top_k == 1 and options.top_k == 250
    with pytest.raises(OptionError, match="top_k"):
        dataclasses.replace(options, top_k=-1)


def test_option_errors_pickle_with_their_field():
    import pickle

    err = pickle.loads(pickle.dumps(OptionError("top_k", "must be an integer >= 0, got -1")))
    assert (err.field, err.reason, str(err)) == ("top_k", "must be an integer >= 0, got -1", "top_k must be an integer >= 0, got -1")


def test_options_extend_the_sampling_params():
    """The sampling fields and defaults are GenerationParams' own (one home), and the options
    hand the Generator exactly those."""
    assert {f.name: f.default for f in dataclasses_fields(GenerationParams)} == {
        name: getattr(GenerationOptions(), name) for name in (f.name for f in dataclasses_fields(GenerationParams))}
    params = GenerationParams(guidance=2.0, top_k=7, seed=3, text_guidance=4.0)
    options = GenerationOptions.from_params(params, seconds=1.0, seed=9)
    assert options.params == GenerationParams(guidance=2.0, top_k=7, seed=9, text_guidance=4.0)
    assert type(options.params) is GenerationParams and options.seconds == 1.0
    with pytest.raises(OptionError, match="params must be a GenerationParams"):
        GenerationOptions.from_params("greedy")  # type: ignore[arg-type]


# One case per kind of bad value: the typed error names the field (`field`, and the message's first word).
@pytest.mark.parametrize("kwargs, field", [
    (dict(top_k=2.5), "top_k"),                          # wrong type
    (dict(guidance=True), "guidance"),                   # a bool is not a number
    (dict(temperature=float("nan")), "temperature"),     # not finite
    (dict(seconds=1e9), "seconds"),                      # out of range (more than an hour)
    (dict(bpm=1000.0), "bpm"),                           # out of range
    (dict(beats_per_bar=0), "beats_per_bar"),            # out of range
    (dict(offset=float("inf")), "offset"),               # not finite
    (dict(output_rate=0), "output_rate"),                # not a sample rate
    (dict(prompt=3), "prompt"),                          # wrong type
    (dict(window="10 s"), "window"),                     # wrong type
    (dict(engine="fast"), "engine"),                     # not a choice
    (dict(compile="yes"), "compile"),                    # not a bool
    (dict(engine="reference", text_guidance=2.0), "text_guidance"),  # a combination the engine lacks
])
def test_each_bad_option_names_its_field(kwargs, field):
    with pytest.raises(OptionError) as info:
        GenerationOptions(**kwargs)
    assert info.value.field == field and str(info.value).startswith(field + " ")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, StageError)  # one line, exit 2 in the CLI
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, error, message", BAD)
def test_bad_inputs_fail_clearly(tiny_model, kwargs, error, message):
    kw = dict(options=GenerationOptions(prompt="x", seconds=0.3))
    kw.update(kwargs)
    with pytest.raises(error, match=message) as info:
        generate_stems(tiny_model, **kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_p=1.5), "top_p must be in"),
    (dict(top_p=-0.1), "top_p must be in"),
    (dict(top_p=float("nan")), "top_p must be in"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=-5), "top_k"),
    (dict(guidance=float("inf")), "guidance"),
    (dict(text_guidance=-1.0), "text_guidance"),
    (dict(seed=-1), "seed"),
])
def test_bad_params_fail_clearly(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GenerationParams(**kwargs)


def test_musicgen_model_refuses_context(hf_tiny):
    model = stage.load_model(hf_tiny[0])
    with pytest.raises(StageError, match="plain MusicGen"):
        generate_stems(model, np.zeros(32_000, np.float32), 32_000, GenerationOptions(seconds=0.5))
    with pytest.raises(StageError, match="plain MusicGen"):
        generate_stems(model, options=GenerationOptions(bpm=120, seconds=0.5))
