"""The label-free readings against NumPy on constructed embeddings: complete collapse, k-dim collapse, isotropic."""

import numpy as np
import pytest

from simsiam_tf.evaluation import spectrum


def rankme_oracle(z):
    """RankMe through the eigenvalues of the Gram matrix Z^T Z (float64): s_k = sqrt(lambda_k)."""
    z = np.asarray(z, np.float64)
    s = np.sqrt(np.clip(np.linalg.eigvalsh(z.T @ z), 0, None))[::-1][: min(z.shape)]
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def correlation_oracle(z):
    z = np.asarray(z, np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    c = np.corrcoef(z - z.mean(axis=0), rowvar=False)
    off = ~np.eye(c.shape[0], dtype=bool)
    return float(np.abs(c[off]).mean())


def k_dim(n, d, k, seed, values=None):
    """[n, d] embeddings spanning exactly k directions, with singular values `values` (all 1 by default)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, k)))
    v, _ = np.linalg.qr(rng.normal(size=(d, k)))
    s = np.ones(k) if values is None else np.asarray(values, np.float64)
    return (u * s) @ v.T


def test_complete_collapse():
    row = np.random.default_rng(0).normal(size=(1, 24))
    z = np.repeat(row, 64, axis=0).astype(np.float32)
    r = spectrum.readings(z)
    assert r["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert r["center_share"] == pytest.approx(1.0, abs=1e-5)
    assert r["center_norm"] == pytest.approx(1.0, abs=1e-5)
    assert r["residual_norm"] == pytest.approx(0.0, abs=1e-5)
    assert r["residual_correlation"] == pytest.approx(0.0, abs=1e-6)  # nothing left to correlate
    assert r["spectrum"][0] == pytest.approx(1.0, abs=1e-5) and max(r["spectrum"][1:]) < 1e-5
    assert r["rank_limit"] == 24


@pytest.mark.parametrize("k", [1, 3, 8])
def test_k_dim_collapse_with_equal_singular_values_has_rank_k(k):
    z = k_dim(200, 32, k, seed=k).astype(np.float32)
    assert float(spectrum.effective_rank(z)) == pytest.approx(k, rel=2e-3)
    assert float(spectrum.effective_rank(z)) == pytest.approx(rankme_oracle(z), rel=1e-3)


def test_unequal_singular_values_give_the_entropy_of_their_shares():
    # s = (3, 1): shares 3/4 and 1/4, effective rank exp(-(3/4 ln 3/4 + 1/4 ln 1/4)) = 1.7548
    z = k_dim(100, 16, 2, seed=4, values=[3.0, 1.0]).astype(np.float32)
    assert float(spectrum.effective_rank(z)) == pytest.approx(1.7548, abs=1e-3)
    r = spectrum.readings(z)
    assert r["spectrum"][:2] == pytest.approx([0.75, 0.25], abs=1e-4)


def test_random_spectrum_matches_the_gram_matrix_oracle():
    rng = np.random.default_rng(5)
    z = (rng.normal(size=(300, 40)) * np.geomspace(5, 0.01, 40)).astype(np.float32)
    assert float(spectrum.effective_rank(z)) == pytest.approx(rankme_oracle(z), rel=1e-3)
    assert float(spectrum.residual_correlation(z)) == pytest.approx(correlation_oracle(z), abs=1e-4)


def test_isotropic_embeddings():
    z = np.random.default_rng(6).normal(size=(4096, 32)).astype(np.float32)
    r = spectrum.readings(z)
    assert 31.0 < r["effective_rank"] <= 32.0
    assert r["effective_rank"] == pytest.approx(rankme_oracle(z), rel=1e-4)
    assert r["center_share"] < 0.01
    # independent channels: |corr| of N samples is about sqrt(2 / (pi N)) = 0.0125
    assert r["residual_correlation"] == pytest.approx(correlation_oracle(z), abs=1e-4)
    assert r["residual_correlation"] < 0.02


def test_a_centred_line_is_perfectly_correlated():
    # half the rows v, half -v: centre 0, every residual channel moves with every other
    v = np.random.default_rng(7).normal(size=(1, 12))
    z = np.concatenate([np.repeat(v, 10, axis=0), np.repeat(-v, 10, axis=0)]).astype(np.float32)
    r = spectrum.readings(z)
    assert r["residual_correlation"] == pytest.approx(1.0, abs=1e-5)
    assert r["center_share"] == pytest.approx(0.0, abs=1e-6)
    assert r["effective_rank"] == pytest.approx(1.0, abs=1e-3)


def test_center_share_of_two_orthogonal_directions_is_one_half():
    z = np.zeros((10, 4), np.float32)
    z[:5, 0] = 2.0
    z[5:, 1] = 7.0
    assert float(spectrum.center_share(z)) == pytest.approx(0.5, abs=1e-6)


def test_too_few_embeddings_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        spectrum.readings(np.ones((1, 4), np.float32))


def test_spectrum_image_bars_are_log_scaled():
    image = spectrum.spectrum_image([1.0, 1e-3, 1e-9], height=60, floor=1e-6)
    assert image.shape == (60, 3, 3) and image.dtype == np.uint8
    coloured = (image != 255).any(axis=-1).sum(axis=0)
    assert coloured.tolist() == [60, 30, 0]  # log10: 0 at the top, -3 half way, below the floor empty
