"""simsiam-embed: embeddings with file names, neighbours, duplicates, projector files, from a run or a SavedModel."""

import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_pretrain_run
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# (copy, original): exact byte copies, one in another class folder
COPIES = {"a/copy_of_a03.png": "a/a03.png", "b/copy_of_b07.png": "b/b07.png", "b/copy_of_a05.png": "a/a05.png"}


def write_folder_with_copies(root, per_class=10, seed=0):
    """Two class folders of distinct smooth random images (4x4 colour grids upsampled to 16 px) and COPIES."""
    rng = np.random.default_rng(seed)
    for name in ("a", "b"):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            grid = rng.integers(0, 256, [4, 4, 3], dtype=np.uint8)
            Image.fromarray(grid).resize((16, 16), Image.Resampling.BILINEAR).save(
                os.path.join(root, name, f"{name}{i:02d}.png")
            )
    for copy, original in COPIES.items():
        with open(os.path.join(root, original), "rb") as src, open(os.path.join(root, copy), "wb") as dst:
            dst.write(src.read())
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_pretrain_run(
        tmp_path_factory, run={"export": True}, write_flags=True, image_size=16, num_train_examples=64
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("copies"))
    return root, write_folder_with_copies(root)


@pytest.fixture(scope="module")
def cli_output(run_dir, folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("embed"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simsiam_tf.cli.embed",
            f"--init_from={run_dir}",
            "--dataset=folder",
            f"--data_dir={folder[0]}",
            f"--model_dir={out}",
            "--neighbours=3",
            "--duplicates=0.999",
            "--projector",
            "--batch_size=8",
            "--log_every_batches=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_embeddings_npz_holds_the_files_their_labels_and_vectors(cli_output, folder):
    from simsiam_tf.evaluation.embedding_files import load_embeddings

    out, stdout = cli_output
    root, files = folder
    saved = load_embeddings(os.path.join(out, "embeddings.npz"))
    assert saved["paths"].tolist() == files
    assert saved["class_names"].tolist() == ["a", "b"]
    assert saved["labels"].tolist() == [["a", "b"].index(f.split("/")[0]) for f in files]
    assert saved["embeddings"].dtype == np.float32 and saved["embeddings"].shape[0] == len(files)
    # not a terminal: one progress line per batch (23 images, batch 8: 3 batches)
    assert sum(line.startswith("embedded ") for line in stdout.splitlines()) == 3
    assert os.path.isfile(os.path.join(out, "flags.cfg")) and os.path.isfile(os.path.join(out, "metrics.json"))


def test_each_copy_finds_its_original_first_and_duplicates_are_exactly_the_copies(cli_output, folder):
    out, _ = cli_output
    with open(os.path.join(out, "neighbours.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(folder[1])
    first = {r["query_path"]: r for r in rows if r["rank"] == "1"}
    for copy, original in COPIES.items():
        assert first[copy]["neighbour_path"] == original and float(first[copy]["similarity"]) > 0.9999
        assert first[original]["neighbour_path"] == copy
    with open(os.path.join(out, "duplicates.csv")) as f:
        pairs = {frozenset((r["path_a"], r["path_b"])) for r in csv.DictReader(f)}
    assert pairs == {frozenset(p) for p in COPIES.items()}
    sheet = Image.open(os.path.join(out, "neighbours.png"))
    assert sheet.size[0] == 4 + 4 * (64 + 4)  # query + 3 neighbours, 64 px thumbnails


def test_projector_folder_holds_what_tensorboards_projector_reads(cli_output, folder):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import metadata, projector_config_pb2, projector_plugin

    out, _ = cli_output
    directory = os.path.join(out, "projector")
    config_path = os.path.join(directory, metadata.PROJECTOR_FILENAME)
    config = text_format.Parse(open(config_path).read(), projector_config_pb2.ProjectorConfig())
    (embedding,) = config.embeddings
    vectors = np.load(os.path.join(out, "embeddings.npz"))["embeddings"]
    tensor = projector_plugin._read_tensor_tsv_file(os.path.join(directory, embedding.tensor_path))
    np.testing.assert_allclose(tensor, vectors, rtol=1e-5, atol=1e-6)
    assert list(embedding.tensor_shape) == list(vectors.shape)
    with open(os.path.join(directory, embedding.metadata_path)) as f:
        lines = f.read().splitlines()
    assert lines[0] == "path\tlabel\tclass" and [line.split("\t")[0] for line in lines[1:]] == folder[1]
    side = list(embedding.sprite.single_image_dim)
    sprite = Image.open(os.path.join(directory, embedding.sprite.image_path))
    per_row = int(np.ceil(np.sqrt(len(folder[1]))))
    assert sprite.size == (per_row * side[0], per_row * side[1])
    # each path resolves inside the folder, as the plugin requires
    for path in (embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path):
        projector_plugin._rel_to_abs_asset_path(path, config_path)


def test_saved_model_gives_the_run_directorys_embeddings(run_dir, folder, cli_output, tmp_path):
    from simsiam_tf import config
    from simsiam_tf.runs import embed

    embed_config = config.EmbedConfig(
        runtime=config.RuntimeConfig(model_dir=str(tmp_path / "sm")),
        data=config.DataConfig(dataset="folder", data_dir=folder[0]),
        split="all",
        saved_model=os.path.join(run_dir, "export", "saved_model"),
    )
    metrics = embed.run(embed_config)
    from_saved = np.load(tmp_path / "sm" / "embeddings.npz")
    from_run = np.load(os.path.join(cli_output[0], "embeddings.npz"))
    assert metrics["num_images"] == len(folder[1])
    assert from_saved["paths"].tolist() == from_run["paths"].tolist()
    np.testing.assert_allclose(from_saved["embeddings"], from_run["embeddings"], rtol=1e-4, atol=1e-5)


def test_the_runs_own_data_is_its_eval_split_by_default(run_dir, tmp_path):
    from simsiam_tf import config
    from simsiam_tf.runs import embed

    data = embed.run_data_config(run_dir)
    assert data.dataset == "synthetic_scenes" and data.image_size == 16  # the tiny run's: the default set
    embed_config = config.EmbedConfig(
        runtime=config.RuntimeConfig(model_dir=str(tmp_path / "own")), data=data, init_from=run_dir, batch_size=500
    )
    metrics = embed.run(embed_config)
    saved = np.load(tmp_path / "own" / "embeddings.npz")
    assert metrics["split"] == "test" and saved["paths"][:2].tolist() == ["test/0", "test/1"]
    assert saved["labels"].min() >= 0 and len(saved["class_names"]) > 1


def test_progress_is_a_line_per_n_batches_off_a_terminal():
    from simsiam_tf.runs.embed import Progress

    stream = io.StringIO()
    progress = Progress(total=100, every=2, stream=stream)
    for done in range(10, 101, 10):
        progress.update(done)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("embedded 100/100 images (100%)")


def test_bad_encoder_choices_are_errors(tmp_path):
    from simsiam_tf import config

    with pytest.raises(ValueError, match="exactly one encoder"):
        config.EmbedConfig().validate()
    with pytest.raises(ValueError, match="exactly one encoder"):
        config.EmbedConfig(init_from="a", saved_model="b").validate()
    with pytest.raises(ValueError, match="own model_dir"):
        config.EmbedConfig(init_from=str(tmp_path), runtime=config.RuntimeConfig(model_dir=str(tmp_path))).validate()


def test_cli_errors_exit_with_one_line_and_the_documented_code(tmp_path):
    def embed_tool(*args):
        return subprocess.run(
            [sys.executable, "-m", "simsiam_tf.cli.embed", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    invalid = embed_tool("--init_from=/nonexistent/run", "--duplicates=2", "--dry_run")
    assert invalid.returncode == 2 and invalid.stderr.strip().splitlines()[-1].startswith("error: duplicates ")
    missing = embed_tool(f"--saved_model={tmp_path / 'none'}", f"--model_dir={tmp_path / 'out'}")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip().splitlines()[-1]
        == f"error: SavedModel directory {str(tmp_path / 'none')!r} does not exist"
    )
    assert not (tmp_path / "out").exists()
