"""Tile names, neighbour sampling, synthetic tiles and the triplet pipeline."""

import logging as py_logging
import os

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import config, data
from simsiam_tf.data import sources, tiles
from simsiam_tf.data.tiles import TileKey


def test_default_pattern_parses_grid_positions():
    keys = tiles.parse_tile_names(["slideA_x0_y0.png", "some/dir/slideA_x12_y3.JPG", b"slide_B_x2_y10.jpeg"])
    assert keys == [TileKey("slideA", 0, 0), TileKey("slideA", 12, 3), TileKey("slide_B", 2, 10)]
    assert tiles.DEFAULT_PATTERN == config.PretrainConfig().tile_pattern


def test_names_that_do_not_match_are_an_error_or_skipped_with_a_warning(caplog):
    names = ["a_x0_y0.png", "notes.png", "a_x1_y0.tif"]
    with pytest.raises(ValueError, match=r"2 file name\(s\) do not match .*notes\.png, a_x1_y0\.tif"):
        tiles.parse_tile_names(names)
    with caplog.at_level(py_logging.WARNING):
        keys = tiles.parse_tile_names(names, on_mismatch="skip")
    assert keys == [TileKey("a", 0, 0), None, None]
    assert any("do not match the tile pattern" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="lacks the named group"):
        tiles.parse_tile_names(names, pattern=r"(?P<group>.+)\.png")
    assert tiles.parse_tile_names(["s1-17.png"], pattern=r"(?P<group>s\d+)-\d+\.png", need_grid=False) == [
        TileKey("s1")
    ]


# Image "a": a 3 x 3 grid without its centre. Image "b": one tile, at a's missing centre
# (tiles of other images are never neighbours). Image "c": two tiles touching diagonally.
GRID = {
    "a00": TileKey("a", 0, 0),
    "a10": TileKey("a", 1, 0),
    "a20": TileKey("a", 2, 0),
    "a01": TileKey("a", 0, 1),
    "a21": TileKey("a", 2, 1),
    "a02": TileKey("a", 0, 2),
    "a12": TileKey("a", 1, 2),
    "a22": TileKey("a", 2, 2),
    "b11": TileKey("b", 1, 1),
    "c00": TileKey("c", 0, 0),
    "c11": TileKey("c", 1, 1),
    "none": None,
}
NAMES = list(GRID)


def neighbours_by_name(neighbourhood):
    found = tiles.find_neighbours(list(GRID.values()), neighbourhood)
    return found, {name: sorted(NAMES[j] for j in found.candidates(i)) for i, name in enumerate(NAMES)}


def test_four_neighbourhood_edges_missing_tiles_and_isolated_tiles():
    found, got = neighbours_by_name("4")
    assert got["a00"] == ["a01", "a10"]
    assert got["a10"] == ["a00", "a20"]  # the centre below is missing; b11 is another image
    assert got["a21"] == ["a20", "a22"]
    assert got["b11"] == ["b11"] and got["c00"] == ["c00"] and got["c11"] == ["c11"]
    assert got["none"] == ["none"]
    assert found.num_isolated == 4


def test_eight_neighbourhood_adds_diagonals():
    found, got = neighbours_by_name("8")
    assert got["a00"] == ["a01", "a10"]
    assert got["a10"] == ["a00", "a01", "a20", "a21"]
    assert got["c00"] == ["c11"] and got["c11"] == ["c00"]
    assert got["b11"] == ["b11"]
    assert found.num_isolated == 2


def test_group_neighbourhood_is_any_other_tile_of_the_same_image():
    found, got = neighbours_by_name("group")
    assert got["a00"] == sorted(n for n in NAMES if n.startswith("a") and n != "a00")
    assert got["c00"] == ["c11"]
    assert got["b11"] == ["b11"] and got["none"] == ["none"]
    assert found.num_isolated == 2


def test_two_files_at_one_grid_position_are_an_error():
    with pytest.raises(ValueError, match="both tile x=1, y=0 of 'a'"):
        tiles.find_neighbours([TileKey("a", 1, 0), TileKey("a", 0, 0), TileKey("a", 1, 0)], "4")


class IdentityAugment:
    """Keeps pixels as they are, so a batch shows which tiles it was made of."""

    def __call__(self, images, seed):
        return self.view(images, seed), self.view(images, seed)

    def view(self, images, seed):
        return tf.cast(images, tf.float32)


class SeedAugment(IdentityAugment):
    """Adds a number drawn from the view's seed to each image: views show their seeds."""

    def __call__(self, images, seed):
        first, second = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        return self.view(images, first), self.view(images, second)

    def view(self, images, seed):
        return tf.cast(images, tf.float32) + tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed)


def indexed_tile_set(keys, neighbourhood):
    # Tile i is filled with the value i.
    images = np.broadcast_to(np.arange(len(keys), dtype=np.uint8)[:, None, None, None], (len(keys), 4, 4, 3)).copy()
    source = sources.records_source(
        (images, np.zeros(len(keys), np.int64)), None, 1, tuple(images.shape[1:]), ("x",), "indexed"
    )
    return tiles.TileSet(source, tuple(keys), tiles.find_neighbours(keys, neighbourhood))


@pytest.mark.parametrize("neighbourhood", ["4", "group"])
def test_triplet_pipeline_draws_every_candidate_and_nothing_else(neighbourhood):
    keys = list(GRID.values())
    tile_set = indexed_tile_set(keys, neighbourhood)
    stream = tiles.make_triplet_dataset(tile_set, 4, IdentityAugment(), seed=3)
    seen = {i: set() for i in range(len(keys))}
    anchors_of_epoch = []
    for step, (v1, v2, v3) in enumerate(stream.take(150)):
        anchors = v1.numpy()[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(v2.numpy()[:, 0, 0, 0], anchors)
        if step < 3:  # 12 tiles, 4 per step: one epoch shows each tile once
            anchors_of_epoch.extend(anchors)
        for a, b in zip(anchors, v3.numpy()[:, 0, 0, 0].astype(int)):
            seen[a].add(b)
    assert sorted(anchors_of_epoch) == list(range(len(keys)))
    for i in range(len(keys)):
        assert seen[i] == set(tile_set.neighbours.candidates(i)), NAMES[i]


def test_triplet_pipeline_resumes_at_any_step_and_splits_over_replicas():
    tile_set = tiles.load_tile_set("synthetic_tiles", image_size=8, num_examples=40, tiles_per_side=2)
    aug = SeedAugment()
    late = next(iter(tiles.make_triplet_dataset(tile_set, 8, aug, seed=1, start_step=6)))
    full = list(tiles.make_triplet_dataset(tile_set, 8, aug, seed=1).skip(6).take(1))[0]
    for a, b in zip(late, full):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other_step = list(tiles.make_triplet_dataset(tile_set, 8, aug, seed=1).skip(7).take(1))[0]
    assert not np.array_equal(other_step[0].numpy() % 1, full[0].numpy() % 1)

    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    per_replica = list(tiles.make_triplet_dataset(tile_set, 8, aug, seed=1, input_context=context).take(2))
    assert [tuple(v.shape) for v in per_replica[0]] == [(4, 8, 8, 3)] * 3
    with pytest.raises(ValueError, match="larger than the dataset"):
        tiles.make_triplet_dataset(tile_set, 64, aug)


def test_synthetic_tiles_share_the_class_of_their_whole_image():
    images, labels, groups, cols, rows = tiles.make_synthetic_tiles(7, tiles_per_side=3, tile_size=12, seed=5)
    assert images.shape == (63, 12, 12, 3) and images.dtype == np.uint8
    for g in np.unique(groups):
        members = groups == g
        assert members.sum() == 9 and len(set(labels[members])) == 1
        assert sorted(zip(cols[members], rows[members])) == [(c, r) for c in range(3) for r in range(3)]
    assert len(set(labels)) == 7  # 7 images, 10 classes: balanced means all different
    # Tiles of one image are different pictures of the class, not copies.
    assert len({images[k].tobytes() for k in range(9)}) == 9
    again = tiles.make_synthetic_tiles(7, tiles_per_side=3, tile_size=12, seed=5)
    np.testing.assert_array_equal(again[0], images)


def test_synthetic_tile_set_splits_sizes_and_neighbour_labels():
    train = tiles.load_tile_set("synthetic_tiles", "train", image_size=8, num_examples=50, tiles_per_side=4)
    test = tiles.load_tile_set("synthetic_tiles", "test", image_size=8, num_examples=20, tiles_per_side=4)
    assert train.source.num_examples == 50 and train.source.num_classes == len(data.SYNTHETIC_PATTERNS)
    labels = train.source.records[1].numpy()
    for i in range(50):
        assert all(labels[j] == labels[i] for j in train.neighbours.candidates(i))
    # 50 = 3 whole images of 16 and 2 tiles of a fourth, which still neighbour each other.
    assert train.neighbours.num_isolated == 0
    assert not np.array_equal(train.source.records[0].numpy()[:20], test.source.records[0].numpy())
    with pytest.raises(ValueError, match="splits"):
        tiles.load_tile_set("synthetic_tiles", "validation", image_size=8, num_examples=20)


def write_png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((6, 6, 3), value, np.uint8)
    path.write_bytes(tf.io.encode_png(image).numpy())


def test_tile_folder_with_class_sub_folders(tmp_path, caplog):
    names = {
        "tumour/s1_x0_y0.png": 10,
        "tumour/s1_x1_y0.png": 20,
        "tumour/s1_x0_y1.png": 30,
        "normal/s2_x4_y4.png": 40,
        "normal/s2_x5_y4.png": 50,
        "normal/s3_x0_y0.png": 60,
    }
    for name, value in names.items():
        write_png(tmp_path / name, value)
    tile_set = tiles.load_tile_set("folder", data_dir=str(tmp_path), image_size=6)
    assert tile_set.source.class_names == ("normal", "tumour")
    paths = [os.path.basename(p.decode()) for p in tile_set.source.records[0].numpy()]
    got = {paths[i]: sorted(paths[j] for j in tile_set.neighbours.candidates(i)) for i in range(len(paths))}
    assert got["s1_x0_y0.png"] == ["s1_x0_y1.png", "s1_x1_y0.png"]
    assert got["s1_x1_y0.png"] == ["s1_x0_y0.png"]
    assert got["s2_x4_y4.png"] == ["s2_x5_y4.png"]
    assert got["s3_x0_y0.png"] == ["s3_x0_y0.png"]
    assert tile_set.neighbours.num_isolated == 1

    batches = tiles.make_triplet_dataset(tile_set, 2, IdentityAugment(), seed=0)
    pairs = set()
    for v1, _, v3 in batches.take(30):
        pairs.update(zip(v1.numpy()[:, 0, 0, 0].astype(int), v3.numpy()[:, 0, 0, 0].astype(int)))
    assert pairs == {(10, 20), (10, 30), (20, 10), (30, 10), (40, 50), (50, 40), (60, 60)}

    write_png(tmp_path / "normal" / "overview.png", 70)
    with pytest.raises(ValueError, match="overview.png"):
        tiles.load_tile_set("folder", data_dir=str(tmp_path), image_size=6)
    skipped = tiles.load_tile_set("folder", data_dir=str(tmp_path), image_size=6, on_mismatch="skip")
    assert skipped.source.num_examples == 7 and skipped.neighbours.num_isolated == 2


def test_synthetic_tiles_take_the_folder_options_and_refuse_a_misspelt_one():
    tile_set = tiles.load_tile_set("synthetic_tiles", image_size=8, num_examples=8, tiles_per_side=2, on_corrupt="skip")
    assert tile_set.source.num_examples == 8
    with pytest.raises(TypeError, match="imag_size"):
        tiles.load_tile_set("synthetic_tiles", imag_size=8, num_examples=8)
