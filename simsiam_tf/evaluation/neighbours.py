"""Exact cosine nearest neighbours over an embeddings array, in blocks so memory stays bounded.

`NeighbourIndex(embeddings).query(vectors, k)` compares every query with every indexed
vector: one matrix product per block of queries and block of the index, a running top-k
per query. Memory is `query_block x index_block` similarities plus the top-k, whatever
the number of images; time grows with queries x index size. Up to a few million vectors
on a CPU this is the right tool (no training, no recall loss); beyond that, or for many
queries against a large index, an approximate index (ScaNN, FAISS) answers far faster.
"""

import numpy as np


def l2_normalize(x, eps=1e-12):
    """Rows scaled to unit euclidean norm, as float32 NumPy.

    Args:
        x: array `[..., D]`.
        eps: the smallest norm divided by (an all-zero row stays zero).

    Returns:
        float32 array of `x`'s shape.
    """
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def _sorted_topk(similarities, indices, k):
    """The k best of each row, highest similarity first, ties broken by the lower index."""
    k = min(k, similarities.shape[1])
    if similarities.shape[1] > k:
        keep = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        similarities = np.take_along_axis(similarities, keep, axis=1)
        indices = np.take_along_axis(indices, keep, axis=1)
    order = np.lexsort((indices, -similarities), axis=1)
    return np.take_along_axis(similarities, order, axis=1), np.take_along_axis(indices, order, axis=1)


class NeighbourIndex:
    """Exact cosine nearest neighbours of query vectors among `embeddings` (float [N, D]).

    The vectors are L2-normalised once (a zero vector stays zero: similarity 0 to all).
    `query_block` and `index_block` bound the similarity block held in memory
    (`query_block * index_block * 4` bytes; the defaults: 64 MiB).
    """

    def __init__(self, embeddings, query_block=256, index_block=65536):
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] < 1:
            raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {embeddings.shape}")
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("embeddings hold NaN or infinite values: the encoder that produced them is broken")
        if query_block < 1 or index_block < 1:
            raise ValueError(f"query_block and index_block must be positive, got {query_block} and {index_block}")
        self.vectors = l2_normalize(embeddings)
        self.query_block = int(query_block)
        self.index_block = int(index_block)

    def __len__(self):
        return self.vectors.shape[0]

    def _queries(self, vectors):
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(
                f"query vectors must be [Q, {self.vectors.shape[1]}] like the index, got shape {vectors.shape}"
            )
        return l2_normalize(vectors)

    def query(self, vectors, k, exclude=None):
        """(indices int64 [Q, k], similarities float32 [Q, k]): each query's k most similar indexed vectors.

        Best first; equal similarities in index order. `exclude` (int [Q], -1 for none):
        an index position each query must not return, e.g. the query itself when the
        queries are the indexed vectors. k larger than the candidates left is an error.
        """
        queries = self._queries(vectors)
        n = len(self)
        if exclude is not None:
            exclude = np.asarray(exclude, np.int64).reshape(-1)
            if exclude.shape[0] != queries.shape[0]:
                raise ValueError(f"exclude needs one position per query ({queries.shape[0]}), got {exclude.shape[0]}")
        available = n - (1 if exclude is not None and np.any(exclude >= 0) else 0)
        if not 1 <= k <= available:
            raise ValueError(f"k must lie in [1, {available}] for an index of {n} vectors, got {k}")
        out_idx = np.zeros([queries.shape[0], k], np.int64)
        out_sim = np.zeros([queries.shape[0], k], np.float32)
        for q0 in range(0, queries.shape[0], self.query_block):
            block = queries[q0 : q0 + self.query_block]
            best_sim = np.full([block.shape[0], 0], -np.inf, np.float32)
            best_idx = np.zeros([block.shape[0], 0], np.int64)
            for i0 in range(0, n, self.index_block):
                sims = block @ self.vectors[i0 : i0 + self.index_block].T
                idx = np.broadcast_to(np.arange(i0, i0 + sims.shape[1], dtype=np.int64), sims.shape)
                if exclude is not None:
                    sims = np.where(idx == exclude[q0 : q0 + block.shape[0], None], -np.inf, sims)
                best_sim, best_idx = _sorted_topk(
                    np.concatenate([best_sim, sims], 1), np.concatenate([best_idx, idx], 1), k
                )
            out_idx[q0 : q0 + block.shape[0]] = best_idx
            out_sim[q0 : q0 + block.shape[0]] = best_sim
        return out_idx, out_sim

    def neighbours_of_all(self, k):
        """`query` of every indexed vector against the others (itself excluded)."""
        return self.query(self.vectors, k, exclude=np.arange(len(self)))

    def pairs_above(self, threshold):
        """(pairs int64 [P, 2] with i < j, similarities float32 [P]) of indexed vectors whose cosine >= threshold.

        Sorted by similarity, highest first (then by i, j). Blockwise as `query`.
        """
        n = len(self)
        found_pairs, found_sims = [], []
        for q0 in range(0, n, self.query_block):
            block = self.vectors[q0 : q0 + self.query_block]
            rows = np.arange(q0, q0 + block.shape[0])[:, None]
            for i0 in range(q0, n, self.index_block):
                sims = block @ self.vectors[i0 : i0 + self.index_block].T
                cols = np.arange(i0, i0 + sims.shape[1])[None, :]
                hit = (sims >= threshold) & (cols > rows)
                r, c = np.nonzero(hit)
                found_pairs.append(np.stack([rows[r, 0], cols[0, c]], 1))
                found_sims.append(sims[r, c])
        pairs = np.concatenate(found_pairs).astype(np.int64) if found_pairs else np.zeros([0, 2], np.int64)
        sims = np.concatenate(found_sims).astype(np.float32) if found_sims else np.zeros([0], np.float32)
        order = np.lexsort((pairs[:, 1], pairs[:, 0], -sims))
        return pairs[order], sims[order]
