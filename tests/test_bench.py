"""Smoke tests of the bench scripts: each runs with tiny settings and ends on a JSON line.

The scripts run in this process (their `main(argv)`), which spares a TensorFlow start
per script; their command lines are the ones bench/README.md documents.
"""

import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
TINY_MODEL = [
    "--batch",
    "4",
    "--image_size",
    "16",
    "--width_multiplier",
    "0.125",
    "--dim",
    "32",
    "--pred_dim",
    "8",
    "--projector_layers",
    "2",
]


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, BENCH)
    try:
        import pipeline
        import step
        import train

        yield step, pipeline, train
    finally:
        sys.path.remove(BENCH)


def _last_json(capsys):
    lines = [line for line in capsys.readouterr().out.strip().splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def test_step_bench(bench_modules, capsys):
    step, _, _ = bench_modules
    step.main(TINY_MODEL + ["--steps", "1", "--warmup", "1", "--no-jit_compile"])
    result = _last_json(capsys)
    assert result["images_per_s"] > 0
    assert result["images_per_s_min"] <= result["images_per_s"] <= result["images_per_s_max"]
    assert result["model_tflops_per_s"] > 0 and result["peak_host_rss_mb"] > 0
    assert result["batch"] == 4 and result["precision"] == "float32"


def test_pipeline_bench(bench_modules, capsys):
    _, pipeline, _ = bench_modules
    pipeline.main(
        [
            "--image_size",
            "16",
            "--batch",
            "4",
            "--num_examples",
            "16",
            "--warmup",
            "1",
            "--windows",
            "1",
            "--batches_per_window",
            "1",
        ]
    )
    result = _last_json(capsys)
    assert result["images_per_s"] > 0
    (entry,) = result["results"]
    assert entry["image_size"] == 16 and entry["images_per_cpu_s"] > 0


def test_train_bench(bench_modules, capsys):
    _, _, train = bench_modules
    train.main(
        TINY_MODEL + ["--steps", "1", "--warmup", "1", "--rounds", "1", "--num_examples", "16", "--no-jit_compile"]
    )
    result = _last_json(capsys)
    assert result["images_per_s"] > 0 and result["cached_images_per_s"] > 0
    assert result["pipeline_fraction"] < 1.0


def test_flop_count_of_resnet18_cifar(bench_modules):
    """The analytic count: ResNet-18 (CIFAR stem) at 32 px is 0.56 GMACs per image."""
    step, _, _ = bench_modules
    args = step.parse_args(["--backbone", "resnet18_cifar", "--image_size", "32"])
    flops = step.forward_flops_per_image(args)
    heads = 2 * (512 * 512 * 2 + 512 * 2048) + 2 * 2 * 2048 * 512
    assert (flops - heads) / 2 == pytest.approx(0.556e9, rel=0.01)


CPU_FIELDS = ("cpu_model", "cpu_family", "cpu_model_number", "cpu_flags", "isa_cap", "effective_isa", "threads")


def _assert_names_the_cpu(result):
    env = result["environment"]
    for field in CPU_FIELDS:
        assert field in env, field
    assert env["threads"] == len(os.sched_getaffinity(0))
    with open("/proc/cpuinfo") as f:
        text = f.read()
    model_name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    assert env["cpu_model"] == model_name
    flags = set(next(line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")).split())
    assert ("avx2" in env["cpu_flags"]) == ("avx2" in flags)
    assert ("avx512f" in env["cpu_flags"]) == ("avx512f" in flags)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux /proc/cpuinfo")
def test_step_bench_names_the_cpu_and_its_isa_cap(bench_modules, capsys, monkeypatch):
    step, _, _ = bench_modules
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # read by the JSON; oneDNN itself read it at start-up
    step.main(TINY_MODEL + ["--steps", "1", "--warmup", "1", "--no-jit_compile", "--ab", "conv_grad"])
    result = _last_json(capsys)
    _assert_names_the_cpu(result)
    assert result["environment"]["isa_cap"] == "AVX2" and result["environment"]["native_bf16"] is False
    # float32 keeps the backward-weights kernel by default; --ab conv_grad times the rewrite against it.
    assert result["small_map_grad"] is False
    assert result["ab"]["changed"] == "small_map_grad=True"
    assert result["ab"]["first_loss"] == pytest.approx(result["first_loss"], abs=1e-4)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux /proc/cpuinfo")
def test_train_bench_names_the_cpu(bench_modules, capsys):
    _, _, train = bench_modules
    train.main(
        TINY_MODEL
        + [
            "--steps",
            "1",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--num_examples",
            "16",
            "--no-jit_compile",
            "--small_map_grad",
            "on",
        ]
    )
    result = _last_json(capsys)
    _assert_names_the_cpu(result)
    assert result["small_map_grad"] is True


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux /proc/cpuinfo")
def test_compare_reference_names_the_cpu(bench_modules, capsys):
    pytest.importorskip("torch")
    # As bench/README.md runs it: the reference script beside the repository.
    reference = os.path.join(os.path.dirname(BENCH), "..", "shared", "reference", "torch_simsiam_step.py")
    reference = os.environ.get("SIMSIAM_REFERENCE_STEP", reference)
    if not os.path.exists(reference):
        pytest.skip("the PyTorch reference step script is not beside the repository")
    sys.path.insert(0, BENCH)
    import compare_reference

    compare_reference.main(
        [
            "--reference",
            reference,
            "--batch",
            "4",
            "--image_size",
            "16",
            "--dim",
            "32",
            "--pred_dim",
            "8",
            "--projector_layers",
            "2",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--ref_threads",
            "1",
            "--no-jit_compile",
        ]
    )
    result = _last_json(capsys)
    _assert_names_the_cpu(result)
    assert result["ratio"] > 0 and "ATen" in result["reference_framework"]


def test_pipeline_bench_jpeg_side_by_side(bench_modules, capsys):
    """Each contender runs in a worker pinned to one core; ratios are against the reference's rounds."""
    _, pipeline, _ = bench_modules
    pipeline.main(
        [
            "--source",
            "jpeg",
            "--image_size",
            "32",
            "--batch",
            "4",
            "--num_images",
            "8",
            "--jpeg_size",
            "64",
            "48",
            "--rounds",
            "2",
            "--batches_per_round",
            "1",
            "--contenders",
            "reference",
            "package",
            "fast:union:noaa",
        ]
    )
    result = _last_json(capsys)
    assert result["source"] == "jpeg" and result["jpegs"]["count"] == 8 and result["jpegs"]["mean_bytes"] > 0
    assert set(result["results"]) == {"reference", "package", "fast:union:noaa"}
    for name, entry in result["results"].items():
        assert entry["cores"] == 1 and entry["images_per_cpu_s"]["median"] > 0
        assert entry["images_per_s_per_core"]["min"] <= entry["images_per_s_per_core"]["median"]
        if name != "reference":
            assert entry["tf_threads"] == [1, 1] and entry["ratio_to_reference"]["median"] > 0
    assert "ratio_to_reference" not in result["results"]["reference"]


def test_jpeg_contender_names_are_checked(bench_modules):
    sys.path.insert(0, BENCH)
    try:
        import jpeg_bench
    finally:
        sys.path.remove(BENCH)
    assert jpeg_bench.parse_contender("fast:full:noaa") == ("fast", {"mode": "full", "antialias": False})
    assert jpeg_bench.parse_contender("package:crops") == ("package", {"crops_only": True})
    with pytest.raises(ValueError, match="takes no options"):
        jpeg_bench.parse_contender("reference:crops")
    with pytest.raises(ValueError, match="unknown option 'fastest'"):
        jpeg_bench.parse_contender("fast:fastest")
    with pytest.raises(ValueError, match="unknown contender"):
        jpeg_bench.parse_contender("dali")


@pytest.mark.slow
def test_real_digits_quick(tmp_path, capsys):
    pytest.importorskip("sklearn")
    sys.path.insert(0, BENCH)
    try:
        import real_digits
    finally:
        sys.path.remove(BENCH)
    report = real_digits.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    # the class folders hold sklearn's 1,797 digits, 80/20
    counts = {
        split: sum(len(files) for _, _, files in os.walk(tmp_path / "digits" / split)) for split in ("train", "test")
    }
    assert counts == {"train": 1437, "test": 360}
    rows = [line for line in report["table"].splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 4 and rows[1].startswith("| SimSiam") and rows[3].startswith("| raw pixels")
    assert report["table"] in out
    assert all(cell != "-" for row in rows[1:] for cell in row.strip("| ").split(" | ")[1:])
    assert report["stages"]["probe_10"]["label_budget"]["counts_per_class"] == {str(d): 10 for d in range(10)}
    # --quick replaces the recipe's --train_steps: one epoch of 320 images in batches of 64
    assert report["stages"]["pretrain"]["total_steps"] == 5
    written = json.load(open(tmp_path / "real_digits.json"))
    assert written["table"] == report["table"] and written["quick"] is True


def test_real_digits_28px_mode_quick(tmp_path, capsys):
    """The 28 px mode on a .npz the test makes: the split, the three rows, the JSON report."""
    pytest.importorskip("sklearn")
    import numpy as np

    sys.path.insert(0, BENCH)
    try:
        import real_digits
    finally:
        sys.path.remove(BENCH)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    images = np.zeros((300, 28, 28), np.uint8)
    for i, label in enumerate(labels):  # a bar whose position is the class, with noise
        images[i, 2 + 2 * label : 5 + 2 * label, 4:24] = 255
    images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
    npz = tmp_path / "set.npz"
    np.savez(npz, images=images, labels=labels)
    report = real_digits.main(["--npz", str(npz), "--quick", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert report["part"] == "held-out 20% (stratified, seed 0)"
    assert report["num_test"] == 60 and report["num_train"] == 200  # --quick keeps 20 of the 24 per class
    counts = {
        part: sum(len(files) for _, _, files in os.walk(tmp_path / "out" / "images" / part))
        for part in ("train", "test")
    }
    assert counts == {"train": 200, "test": 60}
    for name in ("SimSiam", "random init, same encoder", "raw pixels (standardised)"):
        assert f"| {name} |" in out
    pixels = report["results"]["pixels"]
    assert len(pixels["probe_10_draws"]) == 5 and pixels["probe_all"] > 0.9  # the bars are linearly separable
    written = json.load(open(tmp_path / "out" / "real_digits_28.json"))
    assert written["results"] == json.loads(json.dumps(report["results"]))
    assert "wall time" in out or "whole script" in out
