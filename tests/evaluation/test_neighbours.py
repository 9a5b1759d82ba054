"""The blockwise exact neighbour search against a brute-force NumPy search."""

import numpy as np
import pytest

from simsiam_tf import NeighbourIndex


def brute_force(index_vectors, queries, k, exclude=None):
    a = index_vectors / np.linalg.norm(index_vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ a.T.astype(np.float64)
    if exclude is not None:
        sims[np.arange(len(q)), exclude] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


@pytest.mark.parametrize("query_block,index_block", [(1, 1), (3, 7), (16, 50), (1000, 1000), (64, 13)])
def test_blockwise_search_equals_brute_force(query_block, index_block):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=[97, 12]).astype(np.float32)
    queries = rng.normal(size=[41, 12]).astype(np.float32)
    index = NeighbourIndex(vectors, query_block=query_block, index_block=index_block)
    got_idx, got_sim = index.query(queries, 5)
    want_idx, want_sim = brute_force(vectors, queries, 5)
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_allclose(got_sim, want_sim, atol=1e-5)
    assert got_idx.dtype == np.int64 and got_sim.dtype == np.float32


@pytest.mark.parametrize("index_block", [4, 1000])
def test_neighbours_of_all_exclude_the_query_itself(index_block):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=[30, 6]).astype(np.float32)
    got_idx, got_sim = NeighbourIndex(vectors, query_block=8, index_block=index_block).neighbours_of_all(4)
    want_idx, want_sim = brute_force(vectors, vectors, 4, exclude=np.arange(30))
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_allclose(got_sim, want_sim, atol=1e-5)
    assert not np.any(got_idx == np.arange(30)[:, None])


@pytest.mark.parametrize("query_block,index_block", [(1, 1), (5, 3), (100, 100)])
def test_pairs_above_a_threshold_equal_brute_force(query_block, index_block):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=[40, 3]).astype(np.float32)
    pairs, sims = NeighbourIndex(vectors, query_block=query_block, index_block=index_block).pairs_above(0.9)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    full = unit @ unit.T
    want = {(i, j) for i in range(40) for j in range(i + 1, 40) if full[i, j] >= 0.9}
    assert want and {tuple(p) for p in pairs.tolist()} == want
    assert np.all(pairs[:, 0] < pairs[:, 1]) and np.all(np.diff(sims) <= 0)
    np.testing.assert_allclose(sims, full[pairs[:, 0], pairs[:, 1]], atol=1e-6)


def test_bad_queries_and_k_are_errors_that_name_the_problem():
    index = NeighbourIndex(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"k must lie in \[1, 4\]"):
        index.query(np.eye(4), 5)
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\]"):
        index.neighbours_of_all(4)
    with pytest.raises(ValueError, match=r"\[Q, 4\]"):
        index.query(np.ones([2, 3]), 1)
    with pytest.raises(ValueError, match="NaN"):
        NeighbourIndex(np.array([[np.nan, 1.0]]))
    # one vector queried alone, as a 1-D array
    idx, sim = index.query(np.array([0, 0, 2.0, 0]), 1)
    assert idx.tolist() == [[2]] and sim[0, 0] == pytest.approx(1.0)
