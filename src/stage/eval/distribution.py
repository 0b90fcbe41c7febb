"""Distribution metrics between two sets of embeddings: FAD and KAD.

Inputs are float arrays `[M, D]` (generated) and `[N, D]` (reference): one row per embedding.
Which rows an audio file contributes is the embedder's and the caller's choice (see
`pool_embeddings`): by default every frame embedding of every file is a row, as in the original
FAD (Kilgour et al. 2019 pool all VGGish frames of a set into one Gaussian).

**FAD** (Fréchet Audio Distance; Kilgour et al. 2019, "Fréchet Audio Distance: A Reference-Free
Metric for Evaluating Music Enhancement Algorithms", after the FID of Heusel et al. 2017):
fit a Gaussian to each set and take the Fréchet (2-Wasserstein) distance between them,

    FAD = ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)).

The matrix square root is the fragile part: S_g S_r is not symmetric and is often singular (fewer
rows than dimensions), where `scipy.linalg.sqrtm` returns complex values or fails. We use
Tr((S_g S_r)^(1/2)) = Tr((A S_r A)^(1/2)) with A = S_g^(1/2): both square roots are of symmetric
positive semi-definite matrices, computed by `eigh` in float64 with round-off eigenvalues
(negative, or below max * D * eps) set to 0, so the result is real and stable by construction,
and a set's distance to itself is 0 to round-off even when its covariance is singular.

**KAD** (Kernel Audio Distance; Chung et al. 2025, "KAD: No More FAD! An Effective and Efficient
Evaluation Metric for Audio Generation"): the unbiased estimate of the squared maximum mean
discrepancy (Gretton et al. 2012, MMD^2_u) with a Gaussian RBF kernel
k(a, b) = exp(-||a - b||^2 / (2 sigma^2)), the bandwidth sigma being the median pairwise
Euclidean distance within the reference set, reported multiplied by 100 (the paper's and its
toolkit's scale convention):

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(g_i, g_j) + 1/(n(n-1)) sum_{i!=j} k(r_i, r_j)
              - 2/(mn) sum_{i,j} k(g_i, r_j).

Being unbiased, it averages to 0 over sets drawn from one distribution (single values can be
slightly negative), it needs no distributional assumption, and it is computed here in blocks so
memory stays O(block x N) for large sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stage.errors import StageError

KAD_SCALE = 100.0  # Chung et al. 2025 report KAD x 100
MEDIAN_MAX_ITEMS = 4096  # above this, the bandwidth median is taken on a seeded random subset
BLOCK = 2048  # rows per block in the kernel sums


@dataclass(frozen=True)
class GaussianStats:
    """Mean [D] and unbiased covariance [D, D] (float64) of `count` embeddings."""

    mean: np.ndarray
    cov: np.ndarray
    count: int


@dataclass(frozen=True)
class FADResult:
    """Fréchet distance and its two parts: ||mu_g - mu_r||^2 and the covariance trace term."""

    value: float
    mean_term: float
    cov_term: float
    num_generated: int
    num_reference: int
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KADResult:
    """value = MMD^2_u x `scale`; mmd2 the unscaled estimate; bandwidth the RBF sigma used."""

    value: float
    mmd2: float
    bandwidth: float
    bandwidth_source: str  # "reference median", "reference median (subset of N)" or "given"
    scale: float
    num_generated: int
    num_reference: int
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)


def _matrix(x, what: str, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise StageError(f"{what} must be a [num_items, dim] array, got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise StageError(f"{what} has {a.shape[0]} embeddings; a distribution metric needs at least {min_rows}")
    if a.shape[1] < 1:
        raise StageError(f"{what} has embeddings of dimension 0")
    if not np.isfinite(a).all():
        raise StageError(f"{what} contains NaN or infinite values")
    return a


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise StageError(f"embedding dimensions differ: generated {a.shape[1]}, reference {b.shape[1]}")


# --------------------------------------------------------------------------- FAD


def gaussian_stats(embeddings) -> GaussianStats:
    """Fit a Gaussian to [N, D] embeddings (N >= 2): mean and unbiased (N - 1) covariance."""
    x = _matrix(embeddings, "embeddings")
    return GaussianStats(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)), x.shape[0])


def _clean_eigenvalues(w: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues of a PSD matrix that are round-off: negative ones, and positive ones
    below max(w) * D * machine epsilon (numpy's matrix_rank threshold). Without this, the square
    root amplifies noise: each of the k null directions of a singular covariance (fewer rows
    than dimensions) would add sqrt(1e-16 * ||S||^2) ~ 1e-8 * ||S||, and FAD(x, x) would come out
    as -1e-6 instead of 0."""
    tol = max(float(w.max(initial=0.0)), 0.0) * w.shape[0] * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix [D, D] via eigh (float64);
    round-off eigenvalues (see `_clean_eigenvalues`) are set to 0."""
    a = np.asarray(a, dtype=np.float64)
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(_clean_eigenvalues(w))) @ v.T


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """Tr((A B)^(1/2)) for symmetric PSD A, B, as Tr((A^(1/2) B A^(1/2))^(1/2)): the eigenvalues
    of A B equal those of the symmetric PSD matrix A^(1/2) B A^(1/2), so the trace is the sum of
    the square roots of its (clipped) eigenvalues."""
    root = sqrtm_psd(cov_a)
    m = root @ cov_b @ root
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(_clean_eigenvalues(w)).sum())


def frechet_distance_from_stats(generated: GaussianStats, reference: GaussianStats) -> FADResult:
    """FAD between two fitted Gaussians (see the module docstring for the formula)."""
    if generated.mean.shape != reference.mean.shape:
        raise StageError(f"embedding dimensions differ: generated {generated.mean.shape[0]}, reference {reference.mean.shape[0]}")
    diff = generated.mean - reference.mean
    mean_term = float(diff @ diff)
    cov_term = float(np.trace(generated.cov) + np.trace(reference.cov) - 2.0 * trace_sqrt_product(generated.cov, reference.cov))
    # The exact value is >= 0; round-off can leave -1e-12 for identical sets.
    value = max(mean_term + cov_term, 0.0)
    return FADResult(value, mean_term, cov_term, generated.count, reference.count, int(diff.shape[0]))


def frechet_distance(generated, reference) -> FADResult:
    """FAD between generated [M, D] and reference [N, D] embeddings (M, N >= 2)."""
    g, r = _matrix(generated, "generated embeddings"), _matrix(reference, "reference embeddings")
    _same_dim(g, r)
    return frechet_distance_from_stats(gaussian_stats(g), gaussian_stats(r))


# --------------------------------------------------------------------------- KAD


def _sq_dists(a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)  # [len(a), len(b)]


def median_pairwise_distance(x, max_items: int = MEDIAN_MAX_ITEMS, seed: int = 0) -> tuple[float, str]:
    """Median Euclidean distance over all pairs i < j of the rows of x [N, D].

    Above `max_items` rows the median is taken on a seeded random subset of rows (the full
    N(N-1)/2 distances would not fit in memory). Returns (median, description of the source)."""
    from scipy.spatial.distance import pdist

    a = _matrix(x, "reference embeddings")
    source = "reference median"
    if a.shape[0] > max_items:
        idx = np.sort(np.random.default_rng(seed).choice(a.shape[0], max_items, replace=False))
        a, source = a[idx], f"reference median (subset of {max_items})"
    return float(np.median(pdist(a))), source


def _kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float, exclude_diagonal: bool) -> float:
    """sum_{i,j} exp(-gamma ||a_i - b_j||^2), skipping i == j when a is b, in row blocks."""
    a_sq, b_sq = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    total = 0.0
    for start in range(0, a.shape[0], BLOCK):
        stop = min(start + BLOCK, a.shape[0])
        d2 = _sq_dists(a[start:stop], b, a_sq[start:stop], b_sq)  # [block, len(b)]
        k = np.exp(-gamma * d2)
        if exclude_diagonal:
            rows = np.arange(stop - start)
            k[rows, start + rows] = 0.0
        total += float(k.sum())
    return total


def mmd2_unbiased(generated, reference, bandwidth: float) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with the RBF kernel exp(-d^2 / (2 bandwidth^2))."""
    g, r = _matrix(generated, "generated embeddings"), _matrix(reference, "reference embeddings")
    _same_dim(g, r)
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise StageError(f"KAD bandwidth must be > 0, got {bandwidth} (are all reference embeddings identical?)")
    gamma = 1.0 / (2.0 * bandwidth**2)
    m, n = g.shape[0], r.shape[0]
    k_gg = _kernel_sum(g, g, gamma, exclude_diagonal=True) / (m * (m - 1))
    k_rr = _kernel_sum(r, r, gamma, exclude_diagonal=True) / (n * (n - 1))
    k_gr = _kernel_sum(g, r, gamma, exclude_diagonal=False) / (m * n)
    return k_gg + k_rr - 2.0 * k_gr


def kernel_audio_distance(generated, reference, bandwidth: float | None = None, scale: float = KAD_SCALE) -> KADResult:
    """KAD between generated [M, D] and reference [N, D] embeddings (M, N >= 2).

    bandwidth: RBF sigma; default the median pairwise distance of the reference set (Chung et
    al. 2025), so a given reference set defines one fixed kernel for every model compared on it.
    """
    g, r = _matrix(generated, "generated embeddings"), _matrix(reference, "reference embeddings")
    _same_dim(g, r)
    source = "given"
    if bandwidth is None:
        bandwidth, source = median_pairwise_distance(r)
    mmd2 = mmd2_unbiased(g, r, bandwidth)
    return KADResult(scale * mmd2, mmd2, float(bandwidth), source, scale, g.shape[0], r.shape[0], g.shape[1])


# --------------------------------------------------------------------------- pooling


POOLINGS = ("frames", "mean")


def pool_embeddings(per_item: list[np.ndarray], pooling: str = "frames") -> np.ndarray:
    """Turn per-file embeddings (a list of [F_i, D]) into rows for FAD/KAD.

    "frames": every frame embedding is a row ([sum F_i, D]); the standard FAD practice.
    "mean":   one row per file, the mean over its frames ([num_files, D]).
    """
    if pooling not in POOLINGS:
        raise StageError(f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")
    if not per_item:
        raise StageError("no embeddings to pool")
    arrays = [np.atleast_2d(np.asarray(e, dtype=np.float64)) for e in per_item]
    if pooling == "mean":
        return np.stack([a.mean(axis=0) for a in arrays])
    return np.concatenate(arrays, axis=0)
