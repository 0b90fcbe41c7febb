"""Streaming generation: the Generator's `on_frames`, the overlap decoder (tokens/stream.py),
`generate_stems(on_chunk=...)` and `stage generate --stream`, with the tiny model and the bundled
stage-mini-codec. The offline decode of the same codes is the reference for the stitched stream."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import drum_loop
from stage.cli import main
from stage.errors import OptionError, StageError
from stage.generate.generator import Generator, steps_needed
from stage.generate.params import GenerationOptions, GenerationParams
from stage.generate.pipeline import fits_one_window, generate_stems
from stage.generate.sampling import make_generators
from stage.generate.takefiles import StemStream
from stage.tokens.stream import SEAM_TOLERANCE, StreamingDecoder, WindowedDecoder, seam_error

K = 4


def _stream_generate(model, frames: int, chunk: int, seed: int = 3, V: int = 2):
    """The same generation twice, without and with on_frames; returns (plain codes, streamed
    output, [(first, frames, sampling steps done at the call)], total steps)."""
    text = model.text(["rock drums"])
    context = torch.randint(0, 2048, (1, K, 30), generator=torch.Generator().manual_seed(1))
    gen = Generator(model.lm, steps_needed(model.config.lm, frames, 30), batch=V)
    params = GenerationParams(seed=seed)
    seeds = [seed + v for v in range(V)]
    plain = gen.generate(text, frames, params, context=context, variations=V, generators=make_generators(seeds, model.device))
    steps = [0]
    calls = []

    def progress(done, total):
        steps[0] = done
        steps.append(total)

    streamed = gen.generate(text, frames, params, context=context, variations=V, generators=make_generators(seeds, model.device),
                            progress=progress, on_frames=lambda first, codes: calls.append((first, codes, steps[0])),
                            chunk_frames=chunk)
    return plain.codes, streamed, calls, steps[-1]


def test_streamed_codes_equal_plain_and_arrive_early(tiny_model):
    """Sampling is untouched by streaming (bit-identical codes); the chunks cover the stem in
    order, each equal to the final codes there, and each arrives as soon as its frames are
    complete: chunk_frames + max(delays) steps after the previous one, long before the end."""
    frames, chunk = 60, 20
    plain, streamed, calls, total = _stream_generate(tiny_model, frames, chunk)
    assert torch.equal(plain, streamed.codes)
    assert [c[0] for c in calls] == [0, 20, 40]
    assert torch.equal(torch.cat([c[1] for c in calls], dim=-1), streamed.codes)
    delay = max(tiny_model.config.lm.delays)
    # frame j is complete after step j + 1 + max(delays) (counted from the first sampled step)
    assert [c[2] for c in calls] == [chunk + delay, 2 * chunk + delay, total]
    assert calls[0][2] < total // 2
    assert streamed.stream_seconds > 0


def test_stream_decoder_tiny_codec_matches_offline(tiny_model):
    """Stitched chunks of the tiny codec equal its offline decode within the tolerance, whatever
    the chunk size (two frames per push included), and every sample is emitted exactly once."""
    _, streamed, calls, _ = _stream_generate(tiny_model, 60, 7)
    offline = tiny_model.decode_model_audio(streamed.codes)  # [B, 1, T * hop]
    for chunks in ([c[1] for c in calls], list(torch.split(streamed.codes, 2, dim=-1))):
        dec = StreamingDecoder(tiny_model.codec)
        for codes in chunks:
            dec.push(codes)
        dec.flush()
        assert dec.audio().shape == offline.shape
        err = seam_error(dec.audio(), offline)
        assert err["max_rel"] < SEAM_TOLERANCE, err
    # re-decoding each chunk without context (the LSTM restarts cold at every seam) misses it
    dec = WindowedDecoder(tiny_model.decode_model_audio, tiny_model.codec.hop_length, left=0, right=0)
    for c in calls:
        dec.push(c[1])
    dec.flush()
    assert seam_error(dec.audio(), offline)["max_rel"] > 100 * SEAM_TOLERANCE


def test_stream_decoder_mini_codec_matches_offline():
    """The bundled stage-mini-codec, whose decoder's LSTM remembers far longer than the tiny
    one's (carrying its state is what makes the stream exact): 3 s of drum codes streamed in 1 s
    chunks, and in chunks of 3 frames, stitch within the tolerance."""
    import stage

    codec = stage.load_model("stage-mini-drums").codec
    loop = torch.from_numpy(drum_loop(110.0, 3.0, codec.sample_rate, 0.05))[None]  # [1, 1, N]
    codes = codec.encode(loop)  # [1, K, 150]
    offline = codec.decode(codes).numpy()
    for size in (50, 3):
        dec = StreamingDecoder(codec)
        for piece in torch.split(codes, size, dim=-1):
            dec.push(piece)
        dec.flush()
        err = seam_error(dec.audio(), offline)
        assert err["signal_rms"] > 0 and err["max_rel"] < SEAM_TOLERANCE, err


def test_generate_stems_streams_chunks(tiny_model):
    """generate_stems(on_chunk=...): contiguous AudioChunks, the first well before the end, the
    last marked final; the joined chunks are the result's audio and the codes are those of a run
    without streaming."""
    kw = dict(prompt="funk", seconds=2.0, seed=4, guidance=1.0)
    plain = generate_stems(tiny_model, options=GenerationOptions(**kw))
    chunks, steps = [], [0]
    result = generate_stems(tiny_model, options=GenerationOptions(**kw), on_chunk=lambda c: chunks.append((c, steps[0])),
                            chunk_seconds=0.5, progress=lambda done, total: steps.__setitem__(0, done))
    assert torch.equal(plain.codes, result.codes)
    assert [c.first for c, _ in chunks] == [0] + [c.stop for c, _ in chunks[:-1]]
    assert chunks[-1][0].stop == result.codes.shape[-1] and chunks[-1][0].final and not chunks[0][0].final
    assert chunks[0][1] < steps[0] // 2  # the first chunk came before half the steps were sampled
    assert result.timings["first_audio"] < result.timings["total"]
    joined = np.concatenate([c.audio for c, _ in chunks], axis=-1)
    np.testing.assert_array_equal(result.stems, joined)  # 32 kHz mono out: no resampling
    assert seam_error(result.stems, plain.stems)["max_rel"] < SEAM_TOLERANCE


def test_a_long_take_streams_window_by_window(tiny_model):
    """Past one window, each long-form window hands out the stem up to the next window's
    crossfade (whole frames): contiguous chunks, one per window, the last final; joined, they are
    the result's audio exactly, and the codes and audio are those of a run without streaming."""
    kw = dict(prompt="funk", seconds=10.5, seed=4, guidance=1.0)
    assert not fits_one_window(tiny_model, kw["seconds"])
    plain = generate_stems(tiny_model, options=GenerationOptions(**kw))
    chunks, steps = [], [0]
    result = generate_stems(tiny_model, options=GenerationOptions(**kw), on_chunk=lambda c: chunks.append((c, steps[0])),
                            progress=lambda done, total: steps.__setitem__(0, done))
    assert torch.equal(plain.codes, result.codes) and result.timings["windows"] >= 2
    assert len(chunks) == result.timings["windows"]
    assert [c.first for c, _ in chunks] == [0] + [c.stop for c, _ in chunks[:-1]]
    assert chunks[-1][0].stop == result.codes.shape[-1] and chunks[-1][0].final and not chunks[0][0].final
    assert all(c.audio.shape[-1] == (c.stop - c.first) * tiny_model.codec.hop_length for c, _ in chunks)
    assert chunks[0][1] < steps[0]  # the first window's audio came before the last window was sampled
    joined = np.concatenate([c.audio for c, _ in chunks], axis=-1)
    np.testing.assert_array_equal(result.stems, joined[..., :result.stems.shape[-1]])  # 32 kHz mono out
    np.testing.assert_array_equal(result.stems, plain.stems)


def test_generate_stems_refuses_what_does_not_stream(tiny_model):
    with pytest.raises(StageError, match="cached engine"):
        generate_stems(tiny_model, options=GenerationOptions(seconds=0.2, engine="reference"), on_chunk=print)
    with pytest.raises(OptionError, match="chunk_seconds"):
        generate_stems(tiny_model, options=GenerationOptions(seconds=0.2), on_chunk=print, chunk_seconds=0)


# --------------------------------------------------------------------------- CLI


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_stream_writes_the_take_progressively(tmp_path, capsys, monkeypatch):
    """--stream replaces the stem WAV every chunk; every version on disk is a complete WAV (read
    back after each real write) that grows; the final take equals the non-stream one up to one
    PCM step (the seam error is far below it)."""
    mix_path = tmp_path / "song.wav"
    sf.write(str(mix_path), drum_loop(120.0, 1.5, 44_100, 0.05, channels=2).T, 44_100, subtype="PCM_16")
    seen: list[tuple[int, int]] = []
    write = StemStream.__call__

    def record(self, stems):
        write(self, stems)
        for path in self.paths:
            info = sf.info(str(path))  # a broken or half-written file would not parse
            seen.append((info.frames, info.channels))

    monkeypatch.setattr(StemStream, "__call__", record)
    args = [mix_path, "--model", "tiny", "--stem", "drums", "--cfg", "1", "--seed", 5]
    rc, _, err = _cli(capsys, "generate", *args, "--out", tmp_path / "plain", "--quiet")
    assert rc == 0, err
    rc, _, err = _cli(capsys, "generate", *args, "--out", tmp_path / "stream", "--stream", "--stream-seconds", 0.4)
    assert rc == 0, err
    assert "streaming to" in err
    assert len(seen) == 4 and all(ch == 2 for _, ch in seen)  # 75 frames in chunks of 20: 4 updates, then the final take
    lengths = [n for n, _ in seen]
    assert lengths == sorted(lengths) and 0 < lengths[0] < lengths[-1] < 66_150
    names = sorted(p.name for p in (tmp_path / "stream").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "plain").iterdir())
    plain, _ = sf.read(str(tmp_path / "plain" / "song_drums_s5.wav"), dtype="int16")
    streamed, _ = sf.read(str(tmp_path / "stream" / "song_drums_s5.wav"), dtype="int16")
    assert plain.shape == streamed.shape == (66_150, 2)
    assert np.abs(plain.astype(int) - streamed.astype(int)).max() <= 1


def test_cli_streams_a_long_take_window_by_window(tmp_path, capsys, monkeypatch):
    """Past one window (tiny: 10 s), --stream rewrites the stem after each long-form window."""
    seen: list[int] = []
    write = StemStream.__call__

    def record(self, stems):
        write(self, stems)
        seen.append(sf.info(str(self.paths[0])).frames)

    monkeypatch.setattr(StemStream, "__call__", record)
    rc, _, err = _cli(capsys, "generate", "--metronome-only", "--bpm", 120, "--seconds", 12, "--model", "tiny",
                      "--stem", "drums", "--seed", 2, "--out", tmp_path / "out", "--stream")
    assert rc == 0, err
    assert "after each long-form window" in err
    assert len(seen) >= 1 and seen == sorted(seen) and 0 < seen[0] < 12 * 44_100  # (--sample-rate's default)
    wavs = sorted((tmp_path / "out").glob("*.wav"))  # the stem and its preview over the click
    assert len(wavs) == 2 and all(sf.info(str(w)).frames == 12 * 44_100 for w in wavs)


@pytest.mark.parametrize("extra, message", [
    (["--stream-seconds", "0.5"], "--stream-seconds sets the chunk length of --stream; add --stream"),
    (["--stream", "--stream-seconds", "0"], "--stream-seconds must be a number of seconds > 0"),
])
def test_cli_stream_bad_combinations(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc, stdout, err = _cli(capsys, "generate", "--metronome-only", "--bpm", 120, "--seconds", 1, "--model", "tiny",
                           "--stem", "drums", "--quiet", "--out", out, *extra)
    assert rc == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
