"""SIGRID-3 writer: generalisation leaves no region below the sieve size."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from icechart.products.sigrid3 import sieve_regions


def _smallest_region(a: np.ndarray) -> int:
    sizes = []
    for v in np.unique(a):
        lab, _ = ndimage.label(a == v)  # 4-connectivity, as the polygoniser
        sizes.append(int(np.bincount(lab.ravel())[1:].min()))
    return min(sizes)


def test_sieve_merges_clusters_of_small_regions():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 5, (60, 60)).astype(np.int32)  # many 1-2 pixel regions side by side
    mask = np.ones(noisy.shape, np.uint8)
    assert _smallest_region(noisy) == 1
    out = sieve_regions(noisy, mask, 16)
    assert _smallest_region(out) >= 16
    assert set(np.unique(out)) <= set(np.unique(noisy))  # merges only, no new codes


def test_sieve_keeps_large_regions_untouched():
    a = np.zeros((40, 40), np.int32)
    a[:, 20:] = 7
    a[5, 5] = 3  # one stray pixel
    out = sieve_regions(a, np.ones(a.shape, np.uint8), 16)
    expected = a.copy()
    expected[5, 5] = 0
    np.testing.assert_array_equal(out, expected)
