"""The host radix argsort equals numpy's stable sort (ties kept in input order) for keys of one to
four 16-bit digits, empty and constant inputs included."""
import numpy as np
import pytest

from gnn_attention.graphs.sorting import stable_argsort


@pytest.mark.parametrize("high", [1, 7, 2**16, 2**33, 2**62])
def test_equals_numpys_stable_sort(high):
    key = np.random.default_rng(high % 97).integers(0, high, size=5000, dtype=np.int64)
    assert np.array_equal(stable_argsort(key), np.argsort(key, kind="stable"))


def test_empty_and_constant():
    assert stable_argsort(np.zeros(0, dtype=np.int64)).size == 0
    assert np.array_equal(stable_argsort(np.full(9, 5, dtype=np.int64)), np.arange(9))
