"""Benchmark: the Generator's decode paths on a lent GPU (issue 11, item 5), in one time-boxed run.

The job: musicgen-small's decoder shapes (1024 x 24 layers, 16 heads, FFN 4096, 4 x 2048 codes,
random weights, as benchmarks/generate.py builds them) in bf16, the STAGE layout with a 10 s
context and a 10 s stem, joint CFG 3, top-k 250, sampling. Rows, each the median of --repeats
timed calls after one warm-up call (which also captures the CUDA graph):

    eager    Generator(...)                   per-branch key ranges, one kernel launch per op
    static   Generator(..., static=True)      fixed shapes over the whole cache, not captured
    graphs   Generator(..., cuda_graphs=True) the static step captured once and replayed
    compile  Generator(..., compile=True, cuda_graphs=True)   only with --compile (slow to build)
    pipeline generate_stems(..., cuda_graphs=True): text, codec, long-form loop included (the
             tiny T5 and tiny EnCodec: milliseconds, not the real ones); needs transformers

for batch 1 (one take; 2 rows with CFG) and for --variations (default 8 takes in one batch).

Printed per row: prefill s, ms per sampling step (decode forward + guidance + sampling; the decode
seconds over the steps, measured with a device sync at both ends), wall seconds (the
Generator's prefill + decode; the whole generate_stems call for the pipeline rows), times real
time (seconds of stem per wall second; x takes in the audio s/s column), and the decode step's
achieved bandwidth: weight bytes read per step (every decoder linear except the cross-attention
K/V, plus the heads; benchmarks/generate.py's `step_weight_bytes`) / step time, as a share of the copy bandwidth measured in the same run
((read + write) bytes / s of a device-to-device copy) and of the nominal HBM peak (--peak-gbs,
H200 HBM3e 4800 GB/s). "+KV" adds the KV-cache bytes the path reads per step (eager: the valid
key range of each branch; static / graphs: the whole cache). Targets printed against: >= 30x real
time at batch 1 with CFG, decode step >= 50 % of the HBM roofline.

    benchmarks/gpu.sh                                   # on the GPU box: the run the issue asks for
    python benchmarks/gpu.py --device cuda --budget 400 --out gpu.json
    python benchmarks/gpu.py --device cpu --smoke       # tiny shapes, seconds: proves the code path
The run stops starting new rows once --budget seconds have passed (what is done is kept: the
JSON is rewritten after every row), and lowers the repeats to 1 when time is short.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

PROMPT = "rock drums with a heavy kick and crashing cymbals"
H200_PEAK_GBS = 4800.0
TARGET_X_REAL_TIME = 30.0
TARGET_ROOFLINE_SHARE = 0.5


# ----------------------------------------------------------------------------- environment


def describe_environment(device: torch.device) -> dict:
    """What this run uses: torch, CUDA, the device, and which stage is imported."""
    import stage

    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "device": str(device), "stage": stage.__file__,
           "host": platform.node(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   multiprocessors=p.multi_processor_count)
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth(device: torch.device, mib: int, passes: int) -> dict:
    """Best-of-`passes` device bandwidth in GB/s: `copy` = (read + write) bytes of copying a
    `mib` MiB buffer into another, over its time (the convention of GPU copy benchmarks, the one
    the HBM peak is quoted in); `read` = bytes of summing a 2 x `mib` MiB buffer over its time."""
    n = mib * 2**20 // 2  # bf16 elements
    src = torch.ones(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    big = torch.ones(2 * n, dtype=torch.bfloat16, device=device)
    copy = read = float("inf")
    inner = 5  # several kernels per timing: a 1 GiB copy takes well under a millisecond on HBM
    for _ in range(passes):
        sync(device)
        t = time.perf_counter()
        for _ in range(inner):
            dst.copy_(src)
        sync(device)
        copy = min(copy, (time.perf_counter() - t) / inner)
        t = time.perf_counter()
        for _ in range(inner):
            big.sum(dtype=torch.float32)
        sync(device)
        read = min(read, (time.perf_counter() - t) / inner)
    nbytes = n * 2
    del src, dst, big
    return {"copy_gbs": 2 * nbytes / copy / 1e9, "read_gbs": 2 * nbytes / read / 1e9, "buffer_mib": mib}


# ----------------------------------------------------------------------------- model and job


def lm_config(smoke: bool):
    """musicgen-small's decoder in the STAGE layout, or the tiny preset's for --smoke."""
    import dataclasses

    from stage.model.config import LMConfig, preset

    if smoke:
        return preset("tiny").lm
    return dataclasses.replace(LMConfig(dim=1024, num_layers=24, num_heads=16, ffn_dim=4096), layout="stage")


def build_lm(config, device: torch.device, precision: str, seed: int):
    """A random StageLM built directly on the device, in eval mode, converted to `precision`."""
    from stage.generate.quantize import prepare_lm
    from stage.model.lm import StageLM

    torch.manual_seed(seed)
    with torch.device(device):
        lm = StageLM(config)
    lm.init_special_rows(context=False)  # STAGE's zero pad row (§2.3); the context row stays random
    return prepare_lm(lm.eval(), precision)


class Job:
    """The inputs every row shares: a random text condition (L tokens, already projected), a
    random context of Tc frames, the sampling parameters and the step count."""

    def __init__(self, lm, seconds: float, context_seconds: float, frame_rate: int, device: torch.device, seed: int):
        from stage.generate.generator import steps_needed
        from stage.generate.params import GenerationParams
        from stage.text import TextCondition
        from stage.tokens.layout import build_generation_layout

        c = lm.config
        g = torch.Generator().manual_seed(seed)
        self.frames = int(round(seconds * frame_rate))
        self.context_frames = int(round(context_seconds * frame_rate))
        self.seconds = self.frames / frame_rate
        L = 16
        states = torch.randn(1, L, c.dim, generator=g) * 0.1
        self.text = TextCondition(states.to(device, lm.norm.weight.dtype), torch.ones(1, L, dtype=torch.bool, device=device))
        self.context = torch.randint(0, c.codebook_size, (1, c.num_codebooks, self.context_frames), generator=g).to(device)
        self.params = GenerationParams(guidance=3.0, top_k=250, temperature=1.0, seed=seed)
        self.max_steps = steps_needed(c, self.frames, self.context_frames)
        layout = build_generation_layout(self.frames, c.delays, context=self.context[:1].cpu(), layout=c.layout,
                                         pad_id=c.pad_id, context_id=c.context_id)
        self.start = layout.start
        self.device = device
        self.seed = seed

    def kv_bytes_per_step(self, lm, variations: int, static: bool) -> float:
        """KV-cache bytes one decode step reads, averaged over the steps: all rows x the whole
        cache on the static path; on the eager path the conditional rows read [0, s] (context
        first) and the unconditional rows [start - 1, s] (their context is masked, §3.1)."""
        c = lm.config
        per_key = c.num_layers * 2 * c.dim * lm.norm.weight.element_size()  # K and V, every layer
        rows = 2 * variations  # joint CFG
        if static:
            return per_key * rows * self.max_steps
        mean_s = (self.start + self.max_steps - 2) / 2
        return per_key * variations * ((mean_s + 1) + (mean_s + 2 - self.start))


# ----------------------------------------------------------------------------- runs


def run_generator(lm, job: Job, mode: str, variations: int, repeats: int, precision: str) -> dict:
    """Warm-up call, then `repeats` timed calls of one Generator; medians."""
    from stage.generate.generator import Generator
    from stage.generate.sampling import make_generators

    kw = {"eager": {}, "static": {"static": True}, "graphs": {"cuda_graphs": True},
          "compile": {"compile": True, "cuda_graphs": job.device.type == "cuda"}}[mode]
    t = time.perf_counter()
    gen = Generator(lm, job.max_steps, batch=variations, branches=job.params.branches, precision=precision, **kw)

    def call(frames: int):
        gens = make_generators([job.seed + v for v in range(variations)], job.device)
        return gen.generate(job.text, frames, job.params, context=job.context, variations=variations, generators=gens)

    call(job.frames if mode == "compile" else min(job.frames, 8))  # kernels, capture / compile
    warmup = time.perf_counter() - t
    outs = [call(job.frames) for _ in range(repeats)]
    prefill = statistics.median(o.prefill_seconds for o in outs)
    decode = statistics.median(o.decode_seconds for o in outs)
    samplings = outs[0].steps + 1
    lm_seconds = statistics.median(o.prefill_seconds + o.decode_seconds for o in outs)
    return dict(prefill_s=prefill, decode_s=decode, lm_s=lm_seconds, step_ms=1000 * decode / samplings,
                samplings=samplings, warmup_s=warmup, repeats=repeats,
                x_real_time=job.seconds / lm_seconds, audio_per_s=variations * job.seconds / lm_seconds)


def run_pipeline(lm, job: Job, variations: int, repeats: int, precision: str, graphs: bool) -> dict:
    """generate_stems end to end over the tiny T5 and EnCodec with this LM (needs transformers)."""
    import numpy as np

    from stage.generate.params import GenerationOptions
    from stage.generate.pipeline import generate_stems
    from stage.model.checkpoints import build_tiny
    from stage.model.config import preset
    from stage.model.stage_model import StageModel
    from stage.text import TextConditioner

    tiny = build_tiny()
    text = TextConditioner(tiny.text.encoder, tiny.text.tokenizer, lm.config.dim)
    config = preset("tiny").replace(lm=lm.config, name="musicgen-small-shapes")
    model = StageModel(config, lm, tiny.codec, text).to(job.device).eval()
    rng = np.random.default_rng(job.seed)
    mix = (0.1 * rng.standard_normal(int(job.context_frames / model.frame_rate * model.sample_rate))).astype(np.float32)
    options = GenerationOptions(guidance=3.0, top_k=250, temperature=1.0, seed=job.seed, prompt=PROMPT,
                                seconds=job.seconds, variations=variations, precision=precision, cuda_graphs=graphs)
    generate_stems(model, mix, model.sample_rate, options)  # warm-up (capture)
    results = [generate_stems(model, mix, model.sample_rate, options) for _ in range(repeats)]
    total = statistics.median(r.timings["total"] for r in results)
    lm_s = statistics.median(r.timings["lm"] for r in results)
    return dict(prefill_s=statistics.median(r.timings["prefill"] for r in results), lm_s=lm_s, total_s=total,
                step_ms=statistics.median(r.timings["step_ms"] for r in results), repeats=repeats,
                x_real_time=job.seconds / total, audio_per_s=variations * job.seconds / total)


# ----------------------------------------------------------------------------- report


def add_roofline(row: dict, weight_bytes: int, kv_bytes: float | None, copy_gbs: float, peak_gbs: float) -> dict:
    step_s = row["step_ms"] / 1000
    gbs = weight_bytes / step_s / 1e9
    row.update(weight_gb=weight_bytes / 1e9, weight_gbs=gbs, share_of_copy=gbs / copy_gbs, share_of_peak=gbs / peak_gbs)
    if kv_bytes is not None:
        row.update(kv_gb=kv_bytes / 1e9, with_kv_gbs=(weight_bytes + kv_bytes) / step_s / 1e9)
    return row


HEADER = (f"{'mode':>8} {'V':>2} {'prefill s':>9} {'step ms':>8} {'wall s':>7} {'x real':>7} {'audio s/s':>9} "
          f"{'weights GB/s':>12} {'of copy':>7} {'of peak':>7} {'+KV GB/s':>8}")


def format_row(r: dict) -> str:
    if "skipped" in r:
        return f"{r['mode']:>8} {r['variations']:>2} skipped: {r['skipped']}"
    kv = f"{r['with_kv_gbs']:8.1f}" if "with_kv_gbs" in r else f"{'-':>8}"
    lm = r.get("total_s", r["lm_s"])
    return (f"{r['mode']:>8} {r['variations']:>2} {r['prefill_s']:9.3f} {r['step_ms']:8.2f} {lm:7.2f} "
            f"{r['x_real_time']:6.1f}x {r['audio_per_s']:9.1f} {r['weight_gbs']:12.1f} {r['share_of_copy']:6.0%} "
            f"{r['share_of_peak']:6.0%} {kv}")


def verdicts(rows: list[dict], copy_gbs: float, peak_gbs: float) -> list[str]:
    """The targets against the best measured row (V = 1, CFG)."""
    done = [r for r in rows if "skipped" not in r and r["mode"] != "pipeline"]
    single = [r for r in done if r["variations"] == 1]
    lines = []
    if single:
        best = max(single, key=lambda r: r["x_real_time"])
        ok = "MET" if best["x_real_time"] >= TARGET_X_REAL_TIME else "NOT MET"
        lines.append(f"batch 1 with CFG: {best['x_real_time']:.1f}x real time ({best['mode']}, LM only) against >= "
                     f"{TARGET_X_REAL_TIME:g}x: {ok}")
        fast = max(single, key=lambda r: r["weight_gbs"])
        for name, bw in (("measured copy", copy_gbs), ("nominal peak", peak_gbs)):
            share = fast["weight_gbs"] / bw
            ok = "MET" if share >= TARGET_ROOFLINE_SHARE else "NOT MET"
            lines.append(f"decode step ({fast['mode']}, V=1): {fast['weight_gbs']:.3g} GB/s of weights = {share:.0%} of the "
                         f"{name} bandwidth {bw:.4g} GB/s, against >= {TARGET_ROOFLINE_SHARE:.0%}: {ok}")
    for mode in ("graphs", "eager", "static", "compile"):
        one = next((r for r in done if r["mode"] == mode and r["variations"] == 1), None)
        many = next((r for r in done if r["mode"] == mode and r["variations"] > 1), None)
        if one and many:
            lines.append(f"{mode}: {many['variations']} takes in one batch give {many['audio_per_s'] / one['audio_per_s']:.2f}x "
                         f"the audio per second of batch 1 ({many['audio_per_s']:.1f} vs {one['audio_per_s']:.1f} s/s; "
                         f"step {many['step_ms'] / one['step_ms']:.2f}x as long)")
    return lines


def write_json(path: Path | None, report: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n\n")[-2:]))
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 1 s + 1 s, one repeat: a code-path check in seconds")
    ap.add_argument("--precision", default="bf16", help="bf16 (default), fp16 or fp32")
    ap.add_argument("--seconds", type=float, default=None, help="stem seconds (default 10; 1 with --smoke)")
    ap.add_argument("--context-seconds", type=float, default=None, help="context seconds (default 10; 1 with --smoke)")
    ap.add_argument("--variations", type=int, default=8, help="takes in one batch for the throughput rows (default 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 3; 1 with --smoke)")
    ap.add_argument("--modes", default="graphs,eager,static", help="comma list of eager, static, graphs, compile, pipeline "
                    "(default graphs,eager,static; pipeline is added when transformers is importable)")
    ap.add_argument("--compile", action="store_true", help="also the torch.compile row (minutes of compiling)")
    ap.add_argument("--budget", type=float, default=400.0, help="seconds after which no new row starts (default 400)")
    ap.add_argument("--peak-gbs", type=float, default=H200_PEAK_GBS, help=f"nominal HBM peak, GB/s (default {H200_PEAK_GBS:g}, H200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the report as JSON here (rewritten after every row)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: torch {torch.__version__} sees no CUDA device "
              f"(torch.version.cuda={torch.version.cuda}); use --device cpu --smoke", file=sys.stderr)
        return 2
    seconds = args.seconds or (1.0 if args.smoke else 10.0)
    context_seconds = args.context_seconds or (1.0 if args.smoke else 10.0)
    repeats = args.repeats or (1 if args.smoke else 3)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    env = describe_environment(device)
    if env["transformers"] is not None and "pipeline" not in modes:
        modes.append("pipeline")
    if args.compile and "compile" not in modes:
        modes.append("compile")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # (fp32 rows only; bf16 is unaffected)

    bw = measure_bandwidth(device, 16 if args.smoke else 1024, 3 if args.smoke else 10)
    print(f"measured bandwidth: copy {bw['copy_gbs']:.0f} GB/s ((read + write) / s), read {bw['read_gbs']:.0f} GB/s; "
          f"nominal peak {args.peak_gbs:g} GB/s", flush=True)

    from generate import step_weight_bytes

    from stage.generate.quantize import check_precision

    check_precision(args.precision, device)
    config = lm_config(args.smoke)
    t = time.perf_counter()
    lm = build_lm(config, device, args.precision, args.seed)
    job = Job(lm, seconds, context_seconds, 50, device, args.seed)
    weights = step_weight_bytes(lm, args.precision)
    print(f"decoder {lm.num_parameters() / 1e6:.1f} M parameters ({config.dim} x {config.num_layers}) in {args.precision}, "
          f"built in {time.perf_counter() - t:.1f} s; {weights / 1e9:.3f} GB of weights per decode step; "
          f"job: {context_seconds:g} s context + {job.seconds:g} s stem, {job.max_steps} "
          f"steps, CFG 3, top-k 250", flush=True)

    report = dict(benchmark="benchmarks/gpu.py", argv=sys.argv[1:] if argv is None else list(argv), environment=env,
                  bandwidth=bw, peak_gbs=args.peak_gbs, precision=args.precision, smoke=args.smoke,
                  decoder=dict(dim=config.dim, layers=config.num_layers, heads=config.num_heads, ffn=config.ffn_dim,
                               parameters=lm.num_parameters(), step_weight_bytes=weights),
                  job=dict(seconds=job.seconds, context_seconds=context_seconds, steps=job.max_steps, guidance=3.0, top_k=250),
                  rows=[], verdicts=[])
    print(HEADER, flush=True)
    # compile last: it is the slowest row to build and the least needed
    plan = [(m, v) for v in (1, args.variations) for m in modes if m != "compile"]
    plan += [("compile", v) for v in (1, args.variations) if "compile" in modes]
    for mode, V in plan:
        row: dict = dict(mode=mode, variations=V)
        elapsed = time.perf_counter() - t0
        if elapsed > args.budget:
            row["skipped"] = f"time budget ({elapsed:.0f} s > {args.budget:g} s)"
        elif mode in ("graphs",) and device.type != "cuda":
            row["skipped"] = "CUDA graphs need a CUDA device"
        elif mode == "compile" and args.smoke and device.type != "cuda":
            row["skipped"] = "compile is not smoke-tested on the CPU"
        else:
            reps = repeats if elapsed < 0.7 * args.budget else 1
            try:
                if mode == "pipeline":
                    row.update(run_pipeline(lm, job, V, reps, args.precision, graphs=device.type == "cuda"))
                    kv = None
                else:
                    row.update(run_generator(lm, job, mode, V, reps, args.precision))
                    kv = job.kv_bytes_per_step(lm, V, static=mode != "eager")
                add_roofline(row, weights, kv, bw["copy_gbs"], args.peak_gbs)
            except (RuntimeError, ImportError, OSError) as err:  # e.g. out of memory, a missing kernel
                row["skipped"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        report["rows"].append(row)
        print(format_row(row), flush=True)
        write_json(args.out, report)
    report["verdicts"] = verdicts(report["rows"], bw["copy_gbs"], args.peak_gbs)
    report["wall_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        report["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print("\n".join(["", "against the targets:"] + ["  " + v for v in report["verdicts"]]))
    if args.smoke:
        print("  (smoke run: tiny shapes, the numbers say nothing about the targets)")
    print(f"done in {report['wall_s']:.0f} s" + (f"; JSON: {args.out}" if args.out else ""), flush=True)
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
