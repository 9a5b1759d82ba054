"""A folder of hostile files (tests/data/hostile_images.py): every kind is skipped with its reason, or
stops the load naming the file, or (valid but unusual images) is decoded to RGB; a bomb is refused from
its header, with the memory of the process measured."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hostile_images import DECODED, IGNORED, SKIPPED, bomb_png, make_hostile_folder

from simsiam_tf import data
from simsiam_tf.data import image_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_folder(str(tmp_path_factory.mktemp("hostile") / "images"), good_per_class=3)


@pytest.fixture(scope="module")
def skipped_source(hostile):
    return data.load_source("folder", data_dir=hostile.root, on_corrupt="skip")


def decoded_images(source):
    paths = [p.decode("utf-8") for p in source.records[0].numpy()]
    return dict(zip(paths, (image for image, _ in source.dataset.as_numpy_iterator())))


def test_skip_leaves_out_every_bad_kind_with_its_reason(hostile, skipped_source):
    report = skipped_source.skipped
    reasons = {b.path: b.reason for b in report.bad}
    assert reasons == {path: SKIPPED[hostile.kinds[path]] for path in hostile.paths(*SKIPPED)}
    assert report.total == len(hostile.listed)
    assert report.counts() == hostile.skipped_counts()
    kept = set(p.decode("utf-8") for p in skipped_source.records[0].numpy())
    assert kept == set(hostile.paths("good", *DECODED))
    assert skipped_source.num_examples == len(kept)
    # The directory link loop is neither followed nor listed.
    link = hostile.paths(*IGNORED)[0]
    assert not any(p.startswith(link + os.sep) or p == link for p in reasons.keys() | kept)


def test_a_flat_folder_of_hostile_files_loads_unlabelled(tmp_path):
    """Files at the top: the directory named like an image and the link back to the folder are no classes."""
    folder = make_hostile_folder(str(tmp_path / "flat"), classes=("",), good_per_class=3)
    source = data.load_source("folder", data_dir=folder.root, on_corrupt="skip")
    assert source.num_classes == 0 and source.skipped.counts() == folder.skipped_counts()
    kept = set(p.decode("utf-8") for p in source.records[0].numpy())
    assert kept == set(folder.paths("good", *DECODED))


def test_the_summary_counts_by_reason_and_is_logged(hostile, tmp_path_factory, caplog):
    folder = make_hostile_folder(str(tmp_path_factory.mktemp("logged") / "images"), good_per_class=2, seed=3)
    with caplog.at_level("WARNING"):
        source = data.load_source("folder", data_dir=folder.root, on_corrupt="skip")
    n_bad = sum(folder.skipped_counts().values())
    expected = f"skipped {n_bad} of {len(folder.listed)} files: "
    assert source.skipped.summary().startswith(expected)
    for reason, count in folder.skipped_counts().items():
        assert re.search(rf"\b{count} {reason}\b", source.skipped.summary())
    assert "too large (> 250,000,000 pixels)" in source.skipped.summary()
    assert any(expected in r.getMessage() for r in caplog.records)
    named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping image file")]
    assert len(named) == n_bad and all(p in " ".join(named) for p in folder.paths(*SKIPPED))


def test_valid_unusual_images_decode_to_rgb(hostile, skipped_source):
    images = decoded_images(skipped_source)
    for path in hostile.paths("good", *DECODED):
        expected, got = hostile.expected[path], images[path]
        assert got.dtype == np.uint8 and got.shape == expected.shape, (hostile.kinds[path], got.shape)
        difference = np.abs(got.astype(np.float64) - expected).mean()
        assert difference <= hostile.tolerance[path], (hostile.kinds[path], difference)


def test_exif_rotation_is_not_applied(hostile, skipped_source):
    (path,) = hostile.paths("exif_rotated")
    height, width, _ = decoded_images(skipped_source)[path].shape
    assert width > height  # stored 28 wide x 20 high; orientation 6 would display it 20 x 28


def test_error_mode_loads_a_folder_of_valid_unusual_images(tmp_path):
    folder = make_hostile_folder(str(tmp_path / "images"), good_per_class=2, kinds=DECODED)
    source = data.load_source("folder", data_dir=folder.root, on_corrupt="error")
    assert source.num_examples == len(folder.listed) and not source.skipped.bad


@pytest.mark.parametrize("kind", sorted(SKIPPED))
def test_error_mode_stops_at_each_bad_kind_naming_the_file_and_the_fix(tmp_path, kind):
    folder = make_hostile_folder(str(tmp_path / "images"), good_per_class=2, kinds=(kind,))
    (path,) = folder.paths(kind)
    with pytest.raises(ValueError) as raised:
        data.load_source("folder", data_dir=folder.root, on_corrupt="error")
    message = str(raised.value)
    assert message.startswith(f"image file {path}: {SKIPPED[kind]} (")
    assert "remove" in message and "--on_corrupt=skip" in message


def test_a_too_large_image_names_the_limit_and_how_to_raise_it(tmp_path):
    folder = make_hostile_folder(str(tmp_path / "images"), good_per_class=2, kinds=())
    with pytest.raises(ValueError, match=r"declares 20 x 20 = 400 pixels, over the limit of 399 .*--max_image_pixels"):
        data.load_source("folder", data_dir=folder.root, on_corrupt="error", max_image_pixels=399)
    assert data.load_source("folder", data_dir=folder.root, max_image_pixels=400).num_examples == 4


def test_header_sizes_agree_with_pil_for_every_format(hostile):
    from PIL import Image

    for path in hostile.paths("good", *DECODED):
        assert image_files.check_file(path, max_pixels=10**9) is None
        with Image.open(path) as image:
            width, height = image.size
        assert image_files.check_file(path, max_pixels=width * height - 1).reason == "too large", path
        assert f"{width:,} x {height:,} = " in image_files.check_file(path, max_pixels=1).detail


BOMB_SCRIPT = """
import resource, sys
import numpy as np
from PIL import Image
from simsiam_tf import data
from hostile_images import bomb_png

good, bombs = sys.argv[1], sys.argv[2]
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
def load_and_iterate(folder):
    source = data.load_source("folder", data_dir=folder, on_corrupt="skip")
    for _ in data.make_eval_dataset(source, 4, 16):
        pass
    return source
load_and_iterate(good)  # warm up: TensorFlow's own allocations, the functions traced
before = peak_mb()
source = load_and_iterate(bombs)
print("reasons", sorted(b.reason for b in source.skipped.bad), "kept", source.num_examples)
print("growth_mb", peak_mb() - before)
"""


def test_bombs_are_refused_from_the_header_with_the_memory_measured(tmp_path):
    """20,000 x 20,000 RGB decodes to 1.2 GB (TensorFlow's PNG decoder takes it: under its 2^31 byte
    check); with the header checked first, the process's peak memory grows by less than 100 MB."""
    side = 20_000
    good, bombs = tmp_path / "good" / "a", tmp_path / "bombs" / "a"
    for folder in (good, bombs):
        folder.mkdir(parents=True)
        for i in range(4):
            from PIL import Image

            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    for i in range(3):
        (bombs / f"bomb_{i}.png").write_bytes(bomb_png(side))
    assert len(bomb_png(side)) < 4096
    result = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(good.parent), str(bombs.parent)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "data")])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reasons ['too large', 'too large', 'too large'] kept 4" in result.stdout
    growth = float(result.stdout.split("growth_mb")[1])
    decoded_mb = side * side * 3 / 2**20
    assert growth < 100 < decoded_mb, (growth, decoded_mb)


def test_the_bench_script_runs_and_agrees_with_the_generator(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import hostile_folder
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))
    result = hostile_folder.main(["--bad_copies", "2", "--good_per_class", "2", "--size", "16", "--out", str(tmp_path)])
    assert (
        result["skipped_by_reason"] == result["expected_by_reason"] and result["skipped"] == result["bad_files"] == 24
    )
    assert result["images_kept"] == result["images_in_eval_pass"] == 4 + 2 * len(DECODED)
    assert result["error_mode_reason"] in set(SKIPPED.values())
    assert '"environment"' in capsys.readouterr().out
