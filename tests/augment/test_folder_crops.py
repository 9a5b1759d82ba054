"""Folders of images of different sizes: crops cut from the original files, not from squashed copies."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from simsiam_tf import augment, data

WIDTH, HEIGHT = 400, 300
SIZE = 64


def _located_image():
    """R and G are ramps of x and y (they locate a view's window), B a fine texture a squash would erase."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    red = 255.0 * x / (WIDTH - 1)
    green = 255.0 * y / (HEIGHT - 1)
    blue = 128 + 100 * np.sin(2 * np.pi * x / 9) * np.sin(2 * np.pi * y / 9)
    return np.round(np.stack([red, green, blue], axis=-1)).astype(np.uint8)


def _mixed_folder(root, located_format):
    """class a: the 400 x 300 located image in `located_format`; class b: a flat grey 150 x 200 one in the other format."""
    other = "PNG" if located_format == "JPEG" else "JPEG"
    suffix = {"PNG": "png", "JPEG": "jpg"}
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    # 4:4:4 keeps the texture, which is in one colour channel, through JPEG.
    located = root / "a" / f"located.{suffix[located_format]}"
    Image.fromarray(_located_image()).save(located, located_format, quality=95, subsampling=0)
    Image.fromarray(np.full((200, 150, 3), 128, np.uint8)).save(root / "b" / f"grey.{suffix[other]}", other)
    return root


def _window_of(view):
    """(top, left, height, width) in the original, read off the ramps of an un-mirrored view."""
    inner = np.arange(4, SIZE - 4)
    found = []
    for profile, extent in ((view[inner, :, 1].mean(axis=1), HEIGHT), (view[:, inner, 0].mean(axis=0), WIDTH)):
        slope, intercept = np.polyfit(inner, profile, 1)
        step = slope * (extent - 1) / 255.0  # original pixels per output pixel
        start = intercept * (extent - 1) / 255.0 - 0.5 * step + 0.5
        found += [int(round(start)), int(round(step * SIZE))]
    top, height, left, width = found
    return top, left, height, width


def _located_views(folder, steps=6, **kwargs):
    source = data.load_source("folder", data_dir=str(folder))
    aug = augment.TwoViewAugment(SIZE, **kwargs)
    stream = data.make_pretrain_dataset(source, 1, aug, seed=5, photometric_on_host=False)
    views = [v[0] for pair in stream.take(steps) for v in pair]
    return [v.numpy() for v in views if v.numpy().std() > 5]  # the grey image's views are flat


@pytest.mark.parametrize("located_format", ["PNG", "JPEG"])
def test_crops_of_a_400x300_image_are_cut_from_the_original(tmp_path, located_format):
    folder = _mixed_folder(tmp_path / "mixed", located_format)
    original = np.asarray(Image.open(next((folder / "a").iterdir())).convert("RGB"))
    views = _located_views(folder, crop_scale=(0.2, 0.35))
    assert len(views) >= 3
    for view in views:
        assert view.shape == (SIZE, SIZE, 3) and view.dtype == np.uint8
        if np.polyfit(np.arange(SIZE), view[:, :, 0].mean(axis=0), 1)[0] < 0:
            view = view[:, ::-1]  # mirrored
        top, left, height, width = _window_of(view)
        # The ramps place the window to a pixel or two (JPEG moves them); take the best of the windows around.
        candidates = []
        for shift in itertools.product((-2, -1, 0, 1, 2), repeat=4):
            t, lf, h, w = top + shift[0], left + shift[1], height + shift[2], width + shift[3]
            if t < 0 or lf < 0 or t + h > HEIGHT or lf + w > WIDTH:
                continue
            crop = Image.fromarray(original).crop((lf, t, lf + w, t + h))
            oracle = np.asarray(crop.resize((SIZE, SIZE), Image.BILINEAR), np.float64)
            error = np.abs(view.astype(np.float64) - oracle)
            candidates.append((error.mean(), (t, lf, h, w), error))
        _, (top, left, height, width), error = min(candidates, key=lambda c: c[0])
        assert 0.18 <= height * width / (HEIGHT * WIDTH) <= 0.37 and 0.7 <= width / height <= 1.4
        # PNG: the same pixels, PIL's uint8 resize against TF's float one; JPEG: PIL's decode against TF's too.
        assert error.mean() < (0.5 if located_format == "PNG" else 2.5), ((top, left, height, width), error.mean())
        # The same window cut from a squashed SIZE x SIZE copy has lost the texture.
        squashed = Image.fromarray(original).resize((SIZE, SIZE), Image.BILINEAR)
        scale_x, scale_y = SIZE / WIDTH, SIZE / HEIGHT
        squashed_box = (left * scale_x, top * scale_y, (left + width) * scale_x, (top + height) * scale_y)
        from_squashed = np.asarray(squashed.resize((SIZE, SIZE), Image.BILINEAR, box=squashed_box), np.float64)
        assert np.abs(view[..., 2] - from_squashed[..., 2]).mean() > 4 * error[..., 2].mean() + 5


def test_mixed_folder_streams_resume_and_photometric_stage(tmp_path):
    folder = _mixed_folder(tmp_path / "mixed", "JPEG")
    source = data.load_source("folder", data_dir=str(folder))
    assert source.image_shape is None
    aug = augment.TwoViewAugment(SIZE)
    for on_host, dtype in ((True, np.float32), (False, np.uint8)):
        stream = data.make_pretrain_dataset(source, 2, aug, seed=3, photometric_on_host=on_host)
        batches = [tuple(t.numpy() for t in pair) for pair in stream.take(4)]
        assert batches[0][0].shape == (2, SIZE, SIZE, 3) and batches[0][0].dtype == dtype
        resumed = data.make_pretrain_dataset(source, 2, aug, seed=3, start_step=2, photometric_on_host=on_host)
        for k, pair in enumerate(resumed.take(2)):
            np.testing.assert_array_equal(pair[0].numpy(), batches[2 + k][0])
            np.testing.assert_array_equal(pair[1].numpy(), batches[2 + k][1])
    crops = [pair for pair in data.make_pretrain_dataset(source, 2, aug, seed=3, photometric_on_host=False).take(1)]
    views = [pair for pair in data.make_pretrain_dataset(source, 2, aug, seed=3).take(1)]
    # The photometric stage changes the crops (jitter p=0.8, grayscale, blur), but not all of them the same way.
    difference = np.abs(views[0][0].numpy() - crops[0][0].numpy() / 255.0)
    assert difference.mean() > 0.01


def test_uint8_crops_from_in_memory_sources():
    source = data.load_source("synthetic", image_size=16, num_examples=16)
    aug = augment.TwoViewAugment.cifar(16)
    v1, v2 = next(iter(data.make_pretrain_dataset(source, 8, aug, seed=1, photometric_on_host=False)))
    assert v1.dtype == np.uint8 and v1.shape == (8, 16, 16, 3)
    # Geometric stage only: every crop of the synthetic images keeps their colours; no grey views appear.
    f1, _ = next(iter(data.make_pretrain_dataset(source, 8, aug, seed=1)))
    assert f1.dtype == np.float32
    with pytest.raises(TypeError, match="crop"):
        data.make_pretrain_dataset(source, 8, lambda x, s: (x, x), photometric_on_host=False)


def test_eval_resizes_the_short_side_and_centre_crops_the_original(tmp_path):
    folder = _mixed_folder(tmp_path / "mixed", "PNG")
    source = data.load_source("folder", data_dir=str(folder))
    images, labels = next(iter(data.make_eval_dataset(source, 2, 112, center_crop=True)))
    assert images.shape == (2, 112, 112, 3) and list(labels.numpy()) == [0, 1]
    # torchvision: Resize(128) (short side 128, long side int(128 * 400 / 300) = 170), CenterCrop(112).
    resized = Image.fromarray(_located_image()).resize((170, 128), Image.BILINEAR)
    left, top = int(round((170 - 112) / 2)), int(round((128 - 112) / 2))
    oracle = np.asarray(resized, np.float64)[top : top + 112, left : left + 112] / 255.0
    assert np.abs(images[0].numpy() - oracle).mean() < 1.0 / 255


@pytest.mark.slow
def test_a_folder_of_mixed_sizes_and_formats_pretrains_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(20, 16), (24, 18), (16, 16), (32, 24), (18, 30), (40, 28)]
    for split, count in (("train", 16), ("test", 8)):
        for i in range(count):
            cls = tmp_path / "data" / split / f"class{i % 2}"
            cls.mkdir(parents=True, exist_ok=True)
            width, height = sizes[i % len(sizes)]
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype(np.uint8))
            image.save(cls / f"{i}.{'jpg' if i % 3 else 'png'}", "JPEG" if i % 3 else "PNG")
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simsiam_tf.cli.pretrain",
            f"--model_dir={model_dir}",
            "--dataset=folder",
            f"--data_dir={tmp_path / 'data'}",
            "--width_multiplier=0.125",
            "--dim=32",
            "--pred_dim=16",
            "--image_size=16",
            "--batch_size=8",
            "--epochs=1",
            "--export=false",
            "--verbose=2",
            "--evaluate",
            "--probe_epochs=2",
            "--knn_k=3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["step"] == 2 and -1.0 <= metrics["loss"] <= 1.0, metrics
    assert 0.0 <= metrics["knn_top1"] <= 1.0  # evaluated on the test folder, its images resized from the originals


def test_crops_dataset_is_the_pipeline_stopped_after_the_crops(tmp_path):
    """One implementation: `make_pretrain_crops_dataset` yields `make_pretrain_dataset(photometric_on_host=False)`'s
    crops (from the files for a folder) and the photometric seeds the device stage takes."""
    from simsiam_tf.augment import device as device_augment

    folder = _mixed_folder(tmp_path / "mixed", "JPEG")
    sources = (data.load_source("folder", data_dir=str(folder)), data.load_source("synthetic", image_size=SIZE))
    for source in sources:
        aug = augment.TwoViewAugment(SIZE)
        with_seeds = list(data.make_pretrain_crops_dataset(source, 2, aug, seed=3, start_step=1).take(2))
        crops = list(
            data.make_pretrain_dataset(source, 2, aug, seed=3, start_step=1, photometric_on_host=False).take(2)
        )
        for ((c1, c2), seeds), (v1, v2) in zip(with_seeds, crops):
            assert c1.dtype == np.uint8 and c1.shape == (2, SIZE, SIZE, 3) and seeds.shape == (2, 2)
            np.testing.assert_array_equal(c1.numpy(), v1.numpy())
            np.testing.assert_array_equal(c2.numpy(), v2.numpy())
        views = device_augment.DeviceViews(aug)(with_seeds[0])
        assert all(v.shape == (2, SIZE, SIZE, 3) and 0.0 <= v.numpy().min() <= v.numpy().max() <= 1.0 for v in views)
        assert not np.array_equal(with_seeds[0][1].numpy(), with_seeds[1][1].numpy())  # seeds follow the step
