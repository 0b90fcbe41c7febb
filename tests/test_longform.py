"""Whole-song accompaniment: window plan, conditioning slices, continuation, crossfade and exact,
sample-aligned output length (generate/longform.py; docs/method.md §3.4, §3.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stage.errors import ConfigError, StageError
from stage.generate.generator import Generator, steps_needed
from stage.generate.longform import WindowParams, crossfade_gains, generate_longform, plan_windows, stitch
from stage.generate.params import GenerationOptions, GenerationParams
from stage.generate.pipeline import generate_stems
from stage.generate.sampling import make_generators

HOP = 640  # tiny EnCodec: 32 kHz, 50 Hz frames


@pytest.fixture(autouse=True)
def one_thread():
    """See tests/test_generator.py: tiny models run faster and steadier on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _noise(channels, n, seed=0, scale=0.1):
    return (np.random.default_rng(seed).standard_normal((channels, n)) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- pure parts


def test_plan_covers_the_song_with_aligned_windows():
    plan = plan_windows(1750, window=500, context=500, prompt=250, available=1750)
    assert [w.start for w in plan] == [0, 250, 500, 750, 1000, 1250]
    assert plan[-1].end == 1750 and all(w.frames == 500 for w in plan)
    assert [w.prompt for w in plan] == [0, 250, 250, 250, 250, 250]
    assert all(w.context == 500 for w in plan)
    # A song that is not a whole number of hops: the last window ends at the end, longer prompt.
    plan = plan_windows(1234, window=500, context=400, prompt=250, available=1000)
    assert [w.start for w in plan] == [0, 250, 500, 734] and plan[-1].end == 1234
    assert plan[-1].prompt == 1000 - 734  # the overlap with the window before
    assert [w.context for w in plan] == [400, 400, 400, 266]  # the mix ends at frame 1000
    for a, b in zip(plan, plan[1:]):
        assert b.start < a.end and b.prompt == a.end - b.start  # every window continues the last
    # Shorter than a window: one window of exactly the song, context clamped to the mix.
    (only,) = plan_windows(120, 500, 500, 250, available=80)
    assert (only.start, only.frames, only.prompt, only.context) == (0, 120, 0, 80)
    (only,) = plan_windows(120, 500, 500, 250, available=None)
    assert only.context == 0


def test_crossfade_gains_have_constant_power():
    for n in (2, 7, 3200):
        fade_out, fade_in = crossfade_gains(n)
        np.testing.assert_allclose(fade_out**2 + fade_in**2, 1.0, atol=1e-12)
        assert np.all(np.diff(fade_out) < 0) and np.all(np.diff(fade_in) > 0)
        assert fade_out[0] > fade_in[0] and fade_out[-1] < fade_in[-1]
    fade_out, fade_in = crossfade_gains(3200)
    np.testing.assert_allclose(fade_out, fade_in[::-1], atol=1e-12)  # symmetric
    fade_out, fade_in = crossfade_gains(3200, "linear")  # the equal-gain option
    np.testing.assert_allclose(fade_out + fade_in, 1.0, atol=1e-12)


def test_stitch_places_every_window_at_its_own_samples():
    """Windows cut from one signal come back at the right samples: exact outside the crossfades,
    and g_out * x + g_in * x inside them (a one-sample misplacement would break both)."""
    plan = plan_windows(1234, window=500, context=500, prompt=250, available=1234)
    signal = _noise(2, 1234 * HOP, seed=3).astype(np.float64)
    pieces = [signal[:, w.start * HOP : w.end * HOP] for w in plan]
    xf = 3200
    out = stitch(pieces, plan, HOP, xf)
    assert out.shape == signal.shape
    gain = np.ones(signal.shape[-1])
    for prev, win in zip(plan, plan[1:]):
        a = win.start * HOP
        overlap = prev.end * HOP - a
        f0 = a + overlap // 2 - xf // 2
        fade_out, fade_in = crossfade_gains(xf)
        gain[f0 : f0 + xf] = fade_out + fade_in
    np.testing.assert_allclose(out, signal * gain, atol=1e-12)
    assert (gain > 1).sum() == xf * (len(plan) - 1)  # only the crossfades differ from the signal
    np.testing.assert_allclose(stitch(pieces, plan, HOP, xf, "linear"), signal, atol=1e-12)  # equal gain


def test_window_params_are_validated():
    assert WindowParams().frames(50) == (500, 500, 250)
    assert WindowParams(context_seconds=30).frames(50) == (500, 500, 250)  # clamped to the window
    for bad, message in [
        (dict(window_seconds=0), "window_seconds"),
        (dict(prompt_seconds=10), "prompt_seconds"),
        (dict(prompt_seconds=0), "prompt_seconds"),
        (dict(crossfade_seconds=6), "crossfade"),
        (dict(context_seconds=float("nan")), "context_seconds"),
        (dict(crossfade_shape="cubic"), "crossfade_shape"),
    ]:
        with pytest.raises(ConfigError, match=message):
            WindowParams(**bad)


# ----------------------------------------------------------------------------- with the tiny model


def test_whole_song_is_exactly_the_input_length(tiny_model):
    """A 35 s stereo mix at 44.1 kHz: a 35 s stereo stem at 44.1 kHz, six windows."""
    mix = _noise(2, 35 * 44_100, seed=1)
    result = generate_stems(tiny_model, mix, 44_100, GenerationOptions(prompt="rock drums", seed=0))
    assert result.stems.shape == (1, 2, 35 * 44_100)
    assert result.codes.shape == (1, 4, 35 * 50)
    assert result.timings["windows"] == 6
    assert np.isfinite(result.stems).all() and np.abs(result.stems).max() > 0
    np.testing.assert_array_equal(result.stems[:, 0], result.stems[:, 1])  # mono model, copied


def _run_tiny_longform(model, mix, total_frames, window, variations=2, seed=0, continuation=None):
    """generate_longform with the real Generator, recording each window's context and prompt."""
    text = model.text(["funky bass"])
    params = GenerationParams(seed=seed)
    gens = make_generators([seed + v for v in range(variations)])
    win, ctx, _ = window.frames(50)
    gen = Generator(model, steps_needed(model.config.lm, min(win, total_frames), ctx), batch=variations)
    seen = []

    def run(context, prompt, frames, progress):
        if not seen and continuation is not None:
            prompt = continuation
        out = gen.generate(text, frames, params, context=context, prompt=prompt, variations=variations,
                           generators=gens, progress=progress)
        seen.append((context, prompt, out.codes.clone()))
        return out

    windows = []
    out = generate_longform(
        run, model.encode_model_audio, model.decode_model_audio, mix, total_frames, window, 50, HOP,
        on_window=lambda w, c: windows.append(w), extra_steps=3,
        first_prompt=0 if continuation is None else continuation.shape[-1],
    )
    return out, windows, seen


def test_each_window_is_conditioned_on_its_own_slice_and_continues_the_stem(tiny_model):
    window = WindowParams(window_seconds=2.0, context_seconds=1.5, prompt_seconds=0.8, crossfade_seconds=0.1)
    mix = _noise(1, int(6.3 * 32_000), seed=2)  # 6.3 s at the model rate: 315 frames
    out, windows, seen = _run_tiny_longform(tiny_model, mix, 315, window)
    assert [w.start for w in windows] == [0, 60, 120, 180, 215] and windows[-1].end == 315
    for w, (context, prompt, codes) in zip(windows, seen):
        a, b = w.start * HOP, (w.start + w.context) * HOP
        assert (a, b) == w.context_samples(HOP)
        assert torch.equal(context, tiny_model.encode_model_audio(mix[:, a:b]))  # the time-aligned slice
        assert context.shape[-1] == 75  # first 1.5 s of the 2 s window
        assert torch.equal(out.codes[:, :, w.start : w.end], codes)
        if w.index > 0:  # the prompt is the stem generated so far, per variation
            assert prompt.shape == (2, 4, w.prompt)
            assert torch.equal(codes[:, :, : w.prompt], prompt)
    assert not torch.equal(out.codes[0], out.codes[1])  # variations continue their own stems
    # The joined audio is each window's own decode at that window's samples (outside crossfades).
    for w, (_, _, codes) in zip(windows, seen):
        piece = tiny_model.decode_model_audio(codes)
        lo = w.start * HOP + (w.prompt * HOP // 2 + 1600 if w.index else 0)
        hi = (windows[w.index + 1].start * HOP + windows[w.index + 1].prompt * HOP // 2 - 1600) if w.index + 1 < len(windows) else w.end * HOP
        np.testing.assert_allclose(out.audio[..., lo:hi], piece[..., lo - w.start * HOP : hi - w.start * HOP], atol=1e-6)


def test_longform_reference_engine_agrees(tiny_model):
    """Cached and reference engines produce the same whole-song codes (window after window)."""
    window = WindowParams(window_seconds=1.6, context_seconds=1.0, prompt_seconds=0.6, crossfade_seconds=0.05)
    mix = _noise(1, int(3.5 * 32_000), seed=5)
    kw = dict(prompt="x", variations=2, window=window, seed=9)
    cached = generate_stems(tiny_model, mix, 32_000, GenerationOptions(**kw))
    ref = generate_stems(tiny_model, mix, 32_000, GenerationOptions(engine="reference", **kw))
    assert cached.timings["windows"] == 3
    assert torch.equal(cached.codes, ref.codes)
    np.testing.assert_array_equal(cached.stems, ref.stems)


def test_metronome_and_continuation_in_long_form(tiny_model):
    """bpm: the click track is rendered for the whole song and windowed on one grid; a
    continuation opens the first window."""
    from stage.data.metronome import render_metronome

    window = WindowParams(window_seconds=2.0, context_seconds=2.0, prompt_seconds=1.0, crossfade_seconds=0.1)
    clicks = render_metronome(120, 4, 5.0, 0.25, 32_000)[None]
    continuation = tiny_model.encode_model_audio(_noise(1, 16_000, seed=7))  # 0.5 s = 25 frames
    out, windows, seen = _run_tiny_longform(tiny_model, clicks, 250, window, variations=1, continuation=continuation)
    assert len(windows) == 4 and windows[0].prompt == 25
    assert torch.equal(out.codes[:, :, :25], continuation)
    for w, (context, _, _) in zip(windows, seen):
        a, b = w.context_samples(HOP)
        assert torch.equal(context, tiny_model.encode_model_audio(clicks[:, a:b]))
    result = generate_stems(tiny_model, None, 48_000, GenerationOptions(bpm=120, seconds=5.0, window=window, prompt="x", seed=1))
    assert result.stems.shape == (1, 1, 240_000) and result.timings["windows"] == 4


def test_continuation_longer_than_a_window_is_refused(tiny_model):
    window = WindowParams(window_seconds=1.0, prompt_seconds=0.5, crossfade_seconds=0.1)
    with pytest.raises(StageError, match="shorter than one window"):
        generate_stems(tiny_model, None, 32_000, GenerationOptions(prompt="x", seconds=3.0, window=window),
                       continuation=_noise(1, 40_000))
