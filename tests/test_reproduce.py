"""bench/reproduce.py end to end at a tiny budget: runs, figure, table and JSON."""

import importlib.util
import json
import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reproduce_writes_the_figure_table_and_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # main() moves into the repository; the fixture moves back
    reproduce = _load("reproduce")
    out, runs = tmp_path / "out", tmp_path / "runs"
    reproduce.main(
        [
            "--epochs=2",
            "--num_train_examples=128",
            "--num_eval_examples=40",
            "--batch_size=64",
            "--knn_k=5",
            "--runs=baseline,no_stop_gradient",
            f"--runs_dir={runs}",
            f"--out={out}",
        ]
    )
    with open(out / "reproduce.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((out / "reproduce.json").read_text())
    assert payload["settings"]["base_lr"] == 0.3 and payload["settings"]["epochs"] == 2
    assert [r["name"] for r in payload["runs"]] == ["baseline", "no_stop_gradient"]
    for record in payload["runs"]:
        assert len(record["history"]) == 2
        assert -1.0 <= record["final"]["loss"] <= 1.0 and 0.0 <= record["final"]["knn_top1"] <= 1.0
        assert record["metrics"]["step"] == 4
    table = (out / "reproduce.md").read_text()
    assert "| SimSiam |" in table and "| w/o stop-grad |" in table and "![" in table
    assert sorted(os.listdir(runs)) == ["baseline", "no_stop_gradient"]


def test_reproduce_rejects_a_run_list_without_the_baseline_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reproduce = _load("reproduce")
    with pytest.raises(SystemExit, match="baseline first"):
        reproduce.main(["--runs=no_predictor,baseline"])
