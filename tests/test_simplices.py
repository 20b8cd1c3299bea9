"""Simplex enumeration and the canonical pair list (math spec §3, §4)."""

import pytest
import torch

from advsimplex import pair_index
from advsimplex.reference import num_pairs, num_simplices, simplex_pairs, simplex_vertices


@pytest.mark.parametrize("m", [2, 3, 5, 10])
def test_order3(m):
    pairs = pair_index(m, 3)
    assert pairs.dtype == torch.long and pairs.shape == (2 * m - 1, 2)
    expected = [(k, k + o) for k in range(m) for o in (0, 1) if k + o < m]
    assert [tuple(p) for p in pairs.tolist()] == expected
    assert num_simplices(m, 3) == m - 1
    assert simplex_vertices(m, 3).tolist() == [[i, i + 1] for i in range(m - 1)]


@pytest.mark.parametrize("m", [3, 4, 10])
def test_order4(m):
    pairs = pair_index(m, 4)
    assert pairs.shape == (3 * m - 3, 2)
    assert sorted(map(tuple, pairs.tolist())) == [tuple(p) for p in pairs.tolist()]  # lexicographic
    assert all(0 <= l - k <= 2 for k, l in pairs.tolist())
    assert simplex_vertices(m, 4).tolist() == [[i, i + 1, i + 2] for i in range(m - 2)]


@pytest.mark.parametrize(("m", "order"), [(2, 3), (7, 3), (3, 4), (7, 4)])
def test_simplex_pairs_cover_every_needed_pair(m, order):
    pairs = pair_index(m, order).tolist()
    local = simplex_pairs(m, order)
    verts = simplex_vertices(m, order)
    assert torch.equal(local, local.transpose(1, 2))
    for s in range(verts.shape[0]):
        for a in range(order - 1):
            for b in range(order - 1):
                k, l = sorted((verts[s, a].item(), verts[s, b].item()))
                assert pairs[local[s, a, b]] == [k, l]
    assert set(local.flatten().tolist()) == set(range(len(pairs)))


def test_m_equals_order_minus_one_has_one_simplex():
    assert num_simplices(2, 3) == 1 and num_simplices(3, 4) == 1


@pytest.mark.parametrize(("m", "order", "match"), [(1, 3, "need m >= order - 1 = 2"), (2, 4, "= 3"), (5, 5, "order")])
def test_bad_orders(m, order, match):
    with pytest.raises(ValueError, match=match):
        pair_index(m, order)


@pytest.mark.parametrize("order", [3, 4])
def test_num_pairs_formula(order):
    for m in range(order - 1, 15):
        assert num_pairs(m, order) == pair_index(m, order).shape[0]
