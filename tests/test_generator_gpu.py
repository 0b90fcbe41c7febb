"""GPU checks of the Generator: CUDA graphs and torch.compile equal eager decoding, bf16 / fp16
logits within their documented tolerances, and the public bf16 + graphs path. They run where a
CUDA device is lent and skip elsewhere (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stage
from stage.generate.generator import Generator, steps_needed
from stage.generate.params import GenerationOptions, GenerationParams
from stage.generate.pipeline import generate_stems
from stage.generate.quantize import BF16_LOGIT_TOLERANCE, FP16_LOGIT_TOLERANCE, logit_deviation, prepare_lm
from stage.generate.sampling import make_generators
from stage.text import TextCondition
from stage.tokens.layout import build_generation_layout

pytestmark = pytest.mark.gpu
K = 4


@pytest.fixture(scope="module")
def cuda_model():
    torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 comparisons
    torch.backends.cudnn.allow_tf32 = False
    return stage.load_model("tiny").to("cuda").eval()


def _codes(shape, seed):
    return torch.randint(0, 2048, shape, generator=torch.Generator().manual_seed(seed)).cuda()


def _generate(model, frames=40, V=2, seed=0, **kw):
    text = model.text(["rock drums"])
    context = _codes((1, K, 25), 1)
    gen = Generator(model, steps_needed(model.config.lm, frames, 25), batch=V, **kw)
    outs = []
    for _ in range(2):  # twice: the second call reuses the captured graph / compiled step
        out = gen.generate(text, frames, GenerationParams(seed=seed), context=context, variations=V,
                           generators=make_generators([seed + v for v in range(V)], "cuda"))
        outs.append(out.codes)
    return outs


def test_cuda_graphs_equal_eager(cuda_model):
    eager = _generate(cuda_model)
    graphs = _generate(cuda_model, cuda_graphs=True)
    assert torch.equal(eager[0], graphs[0]) and torch.equal(eager[1], graphs[1])


def test_static_path_equals_eager_on_gpu(cuda_model):
    eager = _generate(cuda_model)
    static = _generate(cuda_model, static=True)
    assert torch.equal(eager[0], static[0])


def test_compiled_equals_eager(cuda_model):
    eager = _generate(cuda_model, frames=20)
    compiled = _generate(cuda_model, frames=20, compile=True)
    assert torch.equal(eager[0], compiled[0]) and torch.equal(eager[1], compiled[1])


@pytest.mark.parametrize("precision, tolerance", [("bf16", BF16_LOGIT_TOLERANCE), ("fp16", FP16_LOGIT_TOLERANCE)])
def test_half_precision_logits_within_tolerance(cuda_model, precision, tolerance):
    lm = cuda_model.lm
    half = prepare_lm(lm, precision)
    text = cuda_model.text(["rock drums"])
    layout = build_generation_layout(40, lm.config.delays, context=_codes((1, K, 30), 2), prompt=_codes((1, K, 40), 3))
    with torch.no_grad():
        ref = lm(layout.codes, text, layout.attended, layout.positions)
        got = half(layout.codes, TextCondition(text.states.to(half.norm.weight.dtype), text.mask),
                   layout.attended, layout.positions)
    assert logit_deviation(ref, got) <= tolerance


def test_bf16_cuda_graphs_public_generate(cuda_model):
    mix = np.random.default_rng(0).standard_normal((2, 44_100 * 3)).astype(np.float32) * 0.1
    options = GenerationOptions(prompt="rock", variations=2, precision="bf16", cuda_graphs=True, seed=1)
    result = generate_stems(cuda_model, mix, 44_100, options)
    assert result.stems.shape == (2, 2, 44_100 * 3) and np.isfinite(result.stems).all()
    again = generate_stems(cuda_model, mix, 44_100, options)
    assert torch.equal(result.codes, again.codes)  # seeded CUDA generators: reproducible
