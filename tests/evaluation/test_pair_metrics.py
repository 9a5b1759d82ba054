import numpy as np
import pytest

from simsiam_tf.evaluation import pair_metrics as pm


def random_pairs(seed, n=200, decimals=1):
    """Labels and scores with many exact ties (scores rounded), same pairs scoring higher."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    scores = np.round(rng.normal(size=n) + 0.8 * labels, decimals)
    return labels, scores


def brute_roc(labels, scores):
    thresholds = np.r_[np.inf, np.sort(np.unique(scores))[::-1]]
    pos, neg = scores[labels == 1], scores[labels == 0]
    fpr = np.array([np.mean(neg >= t) for t in thresholds])
    tpr = np.array([np.mean(pos >= t) for t in thresholds])
    return fpr, tpr, thresholds


def mann_whitney_auc(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_matches_brute_force(seed):
    labels, scores = random_pairs(seed)
    fpr, tpr, thresholds = pm.roc_curve(labels, scores)
    b_fpr, b_tpr, b_thr = brute_roc(labels, scores)
    np.testing.assert_array_equal(thresholds, b_thr)
    np.testing.assert_allclose(fpr, b_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, b_tpr, rtol=0, atol=1e-12)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_is_mann_whitney_with_ties_half(seed):
    labels, scores = random_pairs(seed)
    assert len(np.unique(scores)) < len(scores) / 2  # ties are really exercised
    assert pm.roc_auc(labels, scores) == pytest.approx(mann_whitney_auc(labels, scores), abs=1e-12)


def test_roc_auc_extremes_and_type():
    labels = np.array([0, 0, 1, 1])
    assert pm.roc_auc(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert pm.roc_auc(labels, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert pm.roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert type(pm.roc_auc(np.array([True, False]), np.array([1, 0]))) is float


def test_equal_error_rate_known_answers():
    # Interpolated: between thresholds 0.8 (FPR 0, FNR 1/3) and 0.7 (FPR 1/2, FNR 1/3)
    # FNR stays 1/3 and FPR reaches it 2/3 of the way: EER 1/3 at 0.8 + 2/3 * (0.7 - 0.8).
    labels = [1, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.3, 0.7, 0.2]
    eer, threshold = pm.equal_error_rate(labels, scores)
    assert eer == pytest.approx(1.0 / 3.0)
    assert threshold == pytest.approx(0.8 - 0.1 * 2.0 / 3.0)
    # Crossing exactly on a ROC point: threshold 0.6 gives FPR = FNR = 1/4.
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2, 0.1]
    assert pm.equal_error_rate(labels, scores) == pytest.approx((0.25, 0.6))
    assert pm.accuracy_at_threshold(labels, scores, 0.6) == pytest.approx(0.75)
    # Separable: EER 0 at the lowest same score.
    assert pm.equal_error_rate([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == pytest.approx((0.0, 0.8))
    # Uninformative: one tied score, the segment starts at +inf; the finite threshold.
    assert pm.equal_error_rate([1, 0], [0.5, 0.5]) == pytest.approx((0.5, 0.5))


def test_equal_error_rate_near_crossing_on_random_scores():
    labels, scores = random_pairs(3, n=400, decimals=3)
    eer, threshold = pm.equal_error_rate(labels, scores)
    fpr = np.mean(scores[labels == 0] >= threshold)
    fnr = np.mean(scores[labels == 1] < threshold)
    assert 0.0 < eer < 0.5
    # At the returned threshold both rates are within one pair's step of the EER.
    step = 1.0 / min(np.sum(labels == 0), np.sum(labels == 1))
    assert abs(fpr - eer) <= step and abs(fnr - eer) <= step


def test_tar_at_far():
    labels = np.r_[np.ones(4), np.zeros(10)].astype(int)
    scores = np.r_[[0.9, 0.8, 0.7, 0.6], [0.85, 0.65], np.linspace(0.0, 0.5, 8)]
    assert pm.tar_at_far(labels, scores, far=0.0) == pytest.approx(0.25)
    assert pm.tar_at_far(labels, scores, far=0.1) == pytest.approx(0.75)
    assert pm.tar_at_far(labels, scores, far=0.19) == pytest.approx(0.75)
    assert pm.tar_at_far(labels, scores, far=0.2) == pytest.approx(1.0)
    assert type(pm.tar_at_far(labels, scores)) is float
    with pytest.raises(ValueError, match="far"):
        pm.tar_at_far(labels, scores, far=1.5)


def test_tar_at_far_is_nan_with_too_few_negatives_to_measure_it():
    # 10 negatives: one false accept is a rate of 0.1, so FAR 0.05 cannot be measured (it would read 0.0).
    labels = np.r_[np.ones(4), np.zeros(10)].astype(int)
    scores = np.r_[[0.9, 0.8, 0.7, 0.6], np.linspace(0.0, 0.5, 10)]
    assert pm.min_negatives(0.05) == 20 and pm.min_negatives(1e-2) == 100 and pm.min_negatives(0.1) == 10
    assert np.isnan(pm.tar_at_far(labels, scores, far=0.05))
    assert pm.tar_at_far(labels, scores, far=0.1) == pytest.approx(1.0)
    labels100 = np.r_[np.ones(4), np.zeros(100)].astype(int)
    scores100 = np.r_[[0.9, 0.8, 0.7, 0.6], np.linspace(0.0, 0.5, 100)]
    assert pm.tar_at_far(labels100, scores100, far=1e-2) == pytest.approx(1.0)


def test_verification_metrics_leave_an_unmeasurable_tar_out_with_a_note():
    from simsiam_tf.evaluation import verification

    labels = np.r_[np.ones(20), np.zeros(20)].astype(int)
    scores = np.r_[np.linspace(0.6, 1.0, 20), np.linspace(0.0, 0.5, 20)]
    metrics = verification.verification_metrics(labels, scores, labels, scores, {})
    assert metrics["tar_at_far_1e-2"] is None and metrics["roc_auc"] == 1.0
    note = verification.tar_note(labels)
    assert "needs at least 100 negative evaluation pairs, there are 20" in note and "--num_eval_pairs" in note
    assert verification.tar_note(np.r_[np.ones(5), np.zeros(100)]) is None


@pytest.mark.parametrize("seed", [0, 4])
def test_best_threshold_matches_brute_force(seed):
    labels, scores = random_pairs(seed, n=150)
    threshold, accuracy = pm.best_threshold(labels, scores)
    candidates = np.r_[np.inf, np.unique(scores)]
    accuracies = np.array([np.mean((scores >= t) == (labels == 1)) for t in candidates])
    best = accuracies.max()
    assert accuracy == pytest.approx(best, abs=1e-12)
    assert threshold == candidates[np.isclose(accuracies, best, rtol=0, atol=1e-12)].max()
    assert pm.accuracy_at_threshold(labels, scores, threshold) == pytest.approx(accuracy, abs=1e-12)


def test_best_threshold_all_different_and_accuracy_at_threshold():
    # Only one same pair, scored lowest: calling everything different is best.
    labels = [0, 0, 0, 1]
    scores = [0.9, 0.8, 0.7, 0.1]
    assert pm.best_threshold(labels, scores) == (np.inf, 0.75)
    # 0.9 and 0.7 are both 3/4 accurate: the larger threshold is returned.
    assert pm.best_threshold([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == (0.9, 0.75)
    assert pm.accuracy_at_threshold(labels, scores, 0.8) == pytest.approx(0.25)
    # score >= threshold counts as same: the boundary is inclusive.
    assert pm.accuracy_at_threshold([1, 0], [0.5, 0.4], 0.5) == 1.0
    assert pm.accuracy_at_threshold([1, 1], [0.5, 0.4], 0.5) == 0.5


def test_n_way_accuracy():
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # right
            [0.2, 0.8, 0.1, 0.0],  # wrong
            [0.7, 0.7, 0.1, 0.0],  # tied with one other: 1/2
            [0.5, 0.5, 0.5, 0.1],  # tied with two others: 1/3
            [0.1, 0.5, 0.5, 0.0],  # tied maximum without the true match: 0
        ]
    )
    assert pm.n_way_accuracy(scores) == pytest.approx((1 + 0 + 1 / 2 + 1 / 3 + 0) / 5)
    assert pm.n_way_accuracy(np.zeros((7, 20))) == pytest.approx(1 / 20)
    rng = np.random.default_rng(5)
    random_scores = rng.normal(size=(300, 5))
    assert pm.n_way_accuracy(random_scores) == pytest.approx(np.mean(random_scores.argmax(1) == 0))


def test_plot_roc_writes_png(tmp_path):
    labels, scores = random_pairs(6)
    fpr, tpr, _ = pm.roc_curve(labels, scores)
    eer, _ = pm.equal_error_rate(labels, scores)
    path = tmp_path / "figs" / "roc.png"
    returned = pm.plot_roc(fpr, tpr, path, auc=pm.roc_auc(labels, scores), eer=eer, title="test")
    assert returned == str(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    pm.plot_roc(fpr, tpr, tmp_path / "plain.png")
    assert (tmp_path / "plain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="same length"):
        pm.plot_roc(fpr, tpr[:-1], tmp_path / "bad.png")


def test_input_validation():
    cases = [
        (lambda: pm.roc_auc([0, 1, 1], [0.1, 0.2]), "same length"),
        (lambda: pm.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]), "both"),
        (lambda: pm.roc_curve([0, 0], [0.1, 0.2]), "both"),
        (lambda: pm.equal_error_rate([0, 2, 1], [0.1, 0.2, 0.3]), "0 .different. or 1 .same."),
        (lambda: pm.best_threshold(["a", "b"], [0.1, 0.2]), "0 .different. or 1 .same."),
        (lambda: pm.roc_auc([0, 1], [0.1, np.nan]), "finite"),
        (lambda: pm.roc_auc([[0, 1]], [[0.1, 0.2]]), "1-D"),
        (lambda: pm.accuracy_at_threshold([], [], 0.5), "empty"),
        (lambda: pm.accuracy_at_threshold([0, 1], [0.1, 0.2], float("nan")), "threshold"),
        (lambda: pm.n_way_accuracy(np.ones(5)), "num_trials"),
        (lambda: pm.n_way_accuracy(np.ones((3, 1))), "N >= 2"),
        (lambda: pm.n_way_accuracy([[0.1, np.inf]]), "finite"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
