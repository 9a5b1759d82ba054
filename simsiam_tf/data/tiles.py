"""Tiles of whole images, their neighbours, and the triplet pipeline of SimTriplet.

SimTriplet (Liu et al., MICCAI 2021) adds a third view to SimSiam's two: an augmented
view of a *neighbouring* sample, i.e. an adjacent tile of the same whole image (4- or
8-neighbourhood on the tile grid) or, with `neighbourhood="group"`, any other sample
with the same group key.

Tile folders are image folders (`sources.load_source("folder")`, class sub-folders for
labelled evaluation) whose file names carry the grid position, by default
`<image>_x<col>_y<row>.png` (see `config.TILE_PATTERN`: named groups `group`, `col`,
`row`; `neighbourhood="group"` needs only `group`). The embedded `synthetic_tiles`
set cuts synthetic whole images into grids of tiles.

A tile without a neighbour (a single-tile image, an isolated tile, a file name that
does not match the pattern under `on_mismatch="skip"`) takes itself as neighbour: its
third view is one more augmentation of the same tile. How many do is logged.
"""

import collections
import dataclasses
import math
import os
import re
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import config as config_lib
from simsiam_tf.data import sources, synthetic
from simsiam_tf.data.pipeline import fold_in, layout

AUTOTUNE = tf.data.AUTOTUNE
SYNTHETIC_TILES = "synthetic_tiles"
DEFAULT_PATTERN = config_lib.TILE_PATTERN
NEIGHBOURHOODS = config_lib.NEIGHBOURHOODS
# Tiles (not whole images) per split of `synthetic_tiles`, and the seed stream of each split.
SYNTHETIC_TILE_SPLITS = {"train": (10, 5000), "test": (11, 1000)}

_OFFSETS = {
    "4": ((1, 0), (-1, 0), (0, 1), (0, -1)),
    "8": ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)),
}


@dataclasses.dataclass(frozen=True)
class TileKey:
    """Where a tile lies: its whole image (`group`) and grid position (None in group mode)."""

    group: str
    col: Optional[int] = None
    row: Optional[int] = None


def parse_tile_names(names, pattern=DEFAULT_PATTERN, on_mismatch="error", need_grid=True):
    """`TileKey` of each file name (directories are ignored), None for a skipped name.

    The pattern must match the whole base name (case-insensitively, so `.PNG` counts as
    `.png`). `need_grid`: the pattern must have `col` and `row` groups. `on_mismatch`:
    "error" raises a ValueError naming the files that do not match; "skip" logs a
    warning and gives them no key (so no neighbours).
    """
    if on_mismatch not in ("error", "skip"):
        raise ValueError(f"on_mismatch must be 'error' or 'skip', got {on_mismatch!r}")
    compiled = re.compile(pattern, re.IGNORECASE)
    needed = ("group", "col", "row") if need_grid else ("group",)
    missing = [g for g in needed if g not in compiled.groupindex]
    if missing:
        raise ValueError(f"tile pattern {pattern!r} lacks the named group(s) {', '.join(missing)}")
    keys, unmatched = [], []
    for name in names:
        base = os.path.basename(name.decode() if isinstance(name, bytes) else str(name))
        match = compiled.fullmatch(base)
        if match is None:
            keys.append(None)
            unmatched.append(base)
            continue
        if need_grid:
            keys.append(TileKey(match.group("group"), int(match.group("col")), int(match.group("row"))))
        else:
            keys.append(TileKey(match.group("group")))
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        if on_mismatch == "error":
            raise ValueError(
                f"{len(unmatched)} file name(s) do not match the tile pattern {pattern!r}: {shown}. Rename them "
                "(e.g. slide7_x3_y12.png), pass a tile_pattern that matches, or on_mismatch='skip' to use them "
                "without neighbours"
            )
        logging.warning(
            "%d file name(s) do not match the tile pattern %r (%s); they are used without neighbours",
            len(unmatched),
            pattern,
            shown,
        )
    return keys


@dataclasses.dataclass(frozen=True, eq=False)
class Neighbours:
    """Each sample's neighbour candidates, compactly.

    Sample i draws uniformly from `index[start[i] : start[i] + count[i]]` leaving out
    the entry at offset `exclude[i]` of that slice (-1: nothing left out). Grid
    neighbourhoods store a list per tile; group mode points every member of a group at
    the group's block and leaves the member itself out, so memory stays linear in the
    number of samples. A sample left with no candidate is its own neighbour.
    """

    index: np.ndarray
    start: np.ndarray
    count: np.ndarray
    exclude: np.ndarray
    num_isolated: int

    def candidates(self, i):
        """The neighbours sample `i` can draw, as a sorted array ([i] when it has none)."""
        block = self.index[self.start[i] : self.start[i] + self.count[i]]
        if self.exclude[i] >= 0:
            block = np.delete(block, self.exclude[i])
        return np.sort(block) if len(block) else np.array([i], np.int64)


def find_neighbours(keys, neighbourhood="4"):
    """`Neighbours` of samples with `TileKey`s (None: a sample without a key, hence none).

    neighbourhood: "4" (left, right, up, down), "8" (and the diagonals) on the tile grid
    of each group; or "group" (every other sample of the same group). Tiles at image
    edges simply have fewer neighbours; missing tiles are not neighbours. Two samples
    with the same grid position in the same group are an error.
    """
    config_lib.check_choice("neighbourhood", neighbourhood, NEIGHBOURHOODS)
    n = len(keys)
    start = np.zeros(n, np.int64)
    count = np.zeros(n, np.int64)
    exclude = np.full(n, -1, np.int64)
    if neighbourhood == "group":
        members = collections.defaultdict(list)
        for i, key in enumerate(keys):
            if key is not None:
                members[key.group].append(i)
        index = []
        for group_members in members.values():
            first = len(index)
            index.extend(group_members)
            for position, i in enumerate(group_members):
                start[i], count[i], exclude[i] = first, len(group_members), position
        index = np.asarray(index, np.int64)
        has_neighbour = count > 1
    else:
        where = {}
        for i, key in enumerate(keys):
            if key is None:
                continue
            if key.col is None or key.row is None:
                raise ValueError(f"neighbourhood={neighbourhood} needs grid positions, but sample {i} has none")
            cell = (key.group, key.col, key.row)
            if cell in where:
                raise ValueError(
                    f"samples {where[cell]} and {i} are both tile x={key.col}, y={key.row} of {key.group!r}: "
                    "every grid position of an image must be one file"
                )
            where[cell] = i
        lists = []
        for key in keys:
            found = []
            if key is not None:
                for dc, dr in _OFFSETS[neighbourhood]:
                    j = where.get((key.group, key.col + dc, key.row + dr))
                    if j is not None:
                        found.append(j)
            lists.append(found)
        count = np.asarray([len(found) for found in lists], np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64) if n else start
        index = np.asarray([j for found in lists for j in found], np.int64)
        has_neighbour = count > 0
    # A sample without candidates gets a one-entry slice holding itself.
    isolated = np.flatnonzero(~has_neighbour)
    if len(isolated):
        start[isolated] = len(index) + np.arange(len(isolated))
        count[isolated] = 1
        exclude[isolated] = -1
        index = np.concatenate([index, isolated]).astype(np.int64)
    return Neighbours(index=index, start=start, count=count, exclude=exclude, num_isolated=int(len(isolated)))


@dataclasses.dataclass(frozen=True, eq=False)
class TileSet:
    """A random-access `sources.Source` of tiles with each tile's key and neighbours."""

    source: sources.Source
    keys: Tuple[Optional[TileKey], ...]
    neighbours: Neighbours


# --------------------------------------------------------------------------- synthetic tiles


def make_synthetic_tiles(num_images, tiles_per_side=4, tile_size=32, num_classes=10, seed=0):
    """Whole synthetic images cut into `tiles_per_side` x `tiles_per_side` tiles.

    A whole image has a class (balanced over images), and every tile of it shows that
    class's pattern: a synthetic image of `synthetic.make_synthetic` of the class, so each
    tile has its own period, phase, tilt, polarity, colours and noise. Neighbouring tiles
    therefore share what the class is and nothing else, the way adjacent tiles of one
    tissue region share its tissue type but not its exact appearance.

    Returns `(images uint8 [N, S, S, 3], labels int64 [N], groups [N] str, cols [N],
    rows [N])` with N = num_images * tiles_per_side**2, tiles in row-major order per
    image; group names are `img<k>`.
    """
    if num_images < 1 or tiles_per_side < 1:
        raise ValueError(f"num_images and tiles_per_side must be positive, got {num_images} and {tiles_per_side}")
    rng = np.random.default_rng(seed)
    per_image = tiles_per_side * tiles_per_side
    image_labels = rng.permutation(np.arange(num_images) % num_classes)
    per_class = int(math.ceil(num_images / num_classes)) * per_image
    # make_synthetic balances classes exactly when its size is a multiple of num_classes.
    pool, pool_labels = synthetic.make_synthetic(
        per_class * num_classes, image_size=tile_size, num_classes=num_classes, seed=rng.integers(2**31)
    )
    by_class = [np.flatnonzero(pool_labels == c) for c in range(num_classes)]
    needed = np.bincount(image_labels, minlength=num_classes) * per_image
    if any(len(members) < need for members, need in zip(by_class, needed)):
        raise RuntimeError("make_synthetic did not balance its classes; synthetic tiles rely on it")
    used = np.zeros(num_classes, np.int64)
    order = np.empty(num_images * per_image, np.int64)
    for k, c in enumerate(image_labels):
        order[k * per_image : (k + 1) * per_image] = by_class[c][used[c] : used[c] + per_image]
        used[c] += per_image
    images, labels = pool[order], pool_labels[order]
    tile = np.arange(num_images * per_image)
    groups = np.asarray([f"img{k}" for k in tile // per_image])
    cols = tile % per_image % tiles_per_side
    rows = tile % per_image // tiles_per_side
    return images, labels, groups, cols, rows


def _synthetic_tile_set(
    split,
    tiles_per_side,
    neighbourhood,
    image_size=32,
    seed=0,
    num_examples=None,
    data_dir=None,
    on_corrupt=None,
    label_splits=None,
    max_image_pixels=None,
):
    # The folder options are taken and left unused, as load_source's synthetic set does: generated tiles
    # read no files. Named, so that a misspelt option is still a TypeError.
    del data_dir, on_corrupt, label_splits, max_image_pixels
    if split not in SYNTHETIC_TILE_SPLITS:
        raise ValueError(f"{SYNTHETIC_TILES} has splits {sorted(SYNTHETIC_TILE_SPLITS)}, got split={split!r}")
    stream, default_size = SYNTHETIC_TILE_SPLITS[split]
    n = default_size if num_examples is None else int(num_examples)
    num_images = int(math.ceil(n / tiles_per_side**2))
    images, labels, groups, cols, rows = make_synthetic_tiles(
        num_images,
        tiles_per_side,
        image_size,
        num_classes=len(synthetic.SYNTHETIC_PATTERNS),
        seed=np.random.SeedSequence([seed, stream]),
    )
    # The last whole image may be cut short: its missing tiles are simply not neighbours.
    images, labels = images[:n], labels[:n]
    keys = tuple(TileKey(str(g), int(c), int(r)) for g, c, r in zip(groups[:n], cols[:n], rows[:n]))
    source = sources.records_source(
        (images, labels),
        None,
        len(synthetic.SYNTHETIC_PATTERNS),
        tuple(int(d) for d in images.shape[1:]),
        synthetic.SYNTHETIC_PATTERNS,
        SYNTHETIC_TILES,
    )
    return TileSet(source, keys, find_neighbours(keys, neighbourhood))


def load_tile_set(
    name,
    split="train",
    pattern=DEFAULT_PATTERN,
    neighbourhood="4",
    on_mismatch="error",
    tiles_per_side=4,
    **source_options,
):
    """A `TileSet`: "synthetic_tiles", or "folder" with tile file names under `data_dir`.

    `source_options` are `sources.load_source`'s (`data_dir`, `image_size`, `seed`,
    `num_examples`; for folders `on_corrupt`, `label_splits`, `max_image_pixels`).
    synthetic_tiles: `num_examples` tiles (default 5000 train, 1000 test) from whole
        images of `tiles_per_side` x `tiles_per_side` tiles of `image_size` pixels (default 32).
    folder: as `sources.load_source("folder", ...)`: class sub-folders give labels,
        numbered over `split` and `label_splits` by name; each file's base name must match
        `pattern` (see `parse_tile_names`).
    """
    if name == SYNTHETIC_TILES:
        tile_set = _synthetic_tile_set(split, tiles_per_side, neighbourhood, **source_options)
    elif name == "folder":
        source = sources.load_source("folder", split, **source_options)
        paths = source.records[0].numpy()
        keys = tuple(parse_tile_names(paths, pattern, on_mismatch, need_grid=neighbourhood != "group"))
        tile_set = TileSet(source, keys, find_neighbours(keys, neighbourhood))
    else:
        raise ValueError(
            f"tiles come from {SYNTHETIC_TILES!r} or 'folder' (file names with grid positions), got dataset {name!r}"
        )
    isolated = tile_set.neighbours.num_isolated
    if isolated:
        logging.warning(
            "%d of %d tiles (%s, split %s) have no neighbour (%s-neighbourhood); their third view is another "
            "augmentation of the tile itself",
            isolated,
            tile_set.source.num_examples,
            name,
            split,
            neighbourhood,
        )
    return tile_set


# --------------------------------------------------------------------------- triplet pipeline


def make_triplet_dataset(tile_set, global_batch_size, augment, seed=0, start_step=0, input_context=None):
    """Infinite stream of SimTriplet batches `(view1, view2, view3)`, each float32 `[b, S, S, 3]`.

    Views 1 and 2 are `augment(anchors)` (the two-view augmentation); view 3 is
    `augment.view(neighbours)`, one augmented view of a neighbour drawn uniformly from
    each anchor's candidates. Anchors are reshuffled every epoch (drop-remainder epochs
    of `num_examples // global_batch_size` steps); everything is deterministic in
    (seed, step), so a stream started at `start_step` repeats those steps of a stream
    started at 0. With `input_context` each input pipeline yields its replicas' slices
    of the global batch.
    """
    source, neighbours = tile_set.source, tile_set.neighbours
    if not source.random_access or source.image_shape is None:
        raise ValueError(f"the triplet pipeline needs an indexable source of same-size images, got {source.name!r}")
    if start_step < 0:
        raise ValueError(f"start_step must be non-negative, got {start_step}")
    batch, replicas_here, first_replica = layout(global_batch_size, input_context)
    n = source.num_examples
    steps_per_epoch = n // global_batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the global batch ({global_batch_size}) is larger than the dataset ({n} tiles)")
    base = tf.constant([seed, 0], tf.int64)
    order_seed, step_seed = fold_in(base, 11), fold_in(base, 12)
    index = tf.constant(neighbours.index, tf.int64)
    start = tf.constant(neighbours.start, tf.int64)
    count = tf.constant(neighbours.count, tf.int64)
    exclude = tf.constant(neighbours.exclude, tf.int64)

    def indices(chunk):
        step = chunk // replicas_here
        replica = first_replica + chunk % replicas_here
        epoch = step // steps_per_epoch
        positions = (step % steps_per_epoch) * global_batch_size + replica * batch + tf.range(batch, dtype=tf.int64)
        anchors = tf.random.experimental.index_shuffle(positions, fold_in(order_seed, epoch), n - 1)
        chunk_seed = fold_in(fold_in(step_seed, step), replica)
        pick_seed, view_seed = tf.unstack(tf.random.experimental.stateless_split(chunk_seed, 2))
        excluded = tf.gather(exclude, anchors)
        available = tf.gather(count, anchors) - tf.cast(excluded >= 0, tf.int64)
        draw = tf.random.stateless_uniform([batch], pick_seed, minval=None, maxval=None, dtype=tf.int64)
        offset = tf.math.floormod(draw, tf.maximum(available, 1))
        offset += tf.cast(tf.logical_and(excluded >= 0, offset >= excluded), tf.int64)
        neighbour = tf.gather(index, tf.gather(start, anchors) + offset)
        return view_seed, anchors, neighbour

    chunks = sources.map_ordered(tf.data.Dataset.counter(start_step * replicas_here), indices, parallel=False)
    records = source.records
    if source.decode is None:
        images = records[0]
        batches = sources.map_ordered(chunks, lambda s, a, b: (s, tf.gather(images, a), tf.gather(images, b)))
    else:
        decode = source.decode

        def read(i):
            return decode(*[tf.gather(r, i) for r in records])[0]

        # Files are decoded one by one (in parallel), anchors first, then their neighbours.
        elements = chunks.flat_map(
            lambda s, a, b: tf.data.Dataset.from_tensor_slices((tf.tile(s[None], [2 * batch, 1]), tf.concat([a, b], 0)))
        )
        elements = sources.map_ordered(elements, lambda s, i: (s, read(i)))
        batches = sources.map_ordered(
            elements.batch(2 * batch, drop_remainder=True), lambda s, x: (s[0], x[:batch], x[batch:])
        )

    def views(view_seed, anchors, neighbours_):
        pair_seed, third_seed = tf.unstack(tf.random.experimental.stateless_split(view_seed, 2))
        view1, view2 = augment(anchors, pair_seed)
        return view1, view2, augment.view(neighbours_, third_seed)

    return sources.map_ordered(batches, views).prefetch(AUTOTUNE)
