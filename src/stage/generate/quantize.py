"""Precision paths for generation: fp32 (exact), bf16 / fp16 (GPU) and int8 (CPU).

- "fp32": the model's own weights; the cached decoder equals the reference generator token for
  token (tests/test_generator.py).
- "bf16" / "fp16": a half-precision copy of the LM; KV cache and activations in that dtype,
  sampling in fp32. Meant for GPUs (tests/test_generator_gpu.py checks the logit tolerance);
  bf16 also runs on a CPU, fp16 is refused there (slow or unsupported CPU kernels).
- "int8": a copy of the LM whose decoder linears (every `nn.Linear` inside the blocks) run
  torch's dynamic int8 kernels (fbgemm): int8 weights with one scale per tensor, activations
  quantised on the fly per call. The output heads and embeddings stay fp32. CPU only.
  Weights read per decode step drop about 4x, which is what a memory-bound decode step pays for.

Tolerance of the int8 path, in units of the fp32 logits' standard deviation (`logit_deviation`):
the largest absolute logit difference to fp32 stays below `INT8_LOGIT_TOLERANCE` (0.35) and its
root mean square below `INT8_LOGIT_RMS_TOLERANCE` (0.08). Measured on random weights: musicgen-small
shapes max 0.21-0.23, rms 0.04-0.05 (benchmarks/generate.py prints it; a slow test asserts it);
the tiny model max 0.008 (default-tier test). The error grows with depth and width. For scale: at
temperature 1 a logit shift of d multiplies that code's probability by at most e^d, so the typical
(rms) shift changes probabilities by about 5 %.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from stage.errors import ConfigError
from stage.generate.params import PRECISIONS
from stage.model.lm import StageLM

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}

# max |logits_int8 - logits_fp32| / std(logits_fp32), and the rms; see the module docstring.
INT8_LOGIT_TOLERANCE = 0.35
INT8_LOGIT_RMS_TOLERANCE = 0.08
# The max measure for half precision (asserted on a GPU by tests/test_generator_gpu.py, bf16 also
# on the CPU by tests/test_generator.py). Measured with CPU kernels on random weights: bf16 max
# 0.032 (tiny) / 0.079 (musicgen-small shapes), rms 0.006 / 0.015; fp16 max 0.0044 / 0.0099.
BF16_LOGIT_TOLERANCE = 0.15
FP16_LOGIT_TOLERANCE = 0.02


def check_precision(precision: str, device: torch.device | str) -> str:
    """Validate a precision name for a device; returns it. Raises ConfigError with the reason."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ConfigError("precision 'int8' is the CPU path (dynamic int8 kernels); use 'bf16' on a GPU")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision 'fp16' needs a GPU; on a CPU use 'fp32', 'bf16' or 'int8'")
    return precision


def prepare_lm(lm: StageLM, precision: str = "fp32") -> StageLM:
    """The LM to generate with: `lm` itself when it already has the precision (no copy), else a
    converted copy in eval mode. The caller's model is never modified."""
    device = lm.norm.weight.device
    check_precision(precision, device)
    if precision == "int8":
        return lm if is_quantized(lm) else quantize_int8(lm)
    if is_quantized(lm):
        raise ConfigError(f"this model is int8-quantised; it cannot run in {precision}")
    dtype = DTYPES[precision]
    return lm if lm.norm.weight.dtype == dtype else copy.deepcopy(lm).to(dtype).eval()


def quantize_int8(lm: StageLM) -> StageLM:
    """A copy of `lm` with every linear inside the decoder blocks replaced by torch's dynamic int8
    linear (weights int8, activations quantised per call). Heads and embeddings stay fp32."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as err:  # removed from a future torch
        raise ConfigError(f"precision 'int8' needs torch's dynamic quantisation, unavailable here ({err})") from None
    if lm.norm.weight.device.type != "cpu":
        raise ConfigError("precision 'int8' is the CPU path; the model is on " + str(lm.norm.weight.device))
    out = copy.deepcopy(lm).float().eval()
    with warnings.catch_warnings():
        # torch marks its quantised tensor types as deprecated; the kernels are the fast CPU path.
        warnings.simplefilter("ignore")
        for block in out.blocks:
            quantize_dynamic(block, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return out


def is_quantized_module(module: nn.Module) -> bool:
    """True when `module` itself is one of torch's quantised modules (e.g. a dynamic int8 linear)."""
    return type(module).__module__.startswith("torch.ao.nn.quantized")


def is_quantized(lm: nn.Module) -> bool:
    """True when some submodule is one of torch's quantised modules."""
    return any(is_quantized_module(m) for m in lm.modules())


def logit_deviation(reference: Tensor, other: Tensor, rms: bool = False) -> float:
    """max |other - reference| / std(reference) (or the rms of the difference with rms=True):
    the tolerance measures of this module."""
    reference, other = reference.float(), other.float()
    diff = other - reference
    return float((diff.pow(2).mean().sqrt() if rms else diff.abs().max()) / reference.std())
