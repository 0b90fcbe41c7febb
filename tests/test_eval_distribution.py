"""FAD and KAD against independent reference computations, and their statistical properties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from stage.errors import StageError
from stage.eval.distribution import (
    frechet_distance,
    kernel_audio_distance,
    median_pairwise_distance,
    mmd2_unbiased,
    pool_embeddings,
)


def scipy_fad(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook FAD: np.cov + scipy.linalg.sqrtm of the (non-symmetric) product."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def loop_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD^2 with an RBF kernel, written as the plain double sums."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def loop_median_distance(y: np.ndarray) -> float:
    return float(np.median([np.linalg.norm(y[i] - y[j]) for i in range(len(y)) for j in range(i + 1, len(y))]))


@pytest.mark.parametrize("seed, m, n, d", [(0, 200, 300, 8), (1, 150, 120, 32), (2, 500, 400, 16)])
def test_fad_matches_scipy_sqrtm(seed, m, n, d):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((m, d)) @ a + 0.3
    y = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    ours = frechet_distance(x, y)
    assert ours.value == pytest.approx(scipy_fad(x, y), abs=1e-6, rel=1e-9)
    assert ours.mean_term == pytest.approx(float(np.sum((x.mean(0) - y.mean(0)) ** 2)), abs=1e-12)


def test_fad_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 24))
    assert frechet_distance(x, x).value == pytest.approx(0.0, abs=1e-9)
    # A mean shift of 0.5 in every dimension adds exactly 24 * 0.25 to the mean term.
    shifted = frechet_distance(x + 0.5, x)
    assert shifted.mean_term == pytest.approx(24 * 0.25, rel=1e-9)
    assert shifted.cov_term == pytest.approx(0.0, abs=1e-9)


def test_fad_is_real_and_finite_with_singular_covariances():
    """Fewer rows than dimensions: scipy's sqrtm of the product is ill-posed; ours stays real
    and agrees with the closed form for commuting (here: diagonal) covariances."""
    rng = np.random.default_rng(4)
    d = 64
    x = rng.standard_normal((10, d))
    y = 2.0 * rng.standard_normal((12, d))
    ours = frechet_distance(x, y)
    assert np.isfinite(ours.value) and ours.value >= 0
    # A set against itself is 0 before any clamping (scipy's sqrtm leaves about -1e-6 here:
    # the square root amplifies round-off in the covariance's null space).
    self_distance = frechet_distance(x, x)
    assert abs(self_distance.mean_term + self_distance.cov_term) < 1e-10 * np.trace(np.cov(x, rowvar=False))
    # Rank-1 covariances along the same axis: FAD = (s1 - s2)^2 exactly (1-D Fréchet distance).
    e = np.zeros(d)
    e[0] = 1.0
    u = np.linspace(-1, 1, 21)[:, None] * e          # std s1 along e
    v = 3.0 * np.linspace(-1, 1, 21)[:, None] * e    # std s2 = 3 s1
    s1 = np.std(np.linspace(-1, 1, 21), ddof=1)
    assert frechet_distance(u, v).value == pytest.approx((s1 - 3 * s1) ** 2, rel=1e-9)


@pytest.mark.parametrize("seed, m, n, d", [(0, 30, 40, 4), (1, 25, 25, 16), (2, 50, 20, 8)])
def test_kad_matches_a_plain_loop(seed, m, n, d):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d)) + 0.2
    y = rng.standard_normal((n, d)) * 1.5
    sigma = loop_median_distance(y)
    result = kernel_audio_distance(x, y)
    assert result.bandwidth == pytest.approx(sigma, rel=1e-12)
    assert result.mmd2 == pytest.approx(loop_mmd2(x, y, sigma), abs=1e-6)
    assert result.value == pytest.approx(100 * loop_mmd2(x, y, sigma), abs=1e-6)
    assert result.scale == 100


def test_kad_blocks_agree_with_one_block(monkeypatch):
    import stage.eval.distribution as dist

    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((70, 6)), rng.standard_normal((90, 6)) + 0.1
    whole = mmd2_unbiased(x, y, 2.0)
    monkeypatch.setattr(dist, "BLOCK", 16)
    assert mmd2_unbiased(x, y, 2.0) == pytest.approx(whole, abs=1e-12)


def _draws(estimator, shift: float, repeats: int, m: int = 24, d: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([estimator(rng.standard_normal((m, d)) + shift, rng.standard_normal((m, d))) for _ in range(repeats)])


def _biased_mmd2(x, y, sigma):
    """The V-statistic (diagonal terms kept): positive in expectation even for equal laws."""
    def kmean(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2)).mean()

    return kmean(x, x) + kmean(y, y) - 2 * kmean(x, y)


def test_kad_is_unbiased_over_repeated_draws():
    """Mean over many pairs of sets from one distribution is 0 within 4 standard errors (the
    tolerance comes from the spread of the draws). The same test flags the biased V-statistic
    and a real shift, so it has the power to fail."""
    repeats = 400
    sigma = 2.0  # a fixed kernel: MMD^2_u is exactly unbiased for any fixed kernel
    same = _draws(lambda a, b: mmd2_unbiased(a, b, sigma), 0.0, repeats)
    stderr = same.std(ddof=1) / np.sqrt(repeats)
    assert abs(same.mean()) < 4 * stderr
    assert (same < 0).any()  # single unbiased estimates do go negative

    biased = _draws(lambda a, b: _biased_mmd2(a, b, sigma), 0.0, repeats)
    assert biased.mean() > 4 * biased.std(ddof=1) / np.sqrt(repeats)
    shifted = _draws(lambda a, b: mmd2_unbiased(a, b, sigma), 0.5, repeats)
    assert shifted.mean() > 4 * shifted.std(ddof=1) / np.sqrt(repeats)


def test_kad_with_the_reference_median_bandwidth_is_centred_too():
    """KAD's default bandwidth depends on the reference draw; its mean over equal-law draws
    stays within 4 standard errors of 0 at this sample size."""
    repeats = 300
    same = _draws(lambda a, b: kernel_audio_distance(a, b).value, 0.0, repeats, seed=1)
    assert abs(same.mean()) < 4 * same.std(ddof=1) / np.sqrt(repeats)


def test_median_pairwise_distance_and_subset():
    rng = np.random.default_rng(6)
    y = rng.standard_normal((40, 5))
    value, source = median_pairwise_distance(y)
    assert value == pytest.approx(loop_median_distance(y), rel=1e-12) and source == "reference median"
    sub, source = median_pairwise_distance(y, max_items=20)
    assert "subset of 20" in source and 0.5 * value < sub < 2 * value


def test_pooling():
    a, b = np.ones((3, 2)), np.zeros((1, 2))
    assert pool_embeddings([a, b], "frames").shape == (4, 2)
    np.testing.assert_array_equal(pool_embeddings([a, b], "mean"), [[1, 1], [0, 0]])
    with pytest.raises(StageError, match="unknown pooling"):
        pool_embeddings([a], "max")


def test_bad_inputs_are_one_line_errors():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 3))
    with pytest.raises(StageError, match="at least 2"):
        frechet_distance(x[:1], x)
    with pytest.raises(StageError, match="at least 2"):
        kernel_audio_distance(x, x[:1])
    with pytest.raises(StageError, match="dimensions differ"):
        kernel_audio_distance(x, rng.standard_normal((5, 4)))
    with pytest.raises(StageError, match="NaN"):
        frechet_distance(np.full((3, 3), np.nan), x)
    with pytest.raises(StageError, match="bandwidth"):
        kernel_audio_distance(x, np.zeros((4, 3)))  # identical reference rows: median distance 0
