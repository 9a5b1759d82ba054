"""bench/collapse_monitor.py's bookkeeping: Spearman's rho of rank against the probe, within runs and across rates."""

import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("scipy")
    sys.path.insert(0, BENCH)
    try:
        import collapse_monitor

        yield collapse_monitor
    finally:
        sys.path.remove(BENCH)


def run(lr, ranks, probes, kept):
    checkpoints = [
        {"step": 50 * (i + 1), "rank": r, "backbone_rank": 2 * r, "probe_top1": p}
        for i, (r, p) in enumerate(zip(ranks, probes))
    ]
    return {"dataset": "digits", "base_lr": lr, "kept_step": kept, "checkpoints": checkpoints}


def test_spearman_within_runs_and_across_learning_rates(bench):
    runs = [
        run(0.1, [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], kept=200),  # same order: rho 1
        run(0.5, [4, 3, 2, 1], [0.1, 0.2, 0.3, 0.4], kept=50),  # reversed: rho -1
        run(1.0, [1, 3, 2, 5], [0.5, 0.6, 0.7, 0.8], kept=200),  # one swap of four: rho 0.8
    ]
    out = bench.correlations(runs)
    rhos = [r["rho_rank_probe"] for r in out["within_runs"]]
    assert rhos == pytest.approx([1.0, -1.0, 0.8])
    assert [r["probe_at_kept"] for r in out["within_runs"]] == [0.4, 0.1, 0.8]
    # final checkpoints: ranks 4, 1, 5 against probes 0.4, 0.4, 0.8 (a tie): rho = 0.866
    assert out["across_lrs"]["digits"]["rho_rank_probe"] == pytest.approx(0.8660254, abs=1e-6)


def test_spearman_is_undefined_for_constant_series(bench):
    assert bench.spearman([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert bench.spearman([1, 2], [0.1, 0.2]) is None
