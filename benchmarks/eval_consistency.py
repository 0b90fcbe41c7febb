"""Check stage's FAD and KAD against independent reference computations, and time them.

    python benchmarks/eval_consistency.py [--quick]

For random embedding sets of several sizes it prints:
- FAD: ours (eigh of A^(1/2) B A^(1/2)) against the textbook formula with scipy.linalg.sqrtm of
  the product (|difference|, and the time ratio ours / scipy);
- FAD of a set with itself when the covariance is singular (fewer rows than dimensions), where
  the exact value is 0: ours against scipy's sqrtm, whose result there carries round-off
  (and sometimes an imaginary part that is silently dropped);
- KAD: ours (vectorised, blocked) against a plain O(n^2) Python double loop (|difference| and
  the time ratio);
- KAD unbiasedness: the mean of MMD^2_u over repeated draws from one distribution, in units of
  its standard error.
Exits 1 if an agreement check fails (tolerance 1e-6); times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.linalg

from stage.eval.distribution import frechet_distance, kernel_audio_distance, median_pairwise_distance, mmd2_unbiased

TOL = 1e-6


def scipy_fad(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(FAD with scipy's sqrtm, largest |imaginary part| that sqrtm returned)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    imag = float(np.abs(np.imag(root)).max()) if np.iscomplexobj(root) else 0.0
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(root)))
    return value, imag


def loop_kad(x: np.ndarray, y: np.ndarray) -> float:
    """KAD x100 as two plain loops: median bandwidth of y, unbiased MMD^2 with the RBF kernel."""
    n, m = len(y), len(x)
    sigma = float(np.median([np.sqrt(((y[i] - y[j]) ** 2).sum()) for i in range(n) for j in range(i + 1, n)]))
    g = 1.0 / (2 * sigma**2)

    def k(a, b):
        return float(np.exp(-g * ((a - b) ** 2).sum()))

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return 100.0 * (xx + yy - 2 * xy)


def timed(fn, *args, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return out, best


def sets(rng, m, n, d, shift=0.2):
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((m, d)) @ a + shift, rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ok = True

    print("FAD: ours vs scipy.linalg.sqrtm")
    print(f"{'rows gen/ref':>14} {'dim':>5} {'FAD':>12} {'|ours-scipy|':>13} {'t ours':>9} {'t scipy':>9} {'ours/scipy':>10}")
    sizes = [(500, 500, 16), (1000, 800, 64), (2000, 2000, 128)] + ([] if args.quick else [(4000, 4000, 512)])
    for m, n, d in sizes:
        x, y = sets(rng, m, n, d)
        ours, t_ours = timed(lambda: frechet_distance(x, y).value)
        (ref, _), t_ref = timed(lambda: scipy_fad(x, y))
        diff = abs(ours - ref)
        ok &= diff < TOL * max(1.0, abs(ref))
        print(f"{m:>6}/{n:<7} {d:>5} {ours:>12.6f} {diff:>13.2e} {t_ours:>8.3f}s {t_ref:>8.3f}s {t_ours / t_ref:>10.2f}")

    print("\nFAD of a set with itself, singular covariance (rows < dim); exact value 0")
    print(f"{'rows':>6} {'dim':>5} {'ours':>12} {'scipy':>12} {'scipy |imag|':>13}")
    for m, d in [(20, 64), (50, 128), (100, 512)]:
        x = rng.standard_normal((m, d))
        r = frechet_distance(x, x)
        ours = r.mean_term + r.cov_term  # before the clamp at 0 that `value` applies
        ref, imag = scipy_fad(x, x)
        ok &= abs(ours) < TOL
        print(f"{m:>6} {d:>5} {ours:>12.2e} {ref:>12.2e} {imag:>13.2e}")

    print("\nKAD x100: ours vs an O(n^2) Python loop")
    print(f"{'rows gen/ref':>14} {'dim':>5} {'KAD':>12} {'|ours-loop|':>12} {'t ours':>9} {'t loop':>9} {'loop/ours':>10}")
    for m, n, d in [(50, 60, 8), (120, 100, 32)] + ([] if args.quick else [(250, 250, 64)]):
        x, y = sets(rng, m, n, d)
        ours, t_ours = timed(lambda: kernel_audio_distance(x, y).value)
        ref, t_ref = timed(lambda: loop_kad(x, y), repeat=1)
        diff = abs(ours - ref)
        ok &= diff < TOL
        print(f"{m:>6}/{n:<7} {d:>5} {ours:>12.6f} {diff:>12.2e} {t_ours:>8.4f}s {t_ref:>8.3f}s {t_ref / t_ours:>10.0f}")

    print("\nKAD at scale (blocked; memory O(block x N))")
    for n, d in [(2000, 128)] + ([] if args.quick else [(8000, 128)]):
        x, y = sets(rng, n, n, d)
        res, t = timed(lambda: kernel_audio_distance(x, y), repeat=1)
        print(f"  {n} vs {n} rows, dim {d}: KAD {res.value:.5f} ({res.bandwidth_source}) in {t:.2f} s")

    print("\nKAD unbiasedness: MMD^2_u over repeated draws of two 24-row sets from one distribution")
    for label, est in [("fixed bandwidth 2.0", lambda a, b: mmd2_unbiased(a, b, 2.0)),
                       ("reference median bandwidth", lambda a, b: kernel_audio_distance(a, b).mmd2)]:
        draws = np.array([est(rng.standard_normal((24, 3)), rng.standard_normal((24, 3))) for _ in range(4000)])
        se = draws.std(ddof=1) / np.sqrt(len(draws))
        print(f"  {label:>28}: mean {draws.mean():+.2e}, standard error {se:.2e}, mean/se {draws.mean() / se:+.2f}")
    sigma, source = median_pairwise_distance(rng.standard_normal((100, 4)))
    print(f"  (median bandwidth of 100 standard normal rows in 4-D: {sigma:.3f}, {source})")

    print("\nall agreement checks passed" if ok else "\nAGREEMENT CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
