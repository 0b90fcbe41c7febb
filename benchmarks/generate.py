"""Benchmark: stage's cached Generator against transformers' MusicGen `generate`, in one process,
on the same random musicgen-small-shaped weights.

The job (issue 4): "10 s context + 10 s stem, CFG 3, top-k 250, sampling".
- transformers: `MusicgenForConditionalGeneration.generate` with a 10 s audio prompt (the same
  length as our context) and 500 new frames, guidance_scale 3, top_k 250, do_sample.
- stage: `generate_stems(model, <the same 10 s audio>, options=GenerationOptions(seconds=10))` in the STAGE layout
  (context codes + context id + stem), joint CFG 3, top-k 250, built from the same weights.

The decoder has musicgen-small's shape (1024 x 24 layers, 16 heads, FFN 4096, 4 x 2048 codes,
419.6 M parameters, random weights). The text encoder is a tiny T5 (2 layers, width 32) and
EnCodec is the tiny 32 kHz / 50 Hz config used by the tests: both cost milliseconds here and do
not change the LM comparison (their real sizes add ~0.2 s of T5 and ~3 + 3.7 s of EnCodec on a
CPU to both sides; see ENVIRONMENT.md).

Printed per row: prefill seconds, median ms per decode step (the interval between consecutive
sampling steps: forward + guidance + sampling), end-to-end seconds, peak RSS during the run,
and ratios against the transformers row of the same variation count. The roofline is the bytes
of weights one decode step must read (every decoder linear except the cross-attention keys and
values, which are computed once, plus the output heads) divided by the memory bandwidth measured
here: a large tensor copy (bytes copied per second, as ENVIRONMENT.md's figure) and, stricter, a
read-only pass (summing 1 GiB). Timings on shared machines are noisy: compare ratios, all
measured in this one process.

    python benchmarks/generate.py                       # full job, V = 1, fp32 + int8
    python benchmarks/generate.py --variations 4        # the V = 4 row
    python benchmarks/generate.py --compile             # also the compiled static fp32 step
    python benchmarks/generate.py --seconds 1 --context-seconds 1   # a quick smoke run
    python benchmarks/generate.py --precisions fp32 --skip-transformers
On a CUDA device the stage rows are bf16 with CUDA graphs (and fp32); transformers runs in fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PROMPT = "rock drums with a heavy kick and crashing cymbals"


# ----------------------------------------------------------------------------- measurement helpers


class RssSampler:
    """Peak resident memory during a block (sampled every 10 ms from /proc/self/statm)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:  # not Linux: the process-wide peak
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.01)

    def __enter__(self):
        self.before = self.rss()
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def measure_bandwidth(device: torch.device) -> tuple[float, float]:
    """(read, copy) bandwidth in bytes/s, the best of several passes: `read` sums a 1 GiB float32
    tensor (bytes read / s); `copy` copies 512 MiB into a preallocated tensor (bytes copied / s,
    the convention of ENVIRONMENT.md's "about 11 GB/s")."""
    x = torch.ones(256 * 1024 * 1024, device=device)
    y = torch.empty(128 * 1024 * 1024, device=device)
    read = copy = float("inf")
    for _ in range(6):
        sync(device)
        t = time.perf_counter()
        x.sum()
        sync(device)
        read = min(read, time.perf_counter() - t)
        t = time.perf_counter()
        y.copy_(x[: y.numel()])
        sync(device)
        copy = min(copy, time.perf_counter() - t)
    del x, y
    return 256 * 1024 * 1024 * 4 / read, 128 * 1024 * 1024 * 4 / copy


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_weight_bytes(lm, precision: str) -> int:
    """Bytes of weights one decode step reads: all block linears except the cross-attention
    keys/values (computed once per generation), plus the K heads."""
    per_weight = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}[precision]
    n = 0
    for blk in lm.blocks:
        for lin in (blk.self_attn.qkv, blk.self_attn.out, blk.cross_attn.q, blk.cross_attn.out, blk.ff_in, blk.ff_out):
            n += lin.in_features * lin.out_features
    heads = sum(h.weight.numel() for h in lm.heads) * (4 if precision == "int8" else per_weight)
    return n * per_weight + heads


# ----------------------------------------------------------------------------- models


def build_models(seed: int, device: torch.device, folder: Path):
    """A random transformers MusicGen with musicgen-small's decoder (tiny T5 and EnCodec) and the
    stage model with the same weights, in the STAGE layout."""
    from transformers import AutoTokenizer, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    import stage
    from stage.model.lm import StageLM
    from stage.model.sources import TINY_TOKENIZER
    from stage.model.stage_model import StageModel
    from stage.text import tiny_t5_config
    from stage.tokens.codec import TINY_ENCODEC_CONFIG, encodec_config

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    config = MusicgenConfig(
        text_encoder=tiny_t5_config(len(tokenizer), 32).to_dict(),
        audio_encoder=encodec_config(**TINY_ENCODEC_CONFIG).to_dict(),
        decoder=MusicgenDecoderConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
                                      vocab_size=2048, num_codebooks=4, dropout=0.0).to_dict(),
    )
    torch.manual_seed(seed)
    hf = MusicgenForConditionalGeneration(config).eval()
    hf.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    base = stage.load_model(folder)  # the real HF -> stage conversion path (musicgen layout)
    lm_config = dataclasses.replace(base.config.lm, layout="stage")
    with torch.device("meta"):
        lm = StageLM(lm_config)
    lm.load_state_dict(base.lm.state_dict(), assign=True)
    lm.init_special_rows(context=False)  # STAGE's zero pad row (§2.3); the context row is random
    model = StageModel(base.config.replace(lm=lm_config), lm.eval(), base.codec, base.text).eval()
    return hf.to(device), tokenizer, model.to(device)


# ----------------------------------------------------------------------------- runs


def run_transformers(hf, tokenizer, audio: np.ndarray, frames: int, variations: int, device) -> dict:
    """transformers' generate with an audio prompt; per-step intervals from decoder pre-hooks."""
    inputs = tokenizer([PROMPT] * variations, return_tensors="pt").to(device)
    values = torch.from_numpy(audio)[None, None].expand(variations, 1, -1).to(device)
    starts, prefill = [], []

    def pre(module, args, kwargs):
        sync(device)
        starts.append(time.perf_counter())

    def post(module, args, kwargs, out):
        if len(starts) == 1:
            sync(device)
            prefill.append(time.perf_counter() - starts[0])

    h1 = hf.decoder.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = hf.decoder.register_forward_hook(post, with_kwargs=True)
    try:
        with RssSampler() as rss, torch.no_grad():
            t = time.perf_counter()
            hf.generate(**inputs, input_values=values, do_sample=True, guidance_scale=3.0, top_k=250,
                        max_new_tokens=frames)
            sync(device)
            total = time.perf_counter() - t
    finally:
        h1.remove()
        h2.remove()
    steps = np.diff(starts)[1:]  # [0] is prefill + its sampling
    return dict(prefill=prefill[0], step_ms=1000 * statistics.median(steps), steps=len(steps) + 1, total=total,
                rss=rss.peak, rss_added=rss.peak - rss.before)


def run_stage(model, audio: np.ndarray, seconds: float, variations: int, precision: str, cuda_graphs: bool,
              compile: bool = False) -> dict:
    import stage

    stamps = []
    options = stage.GenerationOptions(guidance=3.0, top_k=250, temperature=1.0, seed=0, prompt=PROMPT, seconds=seconds,
                                      variations=variations, precision=precision, cuda_graphs=cuda_graphs,
                                      compile=compile)
    with RssSampler() as rss:
        t = time.perf_counter()
        result = stage.generate_stems(model, audio, model.sample_rate, options,
                                      progress=lambda i, n: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t
    steps = np.diff(stamps)
    return dict(prefill=result.timings["prefill"], step_ms=1000 * statistics.median(steps), steps=len(stamps),
                total=total, rss=rss.peak, rss_added=rss.peak - rss.before, x_real_time=result.timings["x_real_time"])


def int8_deviation(model) -> tuple[float, float]:
    """(max, rms) of |logits_int8 - logits_fp32| / std(logits_fp32) on a random STAGE sequence."""
    from stage.generate.pipeline import cached_lm
    from stage.generate.quantize import logit_deviation
    from stage.tokens.layout import build_generation_layout

    g = torch.Generator().manual_seed(0)
    c = model.config.lm
    layout = build_generation_layout(32, c.delays, context=torch.randint(0, 2048, (1, 4, 32), generator=g),
                                     prompt=torch.randint(0, 2048, (1, 4, 32), generator=g))
    text = model.text([PROMPT])
    with torch.no_grad():
        ref = model.lm(layout.codes, text, layout.attended, layout.positions)
        got = cached_lm(model, "int8")(layout.codes, text, layout.attended, layout.positions)
    return logit_deviation(ref, got), logit_deviation(ref, got, rms=True)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n\n")[-1:]))
    ap.add_argument("--seconds", type=float, default=10.0, help="stem seconds (default 10)")
    ap.add_argument("--context-seconds", type=float, default=10.0, help="context / audio prompt seconds (default 10)")
    ap.add_argument("--variations", type=str, default="1", help="comma list of variation counts, e.g. 1,4")
    ap.add_argument("--precisions", type=str, default=None,
                    help="stage precisions (default: fp32,int8 on CPU; bf16,fp32 on CUDA)")
    ap.add_argument("--compile", action="store_true",
                    help="CPU: also time the torch.compile'd static fp32 step (compiled in a warm-up call, whose "
                         "time is printed; int8's quantised linears do not compile)")
    ap.add_argument("--skip-transformers", action="store_true", help="only the stage rows")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    from stage.generate.params import GenerationOptions
    from stage.generate.pipeline import cached_lm, generate_stems
    from stage.generate.quantize import INT8_LOGIT_RMS_TOLERANCE, INT8_LOGIT_TOLERANCE

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precisions = (args.precisions or ("bf16,fp32" if device.type == "cuda" else "fp32,int8")).split(",")
    variations = [int(v) for v in args.variations.split(",")]
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    read_bw, bandwidth = measure_bandwidth(device)
    print(f"measured bandwidth: copy {bandwidth / 1e9:.1f} GB/s (the roofline below), read-only {read_bw / 1e9:.1f} GB/s")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        hf, tokenizer, model = build_models(args.seed, device, Path(tmp))
        print(f"built models in {time.perf_counter() - t:.1f} s (decoder {model.lm.num_parameters() / 1e6:.1f} M parameters)")

    rng = np.random.default_rng(args.seed)
    audio = (0.1 * rng.standard_normal(int(args.context_seconds * model.sample_rate))).astype(np.float32)
    frames = int(round(args.seconds * model.frame_rate))
    rows = []

    def record(engine: str, precision: str, V: int, r: dict, weight_bytes: int, base: dict | None) -> dict:
        rows.append(dict(engine=engine, precision=precision, variations=V, **r,
                         roofline_ms=1000 * weight_bytes / bandwidth, read_roofline_ms=1000 * weight_bytes / read_bw))
        _print_row(rows[-1], base)
        return r

    # Warm-up (one-time allocations, kernel selection) and int8 preparation outside the timings.
    with torch.no_grad():
        if not args.skip_transformers:
            hf.generate(**tokenizer([PROMPT], return_tensors="pt").to(device), do_sample=True, guidance_scale=3.0,
                        top_k=250, max_new_tokens=4)
    generate_stems(model, options=GenerationOptions(prompt=PROMPT, seconds=0.1, seed=0))
    if "int8" in precisions:
        t = time.perf_counter()
        cached_lm(model, "int8")
        seconds = time.perf_counter() - t
        worst, rms = int8_deviation(model)
        print(f"int8 quantisation of the decoder linears: {seconds:.1f} s; logit deviation vs fp32: max {worst:.3f} std, "
              f"rms {rms:.3f} std (documented tolerances {INT8_LOGIT_TOLERANCE}, {INT8_LOGIT_RMS_TOLERANCE})")

    for V in variations:
        base = None
        if not args.skip_transformers:
            base = record("transformers", "fp32", V, run_transformers(hf, tokenizer, audio, frames, V, device),
                          step_weight_bytes(model.lm, "fp32"), None)
        for precision in precisions:
            graphs = device.type == "cuda" and precision != "fp32"
            r = run_stage(model, audio, args.seconds, V, precision, graphs)
            record("stage" + (" +graphs" if graphs else ""), precision, V, r,
                   step_weight_bytes(cached_lm(model, precision), precision), base)
        if args.compile and device.type == "cpu" and "fp32" in precisions:
            t = time.perf_counter()
            run_stage(model, audio, args.seconds, V, "fp32", False, compile=True)  # compiles the step
            print(f"(compile warm-up, fp32: {time.perf_counter() - t:.1f} s)", flush=True)
            record("stage +compile", "fp32", V, run_stage(model, audio, args.seconds, V, "fp32", False, compile=True),
                   step_weight_bytes(model.lm, "fp32"), base)
    if args.json:
        args.json.write_text(json.dumps(dict(copy_bandwidth=bandwidth, read_bandwidth=read_bw, device=str(device),
                                             threads=torch.get_num_threads(), rows=rows), indent=2))
    return 0


def _print_row(r: dict, base: dict | None) -> None:
    line = (f"{r['engine']:>13} {r['precision']:>5} V={r['variations']}  prefill {r['prefill']:7.2f} s  "
            f"step {r['step_ms']:7.1f} ms ({r['step_ms'] / r['roofline_ms']:.2f}x roofline {r['roofline_ms']:.0f} ms, "
            f"{r['step_ms'] / r['read_roofline_ms']:.2f}x read roofline {r['read_roofline_ms']:.0f} ms)  "
            f"total {r['total']:7.1f} s  RSS peak {r['rss'] / 2**30:.2f} GiB (+{r['rss_added'] / 2**20:.0f} MiB in run)")
    if base is not None:
        line += (f"  | vs transformers: end-to-end {base['total'] / r['total']:.2f}x faster, "
                 f"step {base['step_ms'] / r['step_ms']:.2f}x, prefill {base['prefill'] / r['prefill']:.1f}x")
    print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
